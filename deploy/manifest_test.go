package deploy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// manifestDir holds the manifests under test.
const manifestDir = "kubernetes"

// object is one decoded document of a manifest file.
type object struct {
	file string // base name
	doc  int    // position in the file, from 0
	kind string
	name string
	obj  any // *corev1.Pod, *batchv1.Job, ...
}

func (o object) String() string { return fmt.Sprintf("%s[%d] %s/%s", o.file, o.doc, o.kind, o.name) }

// splitDocs splits a YAML stream at its "---" lines and drops documents
// that hold only comments and blank lines.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	content := false
	flush := func() {
		if content {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
		content = false
	}
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.TrimRight(line, " \r\n") == "---" {
			flush()
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// decodeStrict decodes one document into the k8s.io/api type of its
// apiVersion and kind. An unknown field, a duplicate key or a value of the
// wrong type is an error, as is a kind the manifests are not meant to hold.
func decodeStrict(doc []byte) (kind, name string, obj any, err error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", "", nil, fmt.Errorf("read apiVersion and kind: %w", err)
	}
	var meta *metav1.ObjectMeta
	switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
	case "v1 Pod":
		o := &corev1.Pod{}
		obj, meta = o, &o.ObjectMeta
	case "v1 Service":
		o := &corev1.Service{}
		obj, meta = o, &o.ObjectMeta
	case "v1 PersistentVolumeClaim":
		o := &corev1.PersistentVolumeClaim{}
		obj, meta = o, &o.ObjectMeta
	case "batch/v1 Job":
		o := &batchv1.Job{}
		obj, meta = o, &o.ObjectMeta
	case "apps/v1 DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, meta = o, &o.ObjectMeta
	default:
		return "", "", nil, fmt.Errorf("apiVersion %q kind %q: not a kind these manifests use", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return "", "", nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if meta.Name == "" {
		return "", "", nil, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return tm.Kind, meta.Name, obj, nil
}

// loadManifests decodes every document of every manifest, failing the test
// on the first that does not decode strictly.
func loadManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", manifestDir)
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(b) {
			kind, name, obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			objs = append(objs, object{file: filepath.Base(f), doc: i, kind: kind, name: name, obj: obj})
		}
	}
	return objs
}

func find[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the only object of type T, failing the test otherwise.
func one[T any](t *testing.T, objs []object) T {
	t.Helper()
	all := find[T](objs)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want exactly one %T in the manifests, found %d", zero, len(all))
	}
	return all[0]
}

// podOwner is a pod spec and its labels, from a Pod or a workload's template.
type podOwner struct {
	what   string
	labels map[string]string
	spec   *corev1.PodSpec
	job    *batchv1.Job // set for a Job's template
}

func pods(objs []object) []podOwner {
	var out []podOwner
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Pod:
			out = append(out, podOwner{o.String(), v.Labels, &v.Spec, nil})
		case *batchv1.Job:
			out = append(out, podOwner{o.String(), v.Spec.Template.Labels, &v.Spec.Template.Spec, v})
		case *appsv1.DaemonSet:
			out = append(out, podOwner{o.String(), v.Spec.Template.Labels, &v.Spec.Template.Spec, nil})
		}
	}
	return out
}

// flagValue returns the value of a --name flag in args, written either as
// "--name value" or "--name=value", and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// mustFlag is flagValue that fails the test when the flag is missing.
func mustFlag(t *testing.T, what string, args []string, name string) string {
	t.Helper()
	v, ok := flagValue(args, name)
	if !ok {
		t.Fatalf("%s: no %s in args %q", what, name, args)
	}
	return v
}

// container returns the pod's container of that name.
func container(t *testing.T, p podOwner, name string) *corev1.Container {
	t.Helper()
	for i := range p.spec.Containers {
		if p.spec.Containers[i].Name == name {
			return &p.spec.Containers[i]
		}
	}
	t.Fatalf("%s: no container %q", p.what, name)
	return nil
}

// serviceEnvPrefix is how Kubernetes names a Service's variables
// (FOO_BAR_SERVICE_HOST for the Service foo-bar).
func serviceEnvPrefix(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_"))
}

