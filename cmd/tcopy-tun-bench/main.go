package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK       = 0 // every replay ran and was measured (targets met or not)
	exitFailure  = 1 // a replay could not be measured, or setup failed
	exitUsage    = 2 // bad flags
	exitPriv     = 4 // no namespace could be created (not root)
	exitSignaled = 5 // interrupted; the partial table and JSON were still written
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			return runServe(args[1:], stdin, stdout, stderr)
		case "sysctl":
			return runSysctl(args[1:])
		case "gen":
			return runGen(args[1:], stderr)
		case "load":
			return runLoad(args[1:], stdout, stderr)
		}
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "tcopy-tun-bench: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	h := &harness{opts: o, stdout: stdout, stderr: stderr}
	return h.run(ctx)
}

// options are the harness's flags.
type options struct {
	tcopy      string
	workloads  []*workload
	quick      bool
	jsonOut    string
	runs       int
	vias       []string
	profile    bool
	tmpRoot    string
	extra      []string
	env        []string
	runTimeout time.Duration
	listen     string
	keep       bool
	// liveRate, if set, replaces the live workload's search by one step
	// at that rate per path (to profile or reproduce one point).
	liveRate float64
	// liveTrial, if set, is the length of each live step.
	liveTrial time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("tcopy-tun-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	var list, vias, extra, env string
	exe, _ := os.Executable()
	fs.StringVar(&o.tcopy, "tcopy-tun", filepath.Join(filepath.Dir(exe), "tcopy-tun"), "the tcopy-tun binary to measure")
	fs.StringVar(&list, "workloads", "", "comma-separated workloads (default all): short, short-nocausal, keepalive, pipelined, bulk, upload, timing, million, live")
	fs.BoolVar(&o.quick, "quick", false, "small captures: checks that the harness works, in about a minute")
	fs.StringVar(&o.jsonOut, "json", "out/bench.json", "write the results as JSON to `FILE` (empty: none)")
	fs.IntVar(&o.runs, "runs", 0, "replays per workload and path, the table shows the median (default 3 for the sub-second workloads, 1 for bulk, upload, timing and million)")
	fs.StringVar(&vias, "via", "tun,socket", "paths to measure")
	fs.BoolVar(&o.profile, "profile", false, "sample each tun replay and each live step with perf and print the top symbols")
	fs.StringVar(&o.tmpRoot, "tmp", os.TempDir(), "directory for the generated captures (deleted after use)")
	fs.StringVar(&extra, "args", "", "extra tcopy-tun flags for every replay, space-separated (e.g. \"--mtu 1500\")")
	fs.StringVar(&env, "env", "", "extra environment for every replay, space-separated KEY=VALUE (e.g. \"GOGC=400\")")
	fs.DurationVar(&o.runTimeout, "run-timeout", 0, "bound on one replay (default 2m plus 1ms per session of the capture)")
	fs.StringVar(&o.listen, "target", "127.0.0.1:8080", "address the target listens on, inside the namespace")
	fs.BoolVar(&o.keep, "keep", false, "keep the generated captures (their paths are printed)")
	fs.Float64Var(&o.liveRate, "live-rate", 0, "live workload: one step at this rate (sessions/s) per path instead of the search")
	fs.DurationVar(&o.liveTrial, "live-step", 0, "live workload: the load's length in each step (default 4s, 1s with -quick)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tcopy-tun-bench [flags]   (root: it creates a network namespace)\n\n"+
			"Generates captures, starts an HTTP/1.1 target in a private namespace, replays each\n"+
			"workload with tcopy-tun --speed max through the TUN + netstack and through kernel\n"+
			"sockets, and prints a table (and JSON): rates, CPU, the replayer's peak RSS, sessions\n"+
			"delivered and whether the target received every client byte of the capture.\n\nworkloads (-quick shrinks them):\n")
		for _, w := range workloads(false) {
			fmt.Fprintf(stderr, "  %-15s %s\n", w.Name, w.Description)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.workloads, err = selectWorkloads(workloads(o.quick), list); err != nil {
		return nil, fmt.Errorf("-workloads: %w", err)
	}
	for _, v := range strings.Split(vias, ",") {
		switch v = strings.TrimSpace(v); v {
		case "tun", "socket":
			o.vias = append(o.vias, v)
		case "":
		default:
			return nil, fmt.Errorf("-via %q: want tun, socket or both", v)
		}
	}
	if len(o.vias) == 0 {
		return nil, fmt.Errorf("-via: no path to measure")
	}
	if o.liveRate < 0 || o.liveRate > 1e6 {
		return nil, fmt.Errorf("-live-rate %v: want 0 (search) to 1000000 sessions/s", o.liveRate)
	}
	if o.liveTrial < 0 || o.liveTrial > 5*time.Minute {
		return nil, fmt.Errorf("-live-step %v: want 0 (default) to 5m", o.liveTrial)
	}
	for _, w := range o.workloads {
		if w.Live == nil {
			continue
		}
		if o.liveRate > 0 {
			w.Live.Start, w.Live.MaxGrow, w.Live.Bisect = o.liveRate, 1, 0
		}
		if o.liveTrial > 0 {
			w.Live.Trial = o.liveTrial
		}
	}
	if o.runs < 0 || o.runs > 20 {
		return nil, fmt.Errorf("-runs %d: want 1 to 20", o.runs)
	}
	o.extra = strings.Fields(extra)
	for _, kv := range strings.Fields(env) {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("-env %q: want KEY=VALUE", kv)
		}
		o.env = append(o.env, kv)
	}
	return o, nil
}

// harness is one bench run.
type harness struct {
	opts           *options
	stdout, stderr io.Writer
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.stderr, "tcopy-tun-bench: "+format+"\n", args...)
}

