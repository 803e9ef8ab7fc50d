package main

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// jobManifest is the sharded replay Job that deploy/kubernetes ships, with
// the Services of the same file (deploy/manifest_test.go decodes it strictly
// into the Kubernetes API types and checks its wiring; this test runs it).
const jobManifest = "../../deploy/kubernetes/replay-job.yaml"

// k8sDoc is the part of a manifest document that running the Job's pods
// needs.
type k8sDoc struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Ports []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"ports"` // Service
		CompletionMode string `json:"completionMode"` // Job
		Completions    *int   `json:"completions"`
		Parallelism    *int   `json:"parallelism"`
		Template       struct {
			Spec struct {
				Containers []k8sContainer `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type k8sContainer struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom any    `json:"valueFrom"`
	} `json:"env"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

// readK8sDocs reads the documents of a manifest file.
func readK8sDocs(t *testing.T, file string) []k8sDoc {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []k8sDoc
	for _, part := range strings.Split("\n"+string(b), "\n---\n") {
		var d k8sDoc
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if d.Kind != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

// k8sExpand expands $(VAR) references the way Kubernetes does in a
// container's command, args and env values: a defined variable is replaced,
// an undefined one is left as written, $$ is a literal $, and a $ before any
// other character stays as it is.
func k8sExpand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func TestK8sExpand(t *testing.T) {
	env := map[string]string{"A": "1", "JOB_COMPLETION_INDEX": "3", "EMPTY": ""}
	for in, want := range map[string]string{
		"$(JOB_COMPLETION_INDEX)/4": "3/4",
		"x$(A)y$(A)":                "x1y1",
		"$(UNDEFINED)":              "$(UNDEFINED)",
		"$$(A)":                     "$(A)",
		"$(EMPTY)z":                 "z",
		"a$b":                       "a$b",
		"$(A":                       "$(A",
		"end$":                      "end$",
	} {
		if got := k8sExpand(in, env); got != want {
			t.Errorf("k8sExpand(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPrivilegedKubernetesJob runs the Job of deploy/kubernetes/replay-job.yaml
// as Kubernetes would run its N pods, without a cluster: N tcopy-tun
// processes at once, each with the container's args, its environment plus
// JOB_COMPLETION_INDEX=i and the variables of the file's Services, $(VAR)
// expanded as Kubernetes does, and the volume's mount path standing for a
// directory of the test. The pods' network is one namespace, the Service is
// a real nginx in another (the Service's address is the server's: no proxy
// in between). Every captured session must reach nginx exactly once, over
// all the shards together, and each shard must have replayed some.
func TestPrivilegedKubernetesJob(t *testing.T) {
	requireReal(t, toolGo, toolNginx)
	docs := readK8sDocs(t, jobManifest)
	var job *k8sDoc
	services := map[string]string{} // the pods' Service variables
	servicePort := 0
	for i := range docs {
		d := &docs[i]
		switch d.Kind {
		case "Job":
			job = d
		case "Service":
			// Every Service of the file stands for the nginx below.
			p := strings.ToUpper(strings.ReplaceAll(d.Metadata.Name, "-", "_"))
			services[p+"_SERVICE_HOST"] = realServerIP
			for j, sp := range d.Spec.Ports {
				if j == 0 {
					services[p+"_SERVICE_PORT"] = strconv.Itoa(sp.Port)
					servicePort = sp.Port
				}
				if sp.Name != "" {
					services[p+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(sp.Name, "-", "_"))] = strconv.Itoa(sp.Port)
				}
			}
		}
	}
	if job == nil || job.Spec.CompletionMode != "Indexed" || job.Spec.Completions == nil {
		t.Fatalf("%s: no Indexed Job with completions", jobManifest)
	}
	if servicePort != nginxPort {
		t.Fatalf("%s: the Service's port is %d; this test serves it with nginx on %d", jobManifest, servicePort, nginxPort)
	}
	n := *job.Spec.Completions
	if job.Spec.Parallelism == nil || *job.Spec.Parallelism != n {
		t.Fatalf("%s: parallelism is not completions (%d): the shards would not run at once", jobManifest, n)
	}
	if len(job.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want the one tcopy-tun container", jobManifest, len(job.Spec.Template.Spec.Containers))
	}
	c := job.Spec.Template.Spec.Containers[0]
	if len(c.Command) > 0 {
		t.Fatalf("%s: the container sets command %q: the image's entrypoint is tcopy-tun, and only args are expected", jobManifest, c.Command)
	}

	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	// Volumes: each mount path stands for a directory of the test.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(e.dir, "volume-"+m.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mounts[strings.TrimSuffix(m.MountPath, "/")] = dir
	}
	local := func(arg string) string {
		for mp, dir := range mounts {
			if rest, ok := strings.CutPrefix(arg, mp+"/"); ok {
				return filepath.Join(dir, rest)
			}
		}
		return arg
	}

	// Pod i's environment and args, as the kubelet makes them.
	podArgs := make([][]string, n)
	podEnv := make([][]string, n)
	for i := 0; i < n; i++ {
		env := map[string]string{}
		for k, v := range services {
			env[k] = v
		}
		for _, ev := range c.Env {
			if ev.ValueFrom != nil {
				t.Fatalf("%s: env %s comes from valueFrom, which this test cannot provide", jobManifest, ev.Name)
			}
			env[ev.Name] = k8sExpand(ev.Value, env)
		}
		// The Job controller adds it to the container's environment.
		env["JOB_COMPLETION_INDEX"] = strconv.Itoa(i)
		for _, a := range c.Args {
			x := k8sExpand(a, env)
			if strings.Contains(x, "$(") {
				t.Fatalf("%s: arg %q: %q has a variable Kubernetes would not set", jobManifest, a, x)
			}
			podArgs[i] = append(podArgs[i], local(x))
		}
		for k, v := range env {
			podEnv[i] = append(podEnv[i], k+"="+v)
		}
		slices.Sort(podEnv[i])
	}

	// The capture, where --pcap says: sessions from many clients, each
	// asking for its own URI, so that nginx's access log tells which
	// sessions reached it and how often.
	pcap := ""
	for j, a := range podArgs[0] {
		if a == "--pcap" && j+1 < len(podArgs[0]) {
			pcap = podArgs[0][j+1]
		} else if v, ok := strings.CutPrefix(a, "--pcap="); ok {
			pcap = v
		}
	}
	if pcap == "" || !strings.HasPrefix(pcap, e.dir) {
		t.Fatalf("%s: --pcap %q is not on one of the Job's volumes %v", jobManifest, pcap, mounts)
	}
	const sessions = 48
	var ss []e2eSession
	want := map[string]string{} // URI → captured client
	for k := 0; k < sessions; k++ {
		uri := fmt.Sprintf("/f1.txt?session=%d", k)
		client := fmt.Sprintf("10.2.%d.%d:%d", k/200, 10+k%200, 40000+k)
		want[uri] = client
		ss = append(ss, e2eSession{
			Client:   client,
			Server:   "10.1.0.1:8080",
			Start:    time.Duration(k) * 10 * time.Millisecond,
			Requests: []replaytest.DemoRequest{{Method: "GET", Path: uri, Close: true}},
		})
	}
	if err := os.WriteFile(pcap, e2eCapture(t, ss), 0o644); err != nil {
		t.Fatal(err)
	}

	srv := nginxServer{}.start(t, e, "job").(*nginxInstance)
	procs := make([]*realProc, n)
	for i := 0; i < n; i++ {
		procs[i] = startProcEnv(t, e.cli, fmt.Sprintf("tcopy-tun shard %d/%d", i, n), podEnv[i], append([]string{bin}, podArgs[i]...)...)
	}
	for i, p := range procs {
		if err := p.wait(t, realReplayTimeout); err != nil {
			t.Errorf("pod %d (%q): %v\n%s", i, podArgs[i], err, p.out.String())
		}
	}
	if err := srv.proc.stop(t, syscall.SIGQUIT); err != nil {
		t.Fatalf("nginx: %v", err)
	}

	// At the target: every session's request exactly once, answered 200.
	got := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, srv.log)), "\n") {
		f := strings.Fields(l) // $connection $connection_requests $request_method "$request_uri" $status $request_length
		if len(f) != 6 {
			t.Fatalf("nginx access log: bad line %q", l)
		}
		uri := strings.Trim(f[3], `"`)
		got[uri]++
		if f[4] != "200" {
			t.Errorf("nginx answered %s to %s", f[4], uri)
		}
	}
	for uri := range want {
		if got[uri] != 1 {
			t.Errorf("%s (captured client %s) reached nginx %d times, want once", uri, want[uri], got[uri])
		}
	}
	for uri, k := range got {
		if _, ok := want[uri]; !ok {
			t.Errorf("nginx logged %d requests for %s, which the capture does not have", k, uri)
		}
	}

	// In the shards' reports: the same split, each session in one shard,
	// and every shard did some of the work.
	byClient := map[string][]int{}
	for i := 0; i < n; i++ {
		report := ""
		for j, a := range podArgs[i] {
			if a == "--report" && j+1 < len(podArgs[i]) {
				report = podArgs[i][j+1]
			}
		}
		if report == "" {
			t.Fatalf("pod %d: no --report in %q", i, podArgs[i])
		}
		r := readReport(t, report)
		replayed := 0
		for _, row := range r.Sessions {
			if row.Outcome == "ok" {
				byClient[row.CapturedClient] = append(byClient[row.CapturedClient], i)
				replayed++
			}
		}
		t.Logf("pod %d: --shard %d/%d replayed %d of %d sessions (summary: planned %d, replayed %d, succeeded %d)",
			i, i, n, replayed, sessions, r.Summary.Planned, r.Summary.Replayed, r.Summary.Succeeded)
		if replayed == 0 || r.Summary.Succeeded != replayed || r.Summary.FailedN != 0 {
			t.Errorf("pod %d: %d sessions ok, summary succeeded %d failed %d: want some, all ok", i, replayed, r.Summary.Succeeded, r.Summary.FailedN)
		}
	}
	for uri, client := range want {
		if len(byClient[client]) != 1 {
			t.Errorf("session of %s (%s) replayed ok by shards %v, want exactly one", client, uri, byClient[client])
		}
	}
}