// serviceEnv is the set of variables Kubernetes gives a container for the
// Services that exist when its pod starts (enableServiceLinks, the default).
func serviceEnv(svcs []*corev1.Service) map[string]bool {
	env := map[string]bool{}
	for _, s := range svcs {
		p := serviceEnvPrefix(s.Name)
		env[p+"_SERVICE_HOST"] = true
		if len(s.Spec.Ports) > 0 {
			env[p+"_SERVICE_PORT"] = true
		}
		for _, sp := range s.Spec.Ports {
			if sp.Name != "" {
				env[p+"_SERVICE_PORT_"+serviceEnvPrefix(sp.Name)] = true
			}
		}
	}
	return env
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// selects reports whether a Service's selector matches the labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// resolvePort turns a Service's targetPort into a container port number of
// the pod (a name is looked up among the pod's container ports).
func resolvePort(p podOwner, tp intstr.IntOrString) (int32, bool) {
	if tp.Type == intstr.Int {
		return tp.IntVal, tp.IntVal != 0
	}
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadManifests(t)
	kinds := map[string]int{}
	seen := map[string]string{}
	for _, o := range objs {
		kinds[o.kind]++
		key := o.kind + "/" + o.name
		if prev, dup := seen[key]; dup {
			t.Errorf("%s: %s is defined again (first in %s)", o, key, prev)
		}
		seen[key] = o.String()
	}
	want := map[string]int{"Job": 1, "Pod": 2, "DaemonSet": 1, "Service": 2, "PersistentVolumeClaim": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d objects of kind %s, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
	// Every container is bounded and runs with the fewest privileges: no
	// escalation, every capability dropped but those it adds on purpose
	// (checked per workload below), a memory limit.
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			what := p.what + " container " + c.Name
			if c.Image == "" {
				t.Errorf("%s: no image", what)
			}
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s: want allowPrivilegeEscalation: false and capabilities drop [ALL]", what)
			}
			if sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", what)
			}
			if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
				t.Errorf("%s: no memory limit", what)
			}
		}
	}
	// The workloads' selectors select their own templates.
	for _, d := range find[*appsv1.DaemonSet](objs) {
		if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("DaemonSet %s: selector %v does not select its template's labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
		}
	}
}

// TestStrictDecodeRejects: the decoding above can fail, on the mistakes it
// is there to catch.
func TestStrictDecodeRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  completionMode: Indexed\n  completion: 4\n",
		"duplicate field": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  name: y\n",
		"wrong type":      "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  parallelism: four\n",
		"unknown kind":    "apiVersion: apps/v1\nkind: Deployments\nmetadata:\n  name: x\n",
		"no name":         "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {a: b}\n",
	} {
		if _, _, _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
	if docs := splitDocs([]byte("# only a comment\n---\na: 1\n---\n\n")); len(docs) != 1 {
		t.Errorf("splitDocs: %d documents, want 1", len(docs))
	}
}

