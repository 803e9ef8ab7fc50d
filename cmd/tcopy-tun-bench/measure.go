package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is the bench's HTTP server, running in the namespace. Its
// standard input and output are plain pipes the harness owns (not
// exec.Cmd's copying ones), so talking to it never races with Wait.
type target struct {
	cmd     *exec.Cmd
	stdin   *os.File
	stdout  *os.File
	out     *bufio.Reader
	addr    string
	done    chan struct{} // closed when the process has been waited for
	stopped bool
}

// startTarget starts `tcopy-tun-bench serve` in the namespace and waits for
// it to listen.
// extra are more `serve` flags.
func startTarget(ctx context.Context, ns *netns, self, listen string, extra ...string) (*target, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start target: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("start target: %w", err)
	}
	cmd := ns.command(ctx, self, append([]string{"serve", "-listen", listen}, extra...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("start target: %w", err)
	}
	t := &target{cmd: cmd, stdin: inW, stdout: outR, out: bufio.NewReader(outR), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(t.done)
	}()
	first := make(chan string, 1)
	go func() {
		l, _ := t.out.ReadString('\n') // ends with the process at the latest
		first <- l
	}()
	select {
	case l := <-first:
		addr, ok := strings.CutPrefix(strings.TrimSpace(l), "listening ")
		if !ok {
			t.stop()
			return nil, fmt.Errorf("start target on %s: it said %q", listen, strings.TrimSpace(l))
		}
		t.addr = addr // the port, when listen asked for any
	case <-time.After(10 * time.Second):
		t.stop()
		return nil, fmt.Errorf("start target on %s: not listening after 10s", listen)
	}
	return t, nil
}

// stats asks the target for its counters.
func (t *target) stats() (serverStats, error) {
	var s serverStats
	if _, err := io.WriteString(t.stdin, "stats\n"); err != nil {
		return s, fmt.Errorf("target stats: %w", err)
	}
	l, err := t.out.ReadString('\n')
	if err != nil {
		return s, fmt.Errorf("target stats: %w", err)
	}
	if err := json.Unmarshal([]byte(l), &s); err != nil {
		return s, fmt.Errorf("target stats %q: %w", l, err)
	}
	return s, nil
}

// cpuSeconds is the target's CPU time so far (user + system), from
// /proc/<pid>/stat.
func (t *target) cpuSeconds() float64 { return procCPUSeconds(t.cmd.Process.Pid) }

// stop ends the target: "quit" and end of input, then SIGKILL by pid if it
// has not exited within 5 s. Idempotent.
func (t *target) stop() {
	if t.stopped {
		return
	}
	t.stopped = true
	io.WriteString(t.stdin, "quit\n")
	t.stdin.Close()
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
		t.cmd.Process.Kill()
		<-t.done
	}
	t.stdout.Close()
}

// procCPUSeconds reads utime+stime of pid. /proc reports clock ticks of
// USER_HZ, which the Linux ABI fixes at 100.
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// runResult is one replay of one workload through one path.
type runResult struct {
	Via      string   `json:"via"`
	Args     []string `json:"args"`
	ExitCode int      `json:"exit_code"`
	Error    string   `json:"error,omitempty"`

	// WallSeconds is the replay's own wall time (the report's, from the
	// first session's dispatch to the last one's end); ProcessSeconds the
	// whole process, setup included.
	WallSeconds    float64 `json:"wall_seconds"`
	ProcessSeconds float64 `json:"process_seconds"`
	UserSeconds    float64 `json:"cpu_user_seconds"`
	SysSeconds     float64 `json:"cpu_system_seconds"`
	MaxRSSBytes    int64   `json:"peak_rss_bytes"`
	TargetCPU      float64 `json:"target_cpu_seconds"`

	Expected   int64 `json:"sessions_expected"`
	Planned    int64 `json:"sessions_planned"`
	Replayed   int64 `json:"sessions_replayed"`
	Succeeded  int64 `json:"sessions_succeeded"`
	Failed     int64 `json:"sessions_failed"`
	NotStarted int64 `json:"sessions_not_started"`
	// Requests were counted by the target while this replay ran.
	Requests      int64            `json:"requests_answered"`
	BytesSent     int64            `json:"bytes_sent"`
	BytesReceived int64            `json:"bytes_received"`
	FailedBy      map[string]int64 `json:"failed_by,omitempty"`
	Match         map[string]int64 `json:"match,omitempty"`

	// TargetBytesIn and TargetBytesOut were counted by the target while
	// this replay ran (request headers and bodies in, answers out);
	// ClientBytesExpected is what the capture's clients sent, and
	// AllBytesDelivered says that the target received exactly that.
	TargetBytesIn       int64 `json:"target_bytes_in"`
	TargetBytesOut      int64 `json:"target_bytes_out"`
	ClientBytesExpected int64 `json:"client_bytes_expected"`
	AllBytesDelivered   bool  `json:"all_client_bytes_delivered"`

	SessionsPerSec float64 `json:"sessions_per_second"`
	RequestsPerSec float64 `json:"requests_per_second"`
	MBPerSec       float64 `json:"mb_per_second"` // 10^6 bytes, both directions
	CPUPer1k       float64 `json:"cpu_seconds_per_1000_sessions"`
	DeliveredPct   float64 `json:"delivered_percent"`

	// ChunkLateness: how late client chunks were written against their
	// schedule (the timing fidelity at --speed 1); StartLateness the same
	// for session starts.
	ChunkLateness lateness `json:"chunk_lateness"`
	StartLateness lateness `json:"start_lateness"`

	Profile string `json:"profile,omitempty"` // perf report, top symbols
}

