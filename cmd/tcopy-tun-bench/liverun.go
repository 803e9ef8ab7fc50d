package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The live workload's set-up, inside the bench's namespace:
//
//	load ──▶ source (tcopy-tun-bench serve on liveSourceAddr, a dummy interface)
//	          │ the kernel carries it over lo
//	          ▼
//	tcopy-tun --live lo --server liveSourceAddr --target <target> --via tun|socket
//	          ▼
//	        target (the bench's own, 127.0.0.1:8080)
//
// The source is on a port of its own, so the capture's port filter leaves
// the replay's own traffic to the target (over lo with --via socket) in the
// kernel.
//
// The load comes from 1,000 client addresses of liveClientNet, as the short
// capture's sessions do (a local route on lo makes them the namespace's
// own), and the source thinks for the capture's think time before each
// answer: the sessions have the capture's shape, so the causal order and
// the per-host peer rule constrain the live replay as they do the offline
// one. (From one address with instant answers, every session would start
// after the previous one ended: the replay would be serial by causal order,
// unlike the capture it is compared with.)
const (
	liveSourceIf   = "src0"
	liveSourcePfx  = "10.99.0.1/24"
	liveSourceAddr = "10.99.0.1:9080"
	liveClientNet  = "10.98.0.0/16"
)

// liveEnv is what the steps share: the source server and the parameters.
type liveEnv struct {
	ns      *netns
	self    string
	tcopy   string
	source  *target
	target  *target
	tmp     string
	extra   []string
	env     []string
	spec    liveSpec
	clients int   // client addresses of the load (the short capture's)
	body    int64 // answer body size (the short capture's)
	logf    func(string, ...any)
	timeout time.Duration // bound on one tcopy-tun process
	profile bool          // sample tcopy-tun with perf in each step
}

// addDummy creates interface name, up, with prefix: a local address that
// is not loopback, for the source server (a dummy interface, else ifb or
// bridge where the kernel lacks dummy; for a local address they behave the
// same).
func (n *netns) addDummy(ctx context.Context, name, prefix string) error {
	var errs []string
	for _, kind := range []string{"dummy", "ifb", "bridge"} {
		out, err := n.ip(ctx, "link", "add", name, "type", kind).CombinedOutput()
		if err != nil {
			errs = append(errs, kind+": "+string(bytes.TrimSpace(out)))
			continue
		}
		for _, args := range [][]string{{"link", "set", name, "up"}, {"addr", "add", prefix, "dev", name}} {
			if out, err := n.ip(ctx, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("namespace %s: ip %s: %v: %s", n.name, strings.Join(args, " "), err, bytes.TrimSpace(out))
			}
		}
		return nil
	}
	return fmt.Errorf("namespace %s: add interface %s: no dummy, ifb or bridge driver: %s", n.name, name, strings.Join(errs, "; "))
}

// runLive is the live workload: for each path, the search, then the
// offline reference and the ratio. offline returns the offline replay rate
// of the short capture through a path (and where it came from).
func (h *harness) runLive(ctx context.Context, e *liveEnv, wr *workloadResult, offline func(via string) (rate, cpuPer1k float64, from string, err error)) (failed bool) {
	for _, via := range h.opts.vias {
		if ctx.Err() != nil {
			return failed
		}
		h.logf("live %-6s searching the highest rate followed with no kernel drop (at most %d steps of %v)", via, e.spec.maxSteps(), e.spec.Trial)
		n := 0
		ls, err := searchRate(e.spec, func(rate float64) (*liveStep, error) {
			n++
			st, err := e.step(ctx, via, rate)
			if st != nil {
				st.judge(e.spec.LagBound)
				h.logf("live %-6s step %d: %s", via, n, st.line())
				if st.Profile != "" {
					fmt.Fprintf(h.stderr, "perf, live step %d via %s (self time by symbol):\n%s\n", n, via, st.Profile)
				}
			}
			return st, err
		})
		ls.Via = via
		wr.Live = append(wr.Live, ls)
		if err != nil {
			if ctx.Err() != nil {
				return failed
			}
			ls.Error = err.Error()
			h.logf("live %s: %v", via, err)
			failed = true
			continue
		}
		off, offCPU, from, err := offline(via)
		if err != nil {
			if ctx.Err() != nil {
				return failed
			}
			ls.Error = err.Error()
			h.logf("live %s: offline reference: %v", via, err)
			failed = true
			continue
		}
		ls.Offline, ls.OfflineFrom, ls.OfflineCPUPer1k = off, from, offCPU
		if off > 0 {
			ls.Ratio = ls.Achieved / off
		}
		if b := ls.best(); b != nil && b.LoadOK > 0 {
			ls.OthersCPUPer1k = (b.LoadCPU + b.SourceCPU) / float64(b.LoadOK) * 1000
		}
		h.logf("live %-6s followed up to %.0f/s (load %.0f/s); offline %.0f/s (%s): ratio %.2f", via, ls.MaxFollowed, ls.Achieved, off, from, ls.Ratio)
		if via == "tun" {
			met := ls.Ratio >= 0.8
			got := fmt.Sprintf("%.2f (%.0f of %.0f sessions/s)", ls.Ratio, ls.Achieved, off)
			if ls.AtCeiling {
				got += ", at the search's ceiling"
			}
			wr.Targets = append(wr.Targets, goalResult{What: "live copy with 0 drops ≥ 0.8 × offline via tun (issue 13)", Got: got, Met: met})
		}
	}
	return failed
}