// TestReplayJob: the Indexed Job runs N pods, pod i replays --shard i/N
// with --via socket (no privilege) of the capture on the shared volume,
// against the Service the manifests define, and every $(VAR) in its args is
// one Kubernetes sets.
func TestReplayJob(t *testing.T) {
	objs := loadManifests(t)
	job := one[*batchv1.Job](t, objs)
	s := job.Spec
	if s.CompletionMode == nil || *s.CompletionMode != batchv1.IndexedCompletion {
		t.Fatalf("Job %s: completionMode %s, want Indexed (JOB_COMPLETION_INDEX is set only then)", job.Name, deref(s.CompletionMode))
	}
	if s.Completions == nil || s.Parallelism == nil || *s.Completions != *s.Parallelism || *s.Completions < 1 {
		t.Fatalf("Job %s: completions %s and parallelism %s: want the same N >= 1 (every shard at once)", job.Name, deref(s.Completions), deref(s.Parallelism))
	}
	n := *s.Completions
	if s.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("Job %s: restartPolicy %q, want Never (a restarted shard replays its sessions twice)", job.Name, s.Template.Spec.RestartPolicy)
	}
	if s.BackoffLimitPerIndex == nil || *s.BackoffLimitPerIndex != 0 {
		t.Errorf("Job %s: backoffLimitPerIndex %s, want 0 (each shard runs once)", job.Name, deref(s.BackoffLimitPerIndex))
	}
	if s.MaxFailedIndexes == nil || *s.MaxFailedIndexes != n {
		t.Errorf("Job %s: maxFailedIndexes %s, want %d (a failed shard does not stop the others)", job.Name, deref(s.MaxFailedIndexes), n)
	}
	p := podOwner{what: "Job " + job.Name, labels: s.Template.Labels, spec: &s.Template.Spec, job: job}
	c := container(t, p, "tcopy-tun")
	args := c.Args
	if got, want := mustFlag(t, p.what, args, "--shard"), fmt.Sprintf("$(JOB_COMPLETION_INDEX)/%d", n); got != want {
		t.Errorf("%s: --shard %q, want %q (completions is %d)", p.what, got, want, n)
	}
	if got := mustFlag(t, p.what, args, "--via"); got != "socket" {
		t.Errorf("%s: --via %q, want socket: a cluster does not route the client range back to a pod's TUN", p.what, got)
	}
	if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: adds capabilities; --via socket needs none", p.what)
	}
	if psc := s.Template.Spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("%s: want runAsNonRoot", p.what)
	}

	// The capture and the reports are on a persistent volume that the
	// manifests claim; each shard writes its own report.
	claims := map[string]bool{}
	for _, pvc := range find[*corev1.PersistentVolumeClaim](objs) {
		claims[pvc.Name] = true
		if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) {
			t.Errorf("PersistentVolumeClaim %s: access modes %v, want ReadWriteMany (shards on several nodes)", pvc.Name, pvc.Spec.AccessModes)
		}
	}
	volumeOf := func(path string) (corev1.VolumeMount, bool) {
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
				return m, true
			}
		}
		return corev1.VolumeMount{}, false
	}
	for _, f := range []string{"--pcap", "--report"} {
		path := mustFlag(t, p.what, args, f)
		m, ok := volumeOf(path)
		if !ok {
			t.Errorf("%s: %s %s is on no volume mount", p.what, f, path)
			continue
		}
		if f == "--report" && m.ReadOnly {
			t.Errorf("%s: --report %s is on a read-only mount", p.what, path)
		}
		var claim string
		for _, v := range s.Template.Spec.Volumes {
			if v.Name == m.Name && v.PersistentVolumeClaim != nil {
				claim = v.PersistentVolumeClaim.ClaimName
			}
		}
		if !claims[claim] {
			t.Errorf("%s: %s %s: volume %q is not a claim the manifests define (%v)", p.what, f, path, m.Name, claims)
		}
	}
	if r := mustFlag(t, p.what, args, "--report"); !strings.Contains(r, "$(JOB_COMPLETION_INDEX)") {
		t.Errorf("%s: --report %s: the shards would overwrite each other's report", p.what, r)
	}

	// The target is a Service of the same file, defined before the Job so
	// that it exists (and its variables are set) when the pods start.
	target := mustFlag(t, p.what, args, "--target")
	m := regexp.MustCompile(`^\$\(([A-Z0-9_]+)_SERVICE_HOST\):\$\(([A-Z0-9_]+)_SERVICE_PORT_([A-Z0-9_]+)\)$`).FindStringSubmatch(target)
	if m == nil || m[1] != m[2] {
		t.Fatalf("%s: --target %q, want $(NAME_SERVICE_HOST):$(NAME_SERVICE_PORT_PORTNAME) of a Service", p.what, target)
	}
	var jobAt object
	for _, o := range objs {
		if o.obj == any(job) {
			jobAt = o
		}
	}
	found := false
	for _, o := range objs {
		svc, ok := o.obj.(*corev1.Service)
		if !ok || serviceEnvPrefix(svc.Name) != m[1] {
			continue
		}
		found = true
		if o.file != jobAt.file || o.doc > jobAt.doc {
			t.Errorf("Service %s (%s) must come before the Job in %s", svc.Name, o, jobAt.file)
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return serviceEnvPrefix(sp.Name) == m[3] }) {
			t.Errorf("Service %s has no port named like %s", svc.Name, m[3])
		}
	}
	if !found {
		t.Errorf("%s: --target names Service variables %s_*, but no Service of that name is defined", p.what, m[1])
	}
	if s.Template.Spec.EnableServiceLinks != nil && !*s.Template.Spec.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks false: --target's variables would not be set", p.what)
	}
}