// sidecarManifest holds the test pod with the tcopy-tun sidecar.
const sidecarManifest = "../../deploy/kubernetes/test-pod.yaml"

// k8sPod is the part of a Pod document the sidecar test needs.
type k8sPod struct {
	Kind string `json:"kind"`
	Spec struct {
		Containers []k8sPodContainer `json:"containers"`
	} `json:"spec"`
}

type k8sPodContainer struct {
	Name string   `json:"name"`
	Args []string `json:"args"`
	Env  []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	SecurityContext struct {
		RunAsUser    *int `json:"runAsUser"`
		Capabilities struct {
			Add []string `json:"add"`
		} `json:"capabilities"`
	} `json:"securityContext"`
}

// containerLike runs args the way a container runtime confines a container
// of the sidecar's securityContext: /proc/sys read-only (a private mount
// namespace), uid 0 with no capability but those the manifest adds, and
// no_new_privs (allowPrivilegeEscalation: false), in a PID namespace of its
// own that ends with it: killing the returned command by PID ends every
// process it started (a container's pipeline, say).
func containerLike(caps []string, args ...string) []string {
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(c)
	}
	// The mounts are made private before the bind (all of them, or /proc
	// alone where / is not a mount point, as in a chroot: unshare's own
	// --propagation private fails there), so that it stays in this mount
	// namespace.
	script := `{ mount --make-rprivate / 2>/dev/null || mount --make-rprivate /proc; } && ` +
		`mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && ` +
		`exec setpriv --no-new-privs --bounding-set ` + bounding + ` --inh-caps -all "$@"`
	return append([]string{"unshare", "--mount", "--propagation", "unchanged", "--pid", "--fork", "--kill-child", "sh", "-c", script, "sh"}, args...)
}