// step runs the load at rate with tcopy-tun copying it live through via,
// and measures it. A step that ran, whatever its verdict, returns no
// error; an error means it could not be run (or was interrupted).
func (e *liveEnv) step(ctx context.Context, via string, rate float64) (*liveStep, error) {
	st := &liveStep{Via: via, RateAsked: rate}
	report := filepath.Join(e.tmp, fmt.Sprintf("report-live-copy-%s.json", via))
	defer os.Remove(report)
	args := []string{"--live", "lo", "--server", liveSourceAddr, "--target", e.target.addr, "--via", via,
		"--report", report, "--report-sessions", "-1", "--progress", "never", "-q"}
	args = append(args, e.extra...)

	tb, err := e.target.stats()
	if err != nil {
		return nil, err
	}
	tcpu, scpu := e.target.cpuSeconds(), e.source.cpuSeconds()
	rctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	cmd := e.ns.command(rctx, e.tcopy, args...)
	if len(e.env) > 0 {
		cmd.Env = append(os.Environ(), e.env...)
	}
	stderr := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", e.tcopy, err)
	}
	// From here on the process is waited for on every path.
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Signal(os.Interrupt)
			<-done // bounded: the command's timeout, then WaitDelay's kill
		}
	}()
	if err := waitLiveReady(ctx, cmd.Process.Pid, via, done, 10*time.Second); err != nil {
		if errors.Is(err, errExited) {
			return nil, fmt.Errorf("live %s: tcopy-tun exited before it was ready (%v): %s", via, waitErr, lastLines(stderr.b, 5))
		}
		return nil, fmt.Errorf("live %s: %w", via, err)
	}

	// The set-up's CPU (TUN, netstack, the runtime's start) is not the
	// copy's: it is taken off the total.
	setupCPU := procCPUSeconds(cmd.Process.Pid)
	var prof *perfRecording
	if e.profile {
		// From the end of the set-up: the profile is the copy's.
		prof = startPerf(cmd.Process.Pid, filepath.Join(e.tmp, fmt.Sprintf("perf-live-%s.data", via)), e.logf)
		defer func() {
			if prof != nil {
				prof.finish()
			}
		}()
	}
	busy0, total0 := machineTicks()
	lr, loadCPU, err := e.runLoad(ctx, rate)
	if err != nil {
		return nil, err
	}
	if busy1, total1 := machineTicks(); total1 > total0 {
		st.MachineBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	st.RateAchieved, st.LoadStarted, st.LoadOK, st.LoadFailed, st.LoadMissed, st.LoadError = lr.Achieved, lr.Started, lr.OK, lr.Failed, lr.Missed, lr.FirstErr
	st.LoadCPU, st.LoadWall = loadCPU, lr.Seconds

	// Let the copy catch up: wait (bounded) until the target has answered
	// as many requests as the load made, then stop the capture.
	for deadline := time.Now().Add(e.spec.Settle); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		s, err := e.target.stats()
		if err != nil {
			return nil, err
		}
		if s.Requests-tb.Requests >= lr.OK {
			break
		}
	}
	stopped := time.Now()
	cmd.Process.Signal(os.Interrupt)
	<-done
	werr := waitErr
	st.StopToExit = time.Since(stopped).Seconds()
	if prof != nil {
		st.Profile, prof = prof.finish(), nil
	}
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	st.TargetCPU, st.SourceCPU = e.target.cpuSeconds()-tcpu, e.source.cpuSeconds()-scpu
	ta, err := e.target.stats()
	if err != nil {
		return nil, err
	}
	st.TargetRequests = ta.Requests - tb.Requests
	if ps := cmd.ProcessState; ps != nil {
		st.ExitCode = ps.ExitCode()
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			st.CPU = max(time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds()-setupCPU, 0)
			st.MaxRSS = ru.Maxrss << 10
		}
	}
	if lr.Seconds > 0 {
		st.CPUShare = st.CPU / lr.Seconds
	}
	if lr.OK > 0 {
		st.CPUPer1k = st.CPU / float64(lr.OK) * 1000
	}
	var ee *exec.ExitError
	if werr != nil && !(errors.As(werr, &ee) && ee.ExitCode() == 1) {
		// Exit 1 is a copy in which some sessions failed: a result. Else
		// the step did not complete; the search goes on (it did not
		// follow).
		st.Error = fmt.Sprintf("tcopy-tun: %v: %s", werr, lastLines(stderr.b, 3))
		if rctx.Err() != nil {
			st.Error = fmt.Sprintf("tcopy-tun did not exit within %v: %s", e.timeout, lastLines(stderr.b, 3))
		}
		return st, nil
	}
	rh, err := readReportHead(report)
	if err != nil {
		st.Error = err.Error()
		return st, nil
	}
	s := rh.Summary
	st.CaptureDrops, st.Incomplete, st.Lag = s.CaptureDrops, s.Incomplete, s.LiveLag
	st.Replayed, st.Succeeded, st.Failed, st.NotStarted = s.Replayed, s.Succeeded, s.FailedTotal, s.NotStarted
	return st, nil
}