// lateness mirrors the report's latency summaries.
type lateness struct {
	Count int64   `json:"count"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
	Maxus float64 `json:"max_us"`
}

func (r *runResult) metric(name string) float64 {
	switch name {
	case "sessions_per_second":
		return r.SessionsPerSec
	case "requests_per_second":
		return r.RequestsPerSec
	case "mb_per_second":
		return r.MBPerSec
	}
	return 0
}

// reportHead is the part of tcopy-tun's --report JSON the bench reads.
type reportHead struct {
	Summary struct {
		WallSeconds   float64          `json:"wall_seconds"`
		Planned       int64            `json:"sessions_planned"`
		Replayed      int64            `json:"sessions_replayed"`
		NotStarted    int64            `json:"sessions_not_started"`
		Succeeded     int64            `json:"sessions_succeeded"`
		FailedTotal   int64            `json:"sessions_failed"`
		Failed        map[string]int64 `json:"failed"`
		BytesSent     int64            `json:"bytes_sent"`
		BytesReceived int64            `json:"bytes_received"`
		ChunkLateness lateness         `json:"chunk_lateness"`
		StartLateness lateness         `json:"start_lateness"`
		// Live copy: packets the kernel dropped, sessions the capture
		// lacked parts of, the lag from capture to write.
		CaptureDrops int64    `json:"capture_drops"`
		Incomplete   int64    `json:"sessions_capture_incomplete"`
		LiveLag      lateness `json:"live_lag"`
	} `json:"summary"`
	Totals struct {
		Match map[string]int64 `json:"match"`
	} `json:"totals"`
}

// readReportHead decodes the summary and totals of a report without
// reading its per-session rows (a million of them for the memory workload).
func readReportHead(path string) (*reportHead, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(f, 64<<10))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("read report %q: not a JSON object", path)
	}
	var h reportHead
	var seen int
	for dec.More() && seen < 2 {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("read report %q: %w", path, err)
		}
		key, _ := tok.(string)
		switch key {
		case "summary":
			err = dec.Decode(&h.Summary)
			seen++
		case "totals":
			err = dec.Decode(&h.Totals)
			seen++
		case "sessions":
			return nil, fmt.Errorf("read report %q: sessions before summary and totals", path)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return nil, fmt.Errorf("read report %q: %s: %w", path, key, err)
		}
	}
	if seen < 2 {
		return nil, fmt.Errorf("read report %q: no summary or totals", path)
	}
	return &h, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// replayOpts are what one replay needs besides the workload.
type replayOpts struct {
	ns      *netns
	tcopy   string
	target  *target
	tmp     string
	extra   []string
	env     []string // added to the environment
	timeout time.Duration
	dumpDir string // where a hung replay's goroutine dump goes
	// quitAfter is how long after the timeout's SIGINT a replay still
	// running gets SIGQUIT (default 10 s; the command's WaitDelay, 15 s,
	// then kills it).
	quitAfter time.Duration
	profile   bool
	logf      func(string, ...any)
	capture   string
	expected  int64
	// expectedBytes is the capture's client payload: what the target must
	// receive from a complete replay (0: not checked).
	expectedBytes int64
}

// errRun marks a replay that could not be measured (not a replay with
// failed sessions, which is a result).
var errRun = errors.New("replay did not complete")

// runReplay replays the capture once through via and measures it.
func runReplay(ctx context.Context, o replayOpts, wl *workload, via string) (*runResult, error) {
	report := filepath.Join(o.tmp, fmt.Sprintf("report-%s-%s.json", wl.Name, via))
	defer os.Remove(report)
	// The bench reads only the report's summary: no per-session rows, so
	// peak RSS is the replay's own (rows cost ~250 bytes per session).
	args := []string{"--pcap", o.capture, "--target", o.target.addr, "--speed", "max", "--via", via,
		"--report", report, "--report-sessions", "-1", "--progress", "never", "-q"}
	args = append(args, wl.Args...)
	args = append(args, o.extra...)
	res := &runResult{Via: via, Args: args, Expected: o.expected, ClientBytesExpected: o.expectedBytes}

	before, err := o.target.stats()
	if err != nil {
		return nil, err
	}
	cpu0 := o.target.cpuSeconds()

	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	cmd := o.ns.command(rctx, o.tcopy, args...)
	if len(o.env) > 0 {
		cmd.Env = append(os.Environ(), o.env...)
	}
	// Large enough for a goroutine dump of a hung replay.
	stderr := &tailBuffer{max: 4 << 20}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.tcopy, err)
	}
	// A replay that outlives its timeout was sent SIGINT by the command's
	// Cancel; if it is still there 10 s later, SIGQUIT makes the Go runtime
	// print every goroutine before it exits (SIGKILL follows at 15 s): the
	// dump says where it hung.
	exited := make(chan struct{})
	dumped := make(chan bool, 1)
	go func() {
		select {
		case <-exited:
			dumped <- false
			return
		case <-rctx.Done():
		}
		if ctx.Err() != nil { // the user's interrupt, not a hang
			dumped <- false
			return
		}
		grace := o.quitAfter
		if grace <= 0 {
			grace = 10 * time.Second
		}
		select {
		case <-exited:
			dumped <- false
		case <-time.After(grace):
			dumped <- cmd.Process.Signal(syscall.SIGQUIT) == nil
		}
	}()
	var prof *perfRecording
	if o.profile {
		prof = startPerf(cmd.Process.Pid, filepath.Join(o.tmp, fmt.Sprintf("perf-%s-%s.data", wl.Name, via)), o.logf)
	}
	waitErr := cmd.Wait()
	close(exited)
	res.ProcessSeconds = time.Since(start).Seconds()
	if <-dumped && o.dumpDir != "" {
		f := filepath.Join(o.dumpDir, fmt.Sprintf("bench-hang-%s-%s.txt", wl.Name, via))
		os.MkdirAll(o.dumpDir, 0o755)
		if err := os.WriteFile(f, stderr.b, 0o644); err == nil {
			o.logf("%s via %s did not exit: its goroutines are in %s", wl.Name, via, f)
		}
	}
	if prof != nil {
		res.Profile = prof.finish()
	}
	res.TargetCPU = o.target.cpuSeconds() - cpu0
	after, err := o.target.stats()
	if err != nil {
		return nil, err
	}
	res.Requests = after.Requests - before.Requests
	// The target counts a request's bytes once it has read them, before
	// it answers, and the replay ends after the answers: by now every byte
	// that arrived is counted.
	res.TargetBytesIn = after.BytesIn - before.BytesIn
	res.TargetBytesOut = after.BytesOut - before.BytesOut
	res.AllBytesDelivered = res.ClientBytesExpected > 0 && res.TargetBytesIn == res.ClientBytesExpected

	if ps := cmd.ProcessState; ps != nil {
		res.ExitCode = ps.ExitCode()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			res.UserSeconds = time.Duration(ru.Utime.Nano()).Seconds()
			res.SysSeconds = time.Duration(ru.Stime.Nano()).Seconds()
			res.MaxRSSBytes = ru.Maxrss << 10 // KiB on Linux
		}
	}
	var ee *exec.ExitError
	// Exit 1 is a completed replay in which some sessions failed: a result.
	if waitErr != nil && !(errors.As(waitErr, &ee) && ee.ExitCode() == 1) {
		res.Error = fmt.Sprintf("%v: %s", waitErr, lastLines(stderr.b, 5))
		if rctx.Err() != nil && ctx.Err() == nil {
			res.Error = fmt.Sprintf("no exit within %v (interrupted, then killed): %s", o.timeout, lastLines(stderr.b, 5))
		}
		return res, fmt.Errorf("%w: %s via %s: %s", errRun, wl.Name, via, res.Error)
	}
	h, err := readReportHead(report)
	if err != nil {
		res.Error = err.Error()
		return res, fmt.Errorf("%w: %s via %s: %v", errRun, wl.Name, via, err)
	}
	s := h.Summary
	res.WallSeconds = s.WallSeconds
	res.Planned, res.Replayed, res.Succeeded = s.Planned, s.Replayed, s.Succeeded
	res.Failed, res.NotStarted = s.FailedTotal, s.NotStarted
	res.BytesSent, res.BytesReceived = s.BytesSent, s.BytesReceived
	res.FailedBy, res.Match = nonZero(s.Failed), nonZero(h.Totals.Match)
	res.ChunkLateness, res.StartLateness = s.ChunkLateness, s.StartLateness
	if w := res.WallSeconds; w > 0 {
		res.SessionsPerSec = float64(res.Succeeded) / w
		res.RequestsPerSec = float64(res.Requests) / w
		res.MBPerSec = float64(res.BytesSent+res.BytesReceived) / 1e6 / w
	}
	if res.Succeeded > 0 {
		res.CPUPer1k = (res.UserSeconds + res.SysSeconds) / float64(res.Succeeded) * 1000
	}
	if res.Expected > 0 {
		res.DeliveredPct = 100 * float64(res.Succeeded) / float64(res.Expected)
	}
	if res.ExitCode == 1 {
		res.Error = lastLines(stderr.b, 3)
	}
	return res, nil
}

func nonZero(m map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// perfRecording is `perf record` attached to a replay.
type perfRecording struct {
	cmd  *exec.Cmd
	file string
	logf func(string, ...any)
}

// startPerf samples pid's stacks until it exits; nil when perf is missing.
func startPerf(pid int, file string, logf func(string, ...any)) *perfRecording {
	if _, err := exec.LookPath("perf"); err != nil {
		logf("no perf on PATH: no profile")
		return nil
	}
	cmd := exec.Command("perf", "record", "-q", "-F", "1999", "-g", "-o", file, "-p", strconv.Itoa(pid))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf("perf record: %v", err)
		return nil
	}
	return &perfRecording{cmd: cmd, file: file, logf: logf}
}

// finish waits for perf to end (it does when the process it follows exits)
// and returns a summary of its report: self time by part of the program,
// then the top symbols.
func (p *perfRecording) finish() string {
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Signal(os.Interrupt)
		<-done
	}
	defer os.Remove(p.file)
	out, err := exec.Command("perf", "report", "-i", p.file, "--stdio", "--no-children", "-g", "none",
		"-F", "overhead,dso,sym", "--percent-limit", "0").Output()
	if err != nil {
		p.logf("perf report: %v", err)
		return ""
	}
	return summarizePerf(string(out), 25)
}

// summarizePerf turns `perf report -F overhead,dso,sym` output into self
// time per part (kernel, Go runtime, gVisor, each tcopy-tun package, the
// rest of Go's library) and the top symbols.
func summarizePerf(report string, top int) string {
	type sym struct {
		pct  float64
		line string
	}
	parts := map[string]float64{}
	var syms []sym
	for _, l := range strings.Split(report, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		f := strings.Fields(t)
		if len(f) < 4 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		name := strings.Join(f[3:], " ")
		parts[perfPart(f[1], name)] += pct
		syms = append(syms, sym{pct, fmt.Sprintf("%6.2f%%  %s", pct, name)})
	}
	if len(syms) == 0 {
		return ""
	}
	var b strings.Builder
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return parts[keys[i]] > parts[keys[j]] })
	b.WriteString("  by part:")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s %.1f%%;", k, parts[k])
	}
	b.WriteString("\n  top symbols:\n")
	sort.SliceStable(syms, func(i, j int) bool { return syms[i].pct > syms[j].pct })
	for i := 0; i < len(syms) && i < top; i++ {
		b.WriteString("  " + syms[i].line + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// perfPart names the part of the program a sampled symbol belongs to.
func perfPart(dso, name string) string {
	const mod = "github.com/tcopy-tun/tcopy-tun/"
	switch {
	case strings.Contains(dso, "kernel"):
		return "kernel"
	case strings.HasPrefix(name, mod):
		pkg := strings.TrimPrefix(name, mod)
		if i := strings.IndexAny(pkg, ".("); i >= 0 {
			pkg = pkg[:i]
		}
		return "tcopy-tun/" + strings.TrimSuffix(pkg, "/")
	case strings.HasPrefix(name, "gvisor.dev/"):
		return "gVisor"
	case strings.HasPrefix(name, "runtime.") || strings.HasPrefix(name, "internal/runtime") ||
		strings.HasPrefix(name, "aeshash") || strings.HasPrefix(name, "gcWriteBarrier") || strings.HasPrefix(name, "memeqbody"):
		return "Go runtime"
	case strings.Contains(dso, "vdso"):
		return "vdso"
	}
	return "Go library/other"
}