// TestPrivilegedKubernetesSidecar runs the tcopy-tun sidecar of
// deploy/kubernetes/test-pod.yaml as a container runtime would run it: in
// the pod's network namespace (a namespace whose address stands for the pod
// IP, with the server under test, a real nginx, listening there), as uid 0
// with only the capabilities the manifest adds, /proc/sys read-only. Its
// args come from the manifest with $(POD_IP) set to the pod's address, and
// --duration added so that it ends by itself. A capture agent in another
// namespace (nc, as the DaemonSet's script runs it) sends it a capture
// through its --pcap-listen, which must admit the agent by the manifest's
// --pcap-allow. Every session must reach nginx once, from a client address
// in the TUN's range. The same args with 127.0.0.1 as the target must fail: the
// TUN path cannot set route_localnet on a read-only /proc/sys, which is why
// the manifest targets the pod's address.
func TestPrivilegedKubernetesSidecar(t *testing.T) {
	requireReal(t, toolGo, toolNginx, realTool{"unshare", "util-linux"}, realTool{"setpriv", "util-linux"}, realTool{"mount", "mount"})
	b, err := os.ReadFile(sidecarManifest)
	if err != nil {
		t.Fatal(err)
	}
	var pod k8sPod
	for _, part := range strings.Split("\n"+string(b), "\n---\n") {
		var d k8sPod
		if err := yaml.Unmarshal([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v", sidecarManifest, err)
		}
		if d.Kind == "Pod" {
			pod = d
		}
	}
	idx := slices.IndexFunc(pod.Spec.Containers, func(c k8sPodContainer) bool {
		return c.Name == "tcopy-tun"
	})
	if idx < 0 {
		t.Fatalf("%s: no tcopy-tun container", sidecarManifest)
	}
	c := pod.Spec.Containers[idx]
	if c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != 0 {
		t.Fatalf("%s: the sidecar does not run as uid 0; this test runs it as the manifest says only for uid 0", sidecarManifest)
	}
	env := map[string]string{}
	for _, ev := range c.Env {
		if ev.ValueFrom != nil && ev.ValueFrom.FieldRef != nil && ev.ValueFrom.FieldRef.FieldPath == "status.podIP" {
			env[ev.Name] = realServerIP // the server namespace's address is the pod's
		}
	}

	bin := buildTcopyTun(t)
	help, _ := exec.Command(bin, "help").CombinedOutput()
	e := newRealEnv(t, bin)
	const sessions = 20
	var ss []e2eSession
	want := map[string]bool{}
	for k := 0; k < sessions; k++ {
		uri := fmt.Sprintf("/f2.txt?sidecar=%d", k)
		want[uri] = true
		ss = append(ss, e2eSession{
			Client:   fmt.Sprintf("10.3.0.%d:%d", 10+k, 41000+k),
			Server:   "10.1.0.1:8080",
			Start:    time.Duration(k) * 5 * time.Millisecond,
			Requests: []replaytest.DemoRequest{{Method: "GET", Path: uri, Close: true}},
		})
	}
	pcap := filepath.Join(e.dir, "sidecar.pcap")
	if err := os.WriteFile(pcap, e2eCapture(t, ss), 0o644); err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := 0; i < len(c.Args); i++ {
		a := k8sExpand(c.Args[i], env)
		switch {
		case a == "--metrics" && i+1 < len(c.Args) && !strings.Contains(string(help), "-metrics"):
			t.Logf("this build has no --metrics: dropped --metrics %s", c.Args[i+1])
			i++
		default:
			if strings.Contains(a, "$(") {
				t.Fatalf("%s: arg %q: a variable this test does not set", sidecarManifest, c.Args[i])
			}
			args = append(args, a)
		}
	}
	reportFile := filepath.Join(e.dir, "sidecar-report.json")
	live := append(slices.Clone(args), "--report", reportFile, "--duration", "8s")
	// The same args reading the capture from a file (for the check
	// below): without the capture agents' flags.
	var fromFile []string
	for i := 0; i < len(args); i++ {
		if (args[i] == "--pcap-listen" || args[i] == "--pcap-allow") && i+1 < len(args) {
			i++
			continue
		}
		fromFile = append(fromFile, args[i])
	}
	args = append(fromFile, "--pcap", pcap, "--report", reportFile)
	t.Logf("sidecar: tcopy-tun %q", args)

	// The confinement is real: /proc/sys is read-only in it.
	if out, err := e.srv.Output(containerLike(c.SecurityContext.Capabilities.Add, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/lo/route_localnet")...); err == nil {
		t.Fatalf("a sysctl write succeeded inside the container-like confinement: %s", out)
	}

	srv := nginxServer{}.start(t, e, "sidecar").(*nginxInstance)
	p := startProc(t, e.srv, "tcopy-tun sidecar", containerLike(c.SecurityContext.Capabilities.Add, append([]string{bin}, live...)...)...)
	p.waitListening(t, e.cli, fmt.Sprintf("%s:%d", realServerIP, 57012))
	// The agent: a capture stream over TCP from the client namespace's
	// address (inside the manifest's --pcap-allow).
	runClient(t, e.cli, "sh", "-c", fmt.Sprintf("nc -N %s 57012 < %s", realServerIP, pcap))
	if err := p.wait(t, realReplayTimeout); err != nil {
		t.Fatalf("sidecar: %v\n%s", err, p.out.String())
	}
	if !strings.Contains(p.out.String(), "agent") {
		t.Errorf("the sidecar's output does not mention the capture agent:\n%s", p.out.String())
	}

	// 127.0.0.1 needs route_localnet on the TUN: refused under the same
	// confinement, which is why the manifest targets $(POD_IP).
	loop := slices.Clone(args)
	for i := range loop {
		if loop[i] == "--target" && i+1 < len(loop) {
			loop[i+1] = fmt.Sprintf("127.0.0.1:%d", nginxPort)
		}
		if loop[i] == "--report" && i+1 < len(loop) {
			loop[i+1] = filepath.Join(e.dir, "loopback-report.json")
		}
	}
	lp := startProc(t, e.srv, "tcopy-tun sidecar to 127.0.0.1", containerLike(c.SecurityContext.Capabilities.Add, append([]string{bin}, loop...)...)...)
	if err := lp.wait(t, realReplayTimeout); err == nil || !strings.Contains(lp.out.String(), "route_localnet") {
		t.Errorf("sidecar args with --target 127.0.0.1 under a read-only /proc/sys: %v, want a refusal naming route_localnet:\n%s", err, lp.out.String())
	}

	if err := srv.proc.stop(t, syscall.SIGQUIT); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	got := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, srv.log)), "\n") {
		if f := strings.Fields(l); len(f) == 6 && f[4] == "200" {
			got[strings.Trim(f[3], `"`)]++
		}
	}
	for uri := range want {
		if got[uri] != 1 {
			t.Errorf("%s reached nginx %d times with 200, want once", uri, got[uri])
		}
	}
	r := readReport(t, reportFile)
	clientNet := netip.MustParsePrefix(realClientNet)
	for _, row := range r.Sessions {
		ap, err := netip.ParseAddrPort(row.MappedClient)
		if row.Outcome != "ok" || err != nil || !clientNet.Contains(ap.Addr()) {
			t.Errorf("session %d (%s): outcome %s, mapped client %q: want ok, from %s through the TUN", row.ID, row.CapturedClient, row.Outcome, row.MappedClient, clientNet)
		}
	}
	if len(r.Sessions) != sessions {
		t.Errorf("report: %d sessions, want %d", len(r.Sessions), sessions)
	}
}