// runLoad runs `tcopy-tun-bench load` in the namespace against the source
// and returns its result and CPU time.
func (e *liveEnv) runLoad(ctx context.Context, rate float64) (loadResult, float64, error) {
	var lr loadResult
	// Bounded in count and time: rate × trial sessions at most, and the
	// process is interrupted (then killed) if it outlives the trial by a
	// minute.
	n := int64(rate*e.spec.Trial.Seconds()) + 1
	lctx, cancel := context.WithTimeout(ctx, e.spec.Trial+time.Minute)
	defer cancel()
	cmd := e.ns.command(lctx, e.self, "load", "-addr", liveSourceAddr, "-rate", strconv.FormatFloat(rate, 'f', -1, 64),
		"-duration", e.spec.Trial.String(), "-n", strconv.FormatInt(n, 10),
		"-client-net", liveClientNet, "-clients", strconv.Itoa(e.clients), "-body", strconv.FormatInt(e.body, 10))
	var out bytes.Buffer
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = &out, stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return lr, 0, ctx.Err()
		}
		return lr, 0, fmt.Errorf("load at %.0f/s: %v: %s", rate, err, lastLines(stderr.b, 3))
	}
	if err := json.Unmarshal(out.Bytes(), &lr); err != nil {
		return lr, 0, fmt.Errorf("load at %.0f/s: its result %q: %w", rate, out.String(), err)
	}
	var cpu float64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return lr, cpu, nil
}

var errExited = errors.New("exited")

// waitLiveReady waits until tcopy-tun (pid) copies: its packet socket is
// open (the capture buffers from then on) and, through the TUN, its device
// exists (it is opened after the capture; the replay starts right after).
// Both are read from /proc/<pid>, which shows the process's namespace.
func waitLiveReady(ctx context.Context, pid int, via string, exited <-chan struct{}, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		if ok, _ := packetSocketOpen(pid); ok && (via != "tun" || tunUp(pid)) {
			// A moment for the replay to start reading after its set-up.
			time.Sleep(100 * time.Millisecond)
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tcopy-tun (pid %d) was not capturing after %v", pid, bound)
		}
	}
}

