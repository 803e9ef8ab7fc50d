package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
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