// agentManifest holds the capture-agent DaemonSet.
const agentManifest = "../../deploy/kubernetes/capture-agent.yaml"

// streamSessions rebuilds the sessions on port from a pcap stream received
// so far (a packet cut short at its end is left out).
func streamSessions(b []byte, port uint16) ([]*session.Session, error) {
	src, err := capture.NewSource(bytes.NewReader(b), "agent stream")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var ss []*session.Session
	cfg := session.Config{Servers: []netip.AddrPort{netip.AddrPortFrom(netip.Addr{}, port)}, ServerDataLimit: 1 << 20}
	_, err = session.Build(capture.NewReader(src, "agent stream"), cfg, func(s *session.Session) { ss = append(ss, s) })
	return ss, err
}

// TestPrivilegedKubernetesCaptureAgent runs the capture agent of
// deploy/kubernetes/capture-agent.yaml as a container runtime would: its
// script with the image's entrypoint (sh -c) and the manifest's
// environment, as uid 0 with only the capabilities the manifest adds, in
// the "node's" network namespace (hostNetwork), where a real nginx serves.
// FEED_HOST, the Service's name, is 127.0.0.1 here, where the test listens
// as --pcap-listen would. curl makes connections from another namespace;
// the stream the agent sends must be a pcap holding each of them, complete.
func TestPrivilegedKubernetesCaptureAgent(t *testing.T) {
	requireReal(t, toolGo, toolNginx, toolCurl, toolTcpdump, realTool{"nc", "netcat-openbsd"},
		realTool{"unshare", "util-linux"}, realTool{"setpriv", "util-linux"}, realTool{"mount", "mount"})
	b, err := os.ReadFile(agentManifest)
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					HostNetwork bool              `json:"hostNetwork"`
					Containers  []k8sPodContainer `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("%s: %v", agentManifest, err)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || len(pod.Containers) != 1 || len(pod.Containers[0].Args) != 1 {
		t.Fatalf("%s: want a host-network pod with one container whose args are one script", agentManifest)
	}
	c := pod.Containers[0]
	env := map[string]string{}
	for _, ev := range c.Env {
		env[ev.Name] = ev.Value
	}
	env["FEED_HOST"] = "127.0.0.1" // the Service's address, where the test listens
	feedPort, err := strconv.Atoi(env["FEED_PORT"])
	if err != nil {
		t.Fatalf("%s: FEED_PORT %q", agentManifest, env["FEED_PORT"])
	}
	if env["CAPTURE_FILTER"] != fmt.Sprintf("tcp port %d", nginxPort) {
		t.Fatalf("%s: CAPTURE_FILTER %q: this test serves port %d", agentManifest, env["CAPTURE_FILTER"], nginxPort)
	}

	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	// The receiving end of the stream, in the node's namespace.
	var ln net.Listener
	if err := e.srv.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", feedPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var stream []byte
	conns := 0
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			go func() {
				defer conn.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := conn.Read(buf)
					mu.Lock()
					stream = append(stream, buf[:n]...)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()

	srv := nginxServer{}.start(t, e, "agent").(*nginxInstance)
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	agent := startProcEnv(t, e.srv, "capture agent", envList,
		containerLike(c.SecurityContext.Capabilities.Add, "/bin/sh", "-c", c.Args[0])...)
	agent.waitOutput(t, "listening on")

	const connections = 5
	base := fmt.Sprintf("http://%s:%d", realServerIP, nginxPort)
	for k := 0; k < connections; k++ {
		runClient(t, e.cli, "curl", "-sS", "-o", "/dev/null", fmt.Sprintf("%s/f1.txt?agent=%d", base, k))
	}
	// tcpdump -U writes each packet as it comes: wait until the stream
	// holds every connection, closed (bounded: realClientTimeout).
	var ss []*session.Session
	deadline := time.Now().Add(realClientTimeout)
	for {
		mu.Lock()
		snapshot := bytes.Clone(stream)
		mu.Unlock()
		ss, err = streamSessions(snapshot, nginxPort)
		closed := 0
		for _, s := range ss {
			if s.End != session.EndCaptureEnd {
				closed++
			}
		}
		if err == nil && closed == connections {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the agent's stream (%d bytes) holds %d closed sessions of %d (%v):\n%s",
				realClientTimeout, len(snapshot), closed, connections, err, agent.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = agent.stop(t, syscall.SIGKILL) // the agent's PID namespace goes with it
	if err := srv.proc.stop(t, syscall.SIGQUIT); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	clients := map[netip.Addr]bool{}
	for _, s := range ss {
		if s.Flags&(session.Partial|session.Holes|session.Truncated) != 0 {
			t.Errorf("session %s: flags %s: the stream lost packets", s.Client, s.Flags)
		}
		if s.Server != netip.AddrPortFrom(netip.MustParseAddr(realServerIP), nginxPort) {
			t.Errorf("session %s: server %s", s.Client, s.Server)
		}
		clients[s.Client.Addr()] = true
	}
	if len(ss) != connections || !clients[netip.MustParseAddr(realClientIP)] {
		t.Errorf("the stream holds %d sessions from %v, want %d from %s", len(ss), clients, connections, realClientIP)
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 1 {
		t.Errorf("the agent opened %d connections to the feed, want 1", conns)
	}
}