// packetSocketOpen reports whether pid holds an AF_PACKET socket: one of
// its fds is a socket whose inode /proc/<pid>/net/packet lists.
func packetSocketOpen(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/packet", pid))
	if err != nil {
		return false, err
	}
	inodes := map[string]bool{}
	for i, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) == 0 {
			continue // header
		}
		inodes[f[len(f)-1]] = true
	}
	if len(inodes) == 0 {
		return false, nil
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		if in, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(in, "]")] {
			return true, nil
		}
	}
	return false, nil
}

// tunUp reports whether the namespace of pid has the TUN device
// (tcopy-tun's default name) up.
func tunUp(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	return err == nil && bytes.Contains(b, []byte("tcopy0:"))
}

// startLive sets up what every live step shares: the source's address
// and the source server, in the namespace.
func (h *harness) startLive(ctx context.Context, ns *netns, self string, tgt *target, tmp string, w *workload) (*liveEnv, error) {
	if err := ns.addDummy(ctx, liveSourceIf, liveSourcePfx); err != nil {
		return nil, fmt.Errorf("live: %w", err)
	}
	if out, err := ns.ip(ctx, "route", "add", "local", liveClientNet, "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("live: namespace %s: ip route add local %s dev lo: %v: %s", ns.name, liveClientNet, err, bytes.TrimSpace(out))
	}
	src, err := startTarget(ctx, ns, self, liveSourceAddr, "-think", w.Capture.Think.String())
	if err != nil {
		return nil, fmt.Errorf("live: source server: %w", err)
	}
	return &liveEnv{ns: ns, self: self, tcopy: h.opts.tcopy, source: src, target: tgt, tmp: tmp,
		extra: h.opts.extra, env: h.opts.env, spec: *w.Live, logf: h.logf, clients: w.Capture.Clients, body: w.Capture.Body, profile: h.opts.profile,
		// Readiness (10 s), the load, the settling, the exit: far
		// beyond a healthy step, short enough that a hung one ends.
		timeout: w.Live.Trial + w.Live.Settle + 90*time.Second}, nil
}

// offlineRate is the offline replay rate (sessions/s at --speed max) of
// the short workload's capture through via: the short workload's median
// from this run when it ran before with the same capture, else the median
// of runs replays made here.
func (h *harness) offlineRate(ctx context.Context, rep *benchReport, ro replayOpts, w *workload, via string, runs int) (rate, cpuPer1k float64, from string, err error) {
	for _, wr := range rep.Workloads {
		if wr.Name != "short" || wr.Capture.key() != w.Capture.key() {
			continue
		}
		r := wr.Tun
		if via == "socket" {
			r = wr.Socket
		}
		if r != nil && r.Error == "" && r.SessionsPerSec > 0 {
			return r.SessionsPerSec, r.CPUPer1k, "short workload of this run", nil
		}
	}
	m, err := replayMedian(ctx, ro, w, via, runs, "sessions_per_second", func(res *runResult) {
		h.logf("live %-6s offline reference: %s", via, res.line())
	})
	if errors.Is(err, errNoMedian) {
		return 0, 0, "", fmt.Errorf("offline reference via %s: %w", via, err)
	}
	if err != nil {
		return 0, 0, "", err
	}
	return m.SessionsPerSec, m.CPUPer1k, fmt.Sprintf("short capture replayed here, median of %d", runs), nil
}

// errNoMedian: none of the runs completed.
var errNoMedian = errors.New("no completed replay")

// replayMedian replays w's capture runs times through via (logged one by
// one with logRun) and returns the median run by metric.
func replayMedian(ctx context.Context, ro replayOpts, w *workload, via string, runs int, metric string, logRun func(*runResult)) (*runResult, error) {
	var rs []*runResult
	for i := 0; i < runs && ctx.Err() == nil; i++ {
		res, err := runReplay(ctx, ro, w, via)
		if err != nil {
			return nil, err
		}
		logRun(res)
		rs = append(rs, res)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	m := median(rs, via, metric)
	if m == nil {
		return nil, errNoMedian
	}
	return m, nil
}

// machineTicks returns the busy and total CPU ticks of the whole machine
// so far, from /proc/stat's first line (every core; not namespaced, so
// other work on the host shows too). Busy is everything but idle and
// iowait.
func machineTicks() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0
		}
		if i >= 7 { // guest time is already counted in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}