// benchReport is the JSON output.
type benchReport struct {
	Version     int         `json:"version"`
	Start       time.Time   `json:"start"`
	WallSeconds float64     `json:"wall_seconds"`
	Quick       bool        `json:"quick"`
	Interrupted bool        `json:"interrupted,omitempty"`
	Machine     machineInfo `json:"machine"`
	LoadBefore  string      `json:"loadavg_before"`
	LoadAfter   string      `json:"loadavg_after"`
	TcopyTun    string      `json:"tcopy_tun"`
	Commit      string      `json:"commit,omitempty"`
	// Uncommitted lists the Go sources (not tests) that differ from the
	// commit: the binaries measured were built from the working tree.
	Uncommitted []string          `json:"uncommitted_sources,omitempty"`
	ExtraArgs   []string          `json:"extra_args,omitempty"`
	ExtraEnv    []string          `json:"extra_env,omitempty"`
	Target      string            `json:"target"`
	Sysctls     map[string]string `json:"netns_sysctls"`
	Workloads   []*workloadResult `json:"workloads"`
}

type machineInfo struct {
	CPUs     int    `json:"nproc"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	MemTotal string `json:"mem_total"`
	Go       string `json:"go"`
}

type workloadResult struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Capture     capSpec  `json:"capture"`
	Args        []string `json:"args,omitempty"`
	Metric      string   `json:"ratio_metric"`

	CaptureStats    capStats     `json:"capture_stats"`
	GenerateSeconds float64      `json:"generate_seconds"`
	Runs            []*runResult `json:"runs"`
	// Tun and Socket are the median runs of each path (by Metric).
	Tun     *runResult   `json:"tun,omitempty"`
	Socket  *runResult   `json:"socket,omitempty"`
	Ratio   float64      `json:"ratio,omitempty"`
	Targets []goalResult `json:"targets,omitempty"`
	// Live is the live workload's search, one per path.
	Live []*liveSearch `json:"live,omitempty"`
	// TLSCost is a TLS workload's cost against its plaintext twin.
	TLSCost *tlsCost `json:"tls_cost,omitempty"`
}

type goalResult struct {
	What string `json:"what"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// run is the whole bench. Whatever happens, the target is stopped, the
// namespace deleted and the captures removed before it returns.
func (h *harness) run(ctx context.Context) (code int) {
	o := h.opts
	self, err := os.Executable()
	if err != nil {
		h.logf("%v", err)
		return exitFailure
	}
	if _, err := os.Stat(o.tcopy); err != nil {
		h.logf("%v\nhint: build it first (make bench does), or name it with -tcopy-tun", err)
		return exitFailure
	}
	rep := &benchReport{Version: 1, Start: time.Now(), Quick: o.quick, Machine: machine(),
		LoadBefore: loadavg(), TcopyTun: o.tcopy, Commit: gitCommit(), Uncommitted: uncommittedSources(), ExtraArgs: o.extra, ExtraEnv: o.env,
		Target: o.listen, Sysctls: map[string]string{}}
	for _, kv := range nsSysctls {
		rep.Sysctls[kv[0]] = kv[1]
	}

	stopLog := context.AfterFunc(ctx, func() {
		h.logf("interrupted: stopping the replay in flight, then cleaning up")
	})
	defer stopLog()
	sweepStaleNetns(h.logf)
	ns, err := createNetns(ctx, self)
	if err != nil {
		h.logf("%v", err)
		if os.Geteuid() != 0 {
			fmt.Fprintln(h.stderr, "hint: run as root (the bench creates a network namespace and TUN devices)")
			return exitPriv
		}
		return exitFailure
	}
	defer func() {
		if err := ns.delete(); err != nil {
			h.logf("%v", err)
			code = exitFailure
		}
	}()
	h.logf("namespace %s; load average %s", ns.name, rep.LoadBefore)
	tgt, err := startTarget(ctx, ns, self, o.listen)
	if err != nil {
		h.logf("%v", err)
		return exitFailure
	}
	defer tgt.stop()
	tmp, err := os.MkdirTemp(o.tmpRoot, "tcopy-tun-bench-")
	if err != nil {
		h.logf("%v", err)
		return exitFailure
	}
	if !o.keep {
		defer os.RemoveAll(tmp)
	}

	// Captures are shared by workloads with the same spec and removed once
	// the last of them is done: the large ones do not pile up on disk.
	uses := map[string]int{}
	for _, w := range o.workloads {
		uses[w.Capture.key()]++
	}
	type gen struct {
		path    string
		st      capStats
		seconds float64
	}
	made := map[string]gen{}
	failed := false
	var live *liveEnv  // set up by the first live workload
	var tlsTgt *target // started by the first TLS workload
	var tlsCA string
	for _, w := range o.workloads {
		if ctx.Err() != nil {
			break
		}
		k := w.Capture.key()
		g, ok := made[k]
		if !ok {
			g.path = filepath.Join(tmp, fmt.Sprintf("%s-%d.pcap", w.Capture.Kind, w.Capture.Sessions))
			t0 := time.Now()
			st, err := generate(w.Capture, g.path)
			if err != nil {
				h.logf("%v", err)
				return exitFailure
			}
			g.st, g.seconds = st, time.Since(t0).Seconds()
			made[k] = g
			h.logf("generated %s: %d sessions, %d frames, %.1f MB in %.1fs", g.path, w.Capture.Sessions, st.Frames, float64(st.FileBytes)/1e6, g.seconds)
		}
		wr := &workloadResult{Name: w.Name, Description: w.Description, Capture: w.Capture, Args: w.Args,
			Metric: w.Metric, CaptureStats: g.st, GenerateSeconds: g.seconds}
		rep.Workloads = append(rep.Workloads, wr)
		timeout := o.runTimeout
		if timeout <= 0 {
			// Far beyond any healthy replay (the million sessions take
			// 2–3 minutes here), short enough that a hung one (a process
			// that never exits) does not stall the bench for long.
			timeout = 2*time.Minute + time.Duration(w.Capture.Sessions)*time.Millisecond
		}
		ro := replayOpts{ns: ns, tcopy: o.tcopy, target: tgt, tmp: tmp, extra: o.extra, env: o.env, timeout: timeout, dumpDir: dumpDir(o.jsonOut),
			profile: o.profile, logf: h.logf, capture: g.path, expected: int64(w.Capture.Sessions), expectedBytes: g.st.ClientBytes}
		plainRO := ro
		if w.Capture.TLS {
			if tlsTgt == nil {
				if tlsTgt, tlsCA, err = h.tlsTarget(ctx, ns, self, tmp, tgt); err != nil {
					h.logf("%v", err)
					failed = true
					continue
				}
				defer tlsTgt.stop()
			}
			ro.target = tlsTgt
			ro.extra = append(append([]string(nil), o.extra...), "--tls-keylog", keylogPath(g.path), "--target-ca", tlsCA)
		}
		runs := o.runs
		if runs == 0 {
			runs = max(w.Runs, 1)
		}
		if w.Live != nil {
			if live == nil {
				if live, err = h.startLive(ctx, ns, self, tgt, tmp, w); err != nil {
					h.logf("%v", err)
					failed = true
					continue
				}
				defer live.source.stop()
			}
			offline := func(via string) (float64, float64, string, error) {
				return h.offlineRate(ctx, rep, ro, w, via, runs)
			}
			if h.runLive(ctx, live, wr, offline) {
				failed = true
			}
			if uses[k]--; uses[k] == 0 && !o.keep {
				os.Remove(g.path)
			}
			continue
		}
		for r := 0; r < runs && ctx.Err() == nil; r++ {
			vias := o.vias
			if r%2 == 1 { // alternate which path goes first
				vias = reversed(vias)
			}
			for _, via := range vias {
				if ctx.Err() != nil {
					break
				}
				if via == "tun" {
					ro.profile = o.profile
				} else {
					ro.profile = false
				}
				res, err := runReplay(ctx, ro, w, via)
				if res != nil {
					wr.Runs = append(wr.Runs, res)
				}
				if err != nil {
					if ctx.Err() == nil {
						h.logf("%v", err)
						failed = true
					}
					continue
				}
				h.logf("%-15s %-6s %s", w.Name, via, res.line())
				if res.Profile != "" {
					fmt.Fprintf(h.stderr, "perf, %s via tun (self time by symbol):\n%s\n", w.Name, res.Profile)
				}
			}
		}
		wr.Tun, wr.Socket = median(wr.Runs, "tun", w.Metric), median(wr.Runs, "socket", w.Metric)
		if wr.Tun != nil && wr.Socket != nil {
			wr.Ratio = ratio(wr.Tun, wr.Socket, w.Metric)
		}
		if wr.Tun != nil && wr.Tun.Error == "" {
			for _, g := range w.targets {
				if strings.Contains(g.what, "tun/socket") && wr.Socket == nil {
					continue
				}
				got, met := g.check(wr.Tun, wr.Socket)
				wr.Targets = append(wr.Targets, goalResult{What: g.what, Got: got, Met: met})
			}
		}
		if w.Capture.TLS && ctx.Err() == nil && slices.Contains(o.vias, "tun") {
			if err := h.tlsCostRuns(ctx, plainRO, w, wr, keylogPath(g.path), runs); err != nil && ctx.Err() == nil {
				h.logf("%v", err)
				failed = true
			}
		}
		if uses[k]--; uses[k] == 0 && !o.keep {
			os.Remove(g.path)
			os.Remove(keylogPath(g.path))
		}
	}
	rep.LoadAfter = loadavg()
	rep.WallSeconds = time.Since(rep.Start).Seconds()
	rep.Interrupted = ctx.Err() != nil
	writeTable(h.stdout, rep)
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, rep); err != nil {
			h.logf("%v", err)
			failed = true
		} else {
			h.logf("results written to %s", o.jsonOut)
		}
	}
	if o.keep {
		h.logf("captures kept in %s", tmp)
	}
	switch {
	case rep.Interrupted:
		return exitSignaled
	case failed:
		return exitFailure
	}
	return exitOK
}