// TestVariablesDefined: every $(VAR) in a container's command and args is a
// variable Kubernetes sets for it (its env, a Service's variables, the Job's
// JOB_COMPLETION_INDEX); an undefined one would reach tcopy-tun verbatim.
func TestVariablesDefined(t *testing.T) {
	objs := loadManifests(t)
	svcEnv := serviceEnv(find[*corev1.Service](objs))
	refs := 0
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			defined := maps(svcEnv)
			for _, e := range c.Env {
				defined[e.Name] = true
			}
			if p.job != nil && p.job.Spec.CompletionMode != nil && *p.job.Spec.CompletionMode == batchv1.IndexedCompletion {
				defined["JOB_COMPLETION_INDEX"] = true
			}
			for _, a := range append(slices.Clone(c.Command), c.Args...) {
				for _, r := range varRef.FindAllStringSubmatch(a, -1) {
					refs++
					if !defined[r[1]] {
						t.Errorf("%s container %s: $(%s) in %q is not set by Kubernetes", p.what, c.Name, r[1], a)
					}
				}
			}
		}
	}
	if refs == 0 {
		t.Fatal("no $(VAR) in any container's args: the Job's shard and target should use some")
	}
}

// deref shows an optional field's value, or "unset".
func deref[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func maps(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sidecarPod returns the pod whose tcopy-tun container listens for capture
// streams.
func sidecarPod(t *testing.T, objs []object) (podOwner, *corev1.Container) {
	t.Helper()
	var found []podOwner
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			if _, ok := flagValue(c.Args, "--pcap-listen"); ok {
				found = append(found, p)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one pod with a --pcap-listen container, found %d", len(found))
	}
	return found[0], container(t, found[0], "tcopy-tun")
}

// listenPort parses a listen address flag (HOST:PORT, HOST possibly empty).
func listenPort(t *testing.T, what, v string) int32 {
	t.Helper()
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, v, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		t.Fatalf("%s: %q: bad port", what, v)
	}
	return int32(n)
}

// TestSidecarPod: the tcopy-tun sidecar can open a TUN (CAP_NET_ADMIN as
// uid 0, /dev/net/tun from the host), replays into the pod's other
// container over the pod's own address, and the Service in front of it
// exposes its --pcap-listen and --metrics ports.
func TestSidecarPod(t *testing.T) {
	objs := loadManifests(t)
	p, c := sidecarPod(t, objs)
	what := p.what + " container " + c.Name
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) {
		t.Errorf("%s: want capabilities add [NET_ADMIN] (the TUN, its routes)", what)
	}
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("%s: want runAsUser 0: an added capability is effective only for root (no ambient capabilities)", what)
	}
	if v, ok := flagValue(c.Args, "--via"); ok && v != "tun" {
		t.Errorf("%s: --via %s: the sidecar is the TUN path", what, v)
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/dev/net/tun" {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil {
		t.Fatalf("%s: nothing mounted at /dev/net/tun", what)
	}
	var vol *corev1.Volume
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == mount.Name {
			vol = &p.spec.Volumes[i]
		}
	}
	if vol == nil || vol.HostPath == nil || vol.HostPath.Path != "/dev/net/tun" ||
		vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathCharDev {
		t.Errorf("%s: /dev/net/tun is not the host's character device /dev/net/tun: %+v", what, vol)
	}

	// --target is the pod's own address and the port of a sibling
	// container: a container's /proc/sys is read-only, so tcopy-tun cannot
	// set route_localnet for 127.0.0.1, nor the IPv6 settings of an IPv6
	// client range.
	target := mustFlag(t, what, c.Args, "--target")
	host, port, err := net.SplitHostPort(target)
	if err != nil || !strings.HasPrefix(host, "$(") {
		t.Fatalf("%s: --target %q: want $(POD_IP):PORT", what, target)
	}
	ipVar := strings.TrimSuffix(strings.TrimPrefix(host, "$("), ")")
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == ipVar && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
	}) {
		t.Errorf("%s: --target %s: %s is not the downward API's status.podIP", what, target, ipVar)
	}
	tport, _ := strconv.Atoi(port)
	served := false
	for _, other := range p.spec.Containers {
		if other.Name == c.Name {
			continue
		}
		for _, cp := range other.Ports {
			served = served || cp.ContainerPort == int32(tport)
		}
	}
	if !served {
		t.Errorf("%s: --target port %s is no port of the pod's other containers", what, port)
	}
	nets, ok := flagValue(c.Args, "--client-net")
	if !ok {
		t.Errorf("%s: no --client-net: the default includes an IPv6 range, whose settings need a writable /proc/sys", what)
	} else if pfx, err := netip.ParsePrefix(nets); err != nil || !pfx.Addr().Is4() {
		t.Errorf("%s: --client-net %q: want one IPv4 prefix", what, nets)
	}

	// The Service in front of the pod exposes both listening ports.
	var svc *corev1.Service
	for _, s := range find[*corev1.Service](objs) {
		if selects(s.Spec.Selector, p.labels) {
			svc = s
		}
	}
	if svc == nil {
		t.Fatalf("no Service selects %s (labels %v)", p.what, p.labels)
	}
	for _, f := range []string{"--pcap-listen", "--metrics"} {
		want := listenPort(t, what+" "+f, mustFlag(t, what, c.Args, f))
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == want }) {
			t.Errorf("%s: %s port %d is not among its container ports", what, f, want)
		}
		ok := false
		for _, sp := range svc.Spec.Ports {
			if got, _ := resolvePort(p, sp.TargetPort); got == want && sp.Protocol == corev1.ProtocolTCP {
				ok = true
			}
		}
		if !ok {
			t.Errorf("Service %s: no TCP port leads to %s's %s port %d", svc.Name, what, f, want)
		}
	}
}