// runGen is `tcopy-tun-bench gen -workload NAME -o FILE`: it writes one
// workload's capture, for replays and profiles by hand.
func runGen(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcopy-tun-bench gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("workload", "short", "workload whose capture to write")
	quick := fs.Bool("quick", false, "the quick mode's size")
	out := fs.String("o", "", "output `FILE` (pcap)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	ws, err := selectWorkloads(workloads(*quick), *name)
	if err != nil || len(ws) != 1 || *out == "" {
		fmt.Fprintf(stderr, "tcopy-tun-bench gen: want -workload NAME (one) and -o FILE\n")
		return exitUsage
	}
	st, err := generate(ws[0].Capture, *out)
	if err != nil {
		fmt.Fprintf(stderr, "tcopy-tun-bench gen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "%s: %s: %d sessions, %d requests, %d frames, %d bytes\n", *out, ws[0].Description, ws[0].Capture.Sessions, st.Requests, st.Frames, st.FileBytes)
	return exitOK
}

// dumpDir is where diagnostics go: beside the JSON, or the working
// directory.
func dumpDir(jsonOut string) string {
	if jsonOut == "" {
		return "."
	}
	return filepath.Dir(jsonOut)
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// median returns the run of via with the median metric (the lower middle
// of an even count); runs that failed to complete are left out.
func median(runs []*runResult, via, metric string) *runResult {
	var rs []*runResult
	for _, r := range runs {
		if r.Via == via && r.WallSeconds > 0 {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil
	}
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].metric(metric) < rs[j].metric(metric) })
	return rs[(len(rs)-1)/2]
}

func (r *runResult) line() string {
	s := fmt.Sprintf("%d/%d sessions in %.2fs: %.0f sessions/s, %.0f requests/s, %.1f MB/s, %.3f CPU s/1k, peak RSS %.0f MiB; CPU s: replayer %.2f, target %.2f; client bytes at target: %s (%d of %d)",
		r.Succeeded, r.Expected, r.WallSeconds, r.SessionsPerSec, r.RequestsPerSec, r.MBPerSec, r.CPUPer1k, float64(r.MaxRSSBytes)/mib,
		r.UserSeconds+r.SysSeconds, r.TargetCPU, bytesAtTarget(r), r.TargetBytesIn, r.ClientBytesExpected)
	if l := r.ChunkLateness; l.Count > 0 {
		s += fmt.Sprintf("; chunk lateness p50 %.0fµs p99 %.0fµs max %.0fµs", l.P50us, l.P99us, l.Maxus)
	}
	if len(r.FailedBy) > 0 {
		s += fmt.Sprintf(", failed %v", r.FailedBy)
	}
	return s
}

func writeJSON(path string, rep *benchReport) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func machine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = utsString(u.Sysname[:]) + " " + utsString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	return m
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// uncommittedSources lists modified or new non-test Go files of the
// working tree (empty outside a git checkout).
func uncommittedSources() []string {
	out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=all", "--", "*.go").Output()
	if err != nil {
		return nil
	}
	var files []string
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) < 4 {
			continue
		}
		f := strings.TrimSpace(l[3:])
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	return files
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