// TestCaptureAgent: the DaemonSet captures on the host network with
// CAP_NET_RAW, on the nodes labelled for it, and streams to the Service of
// the sidecar's --pcap-listen port.
func TestCaptureAgent(t *testing.T) {
	objs := loadManifests(t)
	ds := one[*appsv1.DaemonSet](t, objs)
	spec := ds.Spec.Template.Spec
	what := "DaemonSet " + ds.Name
	if !spec.HostNetwork {
		t.Errorf("%s: hostNetwork false: the agent would see only its own pod's traffic", what)
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("%s: dnsPolicy %q, want ClusterFirstWithHostNet (resolve the Service from the host network)", what, spec.DNSPolicy)
	}
	if len(spec.NodeSelector) == 0 {
		t.Errorf("%s: no nodeSelector: it would capture on every node", what)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", what, len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	var add []string
	if sc != nil && sc.Capabilities != nil {
		for _, a := range sc.Capabilities.Add {
			add = append(add, string(a))
		}
	}
	sort.Strings(add)
	if !slices.Equal(add, []string{"NET_RAW", "SETGID", "SETUID"}) {
		t.Errorf("%s: capabilities add %v, want NET_RAW (capture) and SETUID, SETGID (tcpdump then drops to its own user)", what, add)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	script := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
	for _, want := range []string{"tcpdump", "-U", "-w -", `"$CAPTURE_INTERFACE"`, `"$CAPTURE_FILTER"`, `nc -N "$FEED_HOST" "$FEED_PORT"`} {
		if !strings.Contains(script, want) {
			t.Errorf("%s: the script does not contain %q:\n%s", what, want, script)
		}
	}
	for _, v := range []string{"CAPTURE_INTERFACE", "CAPTURE_FILTER", "FEED_HOST", "FEED_PORT"} {
		if env[v] == "" {
			t.Errorf("%s: %s is not set", what, v)
		}
	}

	// FEED_HOST:FEED_PORT is a Service port that leads to the sidecar's
	// --pcap-listen port.
	sp, sc2 := sidecarPod(t, objs)
	listen := listenPort(t, "--pcap-listen", mustFlag(t, sp.what, sc2.Args, "--pcap-listen"))
	feedPort, _ := strconv.Atoi(env["FEED_PORT"])
	ok := false
	for _, svc := range find[*corev1.Service](objs) {
		if svc.Name != env["FEED_HOST"] {
			continue
		}
		if !selects(svc.Spec.Selector, sp.labels) {
			t.Errorf("Service %s does not select the sidecar's pod", svc.Name)
		}
		for _, port := range svc.Spec.Ports {
			if tp, _ := resolvePort(sp, port.TargetPort); port.Port == int32(feedPort) && tp == listen {
				ok = true
			}
		}
	}
	if !ok {
		t.Errorf("%s: FEED_HOST %s FEED_PORT %s is no Service port leading to --pcap-listen port %d", what, env["FEED_HOST"], env["FEED_PORT"], listen)
	}
}

// TestServicesSelectPods: every Service selects a pod the manifests
// define, except the replay target, which is the user's server under test.
func TestServicesSelectPods(t *testing.T) {
	objs := loadManifests(t)
	job := one[*batchv1.Job](t, objs)
	target := mustFlag(t, "Job", container(t, podOwner{what: "Job", spec: &job.Spec.Template.Spec}, "tcopy-tun").Args, "--target")
	for _, svc := range find[*corev1.Service](objs) {
		if strings.HasPrefix(target, "$("+serviceEnvPrefix(svc.Name)+"_SERVICE_HOST)") {
			continue
		}
		if !slices.ContainsFunc(pods(objs), func(p podOwner) bool { return selects(svc.Spec.Selector, p.labels) }) {
			t.Errorf("Service %s: selector %v selects no pod of the manifests", svc.Name, svc.Spec.Selector)
		}
	}
}

// TestImagesConsistent: every tcopy-tun container runs one image, the
// capture agent its own, with the same tag, and the Dockerfile's build
// commands produce exactly those names.
func TestImagesConsistent(t *testing.T) {
	objs := loadManifests(t)
	images := map[string]map[string]bool{} // container name → images
	for _, p := range pods(objs) {
		for _, c := range p.spec.Containers {
			if images[c.Name] == nil {
				images[c.Name] = map[string]bool{}
			}
			images[c.Name][c.Image] = true
		}
	}
	only := func(name string) string {
		if len(images[name]) != 1 {
			t.Fatalf("containers named %s run %d images (%v), want 1", name, len(images[name]), images[name])
		}
		for img := range images[name] {
			return img
		}
		return ""
	}
	tt, agent := only("tcopy-tun"), only("capture-agent")
	tag := func(img string) string { return img[strings.LastIndex(img, ":")+1:] }
	if !strings.Contains(tt, ":") || tag(tt) != tag(agent) {
		t.Errorf("images %s and %s: want the same explicit tag (one build of both)", tt, agent)
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]string{} // image → --target ("" for the default)
	for _, m := range regexp.MustCompile(`docker build -f deploy/Dockerfile(?: --target (\S+))? -t (\S+) \.`).FindAllStringSubmatch(string(df), -1) {
		built[m[2]] = m[1]
	}
	if tgt, ok := built[tt]; !ok || tgt != "" {
		t.Errorf("the Dockerfile's build commands %v do not build %s from its default target", built, tt)
	}
	if tgt, ok := built[agent]; !ok || tgt != "capture-agent" {
		t.Errorf("the Dockerfile's build commands %v do not build %s with --target capture-agent", built, agent)
	}
	if !regexp.MustCompile(`(?m)^FROM \S+ AS capture-agent$`).Match(df) {
		t.Error("the Dockerfile has no stage capture-agent")
	}
}
