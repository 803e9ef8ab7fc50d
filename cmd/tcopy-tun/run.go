package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/netstack"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/agent"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/tun"
)

// The netstack's conns are what the replay engine polls without a reader
// goroutine; this is where the two meet, so the promise is checked here.
var _ replay.PollConn = (*netstack.Conn)(nil)

// runReplay is the main command: tcopy-tun --pcap FILE --target IP:PORT.
func runReplay(e env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	f, err := parseReplayFlags(args, e.stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: %v\nhint: 'tcopy-tun --help' lists the flags\n", err)
		return exitUsage
	}
	e = withLog(e, f.logFormat)
	if f.cpuProfile != "" {
		stop, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			fmt.Fprintf(e.stderr, "tcopy-tun: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer stop()
	}
	if !f.endless() {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return replayJob(ctx, e, f, nil)
	}
	// Live copy (an interface, capture agents) runs until stopped: the
	// first SIGINT/SIGTERM (or --duration) ends the capture and lets the
	// sessions in flight finish, a second one aborts them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.stopLive = make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var timeout <-chan time.Time
	if f.duration > 0 {
		timeout = time.After(f.duration)
	}
	go func() {
		select {
		case <-sigs:
			logf(e, "stopping the live capture; sessions in flight finish (signal again to abort them)")
		case <-timeout:
		case <-ctx.Done():
			return
		}
		close(f.stopLive)
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return replayJob(ctx, e, f, nil)
}

// replayMetrics is the replay's Metrics hook: nil without --metrics (a nil
// *metrics.Exporter in the interface would not be).
func replayMetrics(f *replayFlags) replay.Metrics {
	if f.metrics == nil {
		return nil
	}
	return f.metrics
}

// startCPUProfile profiles the process into file until the returned stop
// is called.
func startCPUProfile(file string) (stop func(), err error) {
	out, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		out.Close()
	}, nil
}

// replayJob runs one replay with parsed flags: it opens the capture, sets up
// the path (TUN + netstack, or kernel sockets), replays, reports and undoes
// everything it set up. onDone, if set, is called after the replay with the
// result (the demo uses it to show the server's side).
func replayJob(ctx context.Context, e env, f *replayFlags, onDone func(*runResult)) int {
	// The outputs exist before anything is set up or sent: a path that
	// cannot be written is refused now, not after the replay.
	outs, err := openOutputs(e, f)
	if err != nil {
		fail(e, err)
		return exitUsage
	}
	defer outs.discard()
	if f.metricsAddr != "" {
		stop, err := startMetrics(e, f)
		if err != nil {
			fail(e, err)
			return exitUsage
		}
		defer stop()
	}
	sel := newSelection(f)
	res, err := replayOnce(ctx, e, f, sel, outs)
	if err == nil && res.summary.Read == 0 && ctx.Err() == nil {
		// Nothing matched the target's port: if the capture holds exactly
		// one server, that is the one meant ("or the only server in the
		// capture"). The first pass saw the servers; a second one replays
		// it (a file can be read again).
		if server, ok := sel.fallback(f, res.seen); ok {
			logf(e, "no captured server on %s; replaying the only server in the capture, %s", sel, server)
			sel = onlyServer(server)
			res, err = replayOnce(ctx, e, f, sel, outs)
		}
	}
	if err == nil && res.summary.Read == 0 && ctx.Err() == nil {
		err = inputError{noSessionsError(f, sel, res.capStats, res.seen)}
	}
	if err != nil {
		fail(e, err)
		return exitCodeFor(err)
	}
	// The stack that fed the capture is closed (replayOnce's cleanup): its
	// last packets, the RSTs of an interrupted run's connections among
	// them, are in the queue that closing the capture writes out.
	pcapStats, pcapErr := outs.closePcap()
	if outs.pcap != nil {
		res.pcap = &pcapResult{name: f.writePcap, stats: pcapStats}
	}
	if !f.quiet {
		if f.logFormat == logJSON {
			logSummary(e, res)
		} else {
			writeSummary(e.stderr, res)
		}
	}
	if res.pcap != nil && res.pcap.stats.Dropped > 0 {
		hint := ""
		if f.pcapSnap == 0 {
			hint = " (--write-pcap-snaplen 128 keeps each packet's headers only, at a fraction of the cost)"
		}
		warnf(e, "--write-pcap: %d packets (%d bytes) are missing from %s: its writer could not keep up%s", res.pcap.stats.Dropped, res.pcap.stats.DroppedBytes, f.writePcap, hint)
	}
	if err := writeOutputs(outs, res); err != nil {
		fail(e, err)
		return exitFailure
	}
	if pcapErr != nil {
		fail(e, pcapErr)
		return exitFailure
	}
	if ctx.Err() != nil {
		logf(e, "interrupted: %d sessions aborted or not started; the host is cleaned up", res.summary.NotStarted+res.summary.Failed.Canceled)
	}
	if s := res.summary; s.Replayed > 0 && s.Succeeded == 0 && s.Failed.Refused == s.Replayed {
		logf(e, "every connection was refused: is the target listening on %s?", targetsString(f))
	} else if s.Replayed > 0 && s.Succeeded == 0 && s.Failed.Timeout == s.Replayed && f.via == "tun" {
		if f.forward {
			logf(e, "no connection got an answer: does the target's host route the client range back to this host, and accept connections from it?")
		} else {
			logf(e, "no connection got an answer from %s: is a firewall dropping the client range, or is policy routing (ip rule) sending replies elsewhere?", targetsString(f))
		}
	}
	if onDone != nil {
		onDone(res)
	}
	code := res.exitCode(ctx)
	if code == exitOK && res.report != nil && res.report.out != nil {
		// A run that completed can still fail its comparison: answers that
		// regressed from the baseline's, or a target slower than
		// --fail-slower allows. Without --baseline, answers that differ
		// from the capture are reported but do not fail the run: a fresh
		// server seldom answers exactly as the captured one did (ids,
		// order-dependent counters), and only a baseline tells noise
		// from a regression.
		out := res.report.out
		if n := out.Requests.Regressions; n > 0 && f.baseline.IsValid() {
			logf(e, "%d requests regressed (answers differ from the %s beyond noise and --ignore rules)", n, out.Requests.Against)
			code = exitFailure
		}
		if f.failSlower > 0 {
			rt := out.ResponseTime
			ref := rt.Captured
			if f.baseline.IsValid() {
				ref = rt.Baseline
			}
			if rt.Replayed.Count == 0 || ref.Count == 0 {
				logf(e, "--fail-slower: no response times of the target and the %s to compare (no request was answered on both)", rt.Ratio.Against)
			} else if rt.Replayed.P99US > f.failSlower*ref.P99US {
				logf(e, "the target is slower than --fail-slower %g allows: p99 %.0f µs against the %s's %.0f µs", f.failSlower, rt.Replayed.P99US, rt.Ratio.Against, ref.P99US)
				code = exitFailure
			}
		}
	}
	return code
}

func targetsString(f *replayFlags) string {
	var t []string
	if f.target.IsValid() {
		t = append(t, f.target.String())
	}
	for _, v := range f.maps {
		t = append(t, v.String())
	}
	return strings.Join(t, ", ")
}

// runResult is what one replay produced.
type runResult struct {
	summary    *replay.Summary
	report     *report
	capStats   capture.Stats
	buildStats session.Stats
	seen       *serversSeen // the captured servers of the connections read, selected or not
	agents     *agent.Stats // capture agents (--pcap-listen, --pcap tcp://), else nil
	pcap       *pcapResult  // --write-pcap, nil without it
	tls        *tlsRun      // TLS decryption and the target's TLS, nil when off
}

// pcapResult is what --write-pcap wrote.
type pcapResult struct {
	name  string
	stats intercept.PcapStats
}

func (r *runResult) exitCode(ctx context.Context) int {
	if ctx.Err() != nil {
		return exitSignaled
	}
	s := r.summary
	if s.Read == 0 {
		return exitInput
	}
	if s.Failed.Total() > 0 || s.NotStarted > 0 {
		return exitFailure
	}
	return exitOK
}

// replayOnce replays the capture with the selection sel: --loop passes
// over it.
func replayOnce(ctx context.Context, e env, f *replayFlags, sel selection, outs *outputs) (*runResult, error) {
	src, err := openSource(e, f, sel)
	if err != nil {
		return nil, inputError{err}
	}
	if m, ok := src.(*agent.Merger); ok && f.metrics != nil {
		f.metrics.WatchAgents(m)
	}
	// replayOnce owns the source: it closes it after the last pass (and
	// each one before the next pass opens the capture again). Only
	// pumpLive ends a live source earlier, itself (see there). A source
	// still in use by a detached reader (standard input, after an
	// interrupt) is not closed: its reader may still be in ReadFrame, and
	// the process is about to exit.
	detached := false
	defer func() {
		if !detached {
			src.Close()
		}
	}()

	var tap netstack.Tap
	if outs.pcap != nil {
		tap = outs.pcap
	}
	dialer, cleanup, err := setupPath(e, f, tap)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	tr, err := newTLSRun(&f.tls)
	if err != nil {
		return nil, usageError{err}
	}

	rep := newReport(f)
	obs := rep.observer()
	if outs.pcap != nil {
		// Each connection's first packet in the capture names its session.
		obs = outs.pcap.Observe(obs)
	}
	cfg := replay.Config{
		Dialer:         dialer,
		Target:         f.target,
		Map:            f.maps,
		Baseline:       f.baseline,
		Speed:          f.speed,
		KeepClientIP:   f.keepIP,
		RunID:          f.runID,
		DialTimeout:    f.dialTimeout,
		TurnTimeout:    f.turnTimeout,
		QuietTimeout:   f.quietTimeout,
		SessionTimeout: f.sessionTimeout,
		MaxSessions:    f.maxSessions,
		NoCausalOrder:  f.noCausal,
		Rate:           f.rate,
		Multiply:       f.multiply,
		Sample:         f.sample,
		Shard:          f.shard,
		Duration:       f.duration,
		Live:           f.endless(), // an interface or capture agents: never make the capture wait
		Observer:       obs,
		Metrics:        replayMetrics(f),
		Logf:           func(format string, args ...any) { warnf(e, format, args...) },
	}
	for _, p := range f.nets {
		if p.Addr().Is4() {
			cfg.ClientNet4 = p
		} else {
			cfg.ClientNet6 = p
		}
	}
	if tr != nil {
		cfg.WrapConn = tr.wrapConn
		tr.warn = func(format string, args ...any) { warnf(e, format, args...) }
	}
	runner, err := replay.New(cfg)
	if err != nil {
		return nil, usageError{err}
	}

	if f.metrics != nil {
		f.metrics.Watch(runner, rep.rec)
	}
	res := &runResult{report: rep, seen: newServersSeen(sel), tls: tr}
	scfg := sessionConfig(f, res.seen)
	prog := startProgress(e, f, runner)
	var runErr error
	for pass := 0; pass < f.loop && ctx.Err() == nil; pass++ {
		if pass > 0 {
			if runner.Summary().Read == 0 {
				break // the first pass read no session: no later one would
			}
			// A later pass reads the capture again (fresh client addresses
			// come from the runner). Standard input cannot be read twice.
			src.Close()
			next, err := capture.Open(f.pcap)
			if err != nil {
				runErr = inputError{err}
				break
			}
			src = next
		}
		detached, runErr = replayPass(ctx, runner, src, f, scfg, res)
		if runErr != nil || detached {
			break
		}
	}
	prog.stop()
	res.summary = runner.Summary()
	if dc, ok := src.(capture.DropCounter); ok {
		// Read after the capture stopped: the count is final.
		if n, err := dc.Drops(); err == nil && n > 0 {
			res.summary.CaptureDrops = int64(n)
			warnf(e, "the kernel dropped %d packets of the live capture on %s (--live-buffer %s was full): the sessions they hurt are marked capture-incomplete or carry holes in the report",
				n, f.live, byteSizeFlag(f.liveBuf))
		}
	}
	rep.finish(res)
	if m, ok := src.(*agent.Merger); ok {
		m.Close() // ended by the pass already, unless it failed; Stats then has every end
		st := m.Stats()
		res.agents = &st
		rep.addAgents(res.agents)
	}
	rep.addTLS(res.tls)
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return nil, runErr
	}
	return res, nil
}

// replayPass streams the sessions of one reading of the capture to the
// runner: the session builder runs on the runner's producer side and hands
// each session over when it starts in the capture. The runner's
// backpressure (blocking the builder's calls) keeps memory to what is in
// flight. detached says that a reader goroutine still uses src (see
// pumpLive).
func replayPass(ctx context.Context, runner *replay.Runner, src capture.Source, f *replayFlags, scfg session.Config, res *runResult) (detached bool, err error) {
	var readErr error
	err = runner.Stream(ctx, func(ctx context.Context, sink session.Sink) error {
		r := capture.NewReader(src, f.sourceName())
		meter := newCaptureMeter(f, r, src)
		if t := res.tls; t != nil {
			t.watchSecrets(src)
			// The decryption needs every server record (to decrypt the
			// answers and to translate what each request waited for into
			// plaintext bytes): the builder keeps the whole server
			// stream and --response-limit cuts the plaintext after it.
			sink = t.wrapSink(session.LimitServer(sink, scfg.ServerDataLimit))
			scfg.ServerDataLimit = math.MaxInt64
		}
		b := passBuilder{session.NewBuilder(scfg, sink), res.seen, meter}
		switch {
		case f.endless():
			// The first signal or --duration (f.stopLive) ends the live
			// capture as the runner's own --duration does: no session
			// starts any more (those waiting count as not started) and
			// pumpLive's context is canceled (pumpLive then closes the
			// source, and b.Close below ends the connections still open
			// as capture end), so the sessions in flight finish promptly
			// with what they have. This goroutine only stops; it
			// returns with the pass.
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-f.stopLive:
					runner.StopAdmitting()
					cancel()
				case <-ctx.Done():
				}
			}()
			readErr, detached = pumpLive(ctx, r, b, src.Close)
		case scfg.Live:
			readErr, detached = pumpLive(ctx, r, b, nil)
		default:
			readErr = readCapture(ctx, r, b)
		}
		// Sessions still open end here, as "capture end": also after a
		// stop (--duration, the first signal), so that the sessions in
		// flight finish with what they have instead of waiting for more.
		b.Close()
		if !detached {
			res.capStats = r.Stats()
		}
		meter.end(!detached)
		res.buildStats = b.Stats()
		return nil
	})
	if readErr != nil {
		return detached, inputError{readErr}
	}
	return detached, err
}

// passBuilder is the session builder of a pass, with the record of the
// servers its connections have: Add tells it after each segment (see
// serversSeen).
type passBuilder struct {
	*session.Builder
	seen  *serversSeen
	meter *captureMeter // nil without --metrics; its read goes before each r.Next
}

func (b passBuilder) Add(p *capture.Packet) {
	b.Builder.Add(p)
	b.seen.added()
}

// readCapture adds the segments of a capture file to b until its end or until
// ctx is done.
func readCapture(ctx context.Context, r *capture.Reader, b passBuilder) error {
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil
		}
		b.meter.read()
		p, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		b.Add(p)
	}
}

// liveTick is how often capture time moves on by itself on a quiet wire:
// pending chunks are sealed after their merge window (1 ms) and idle
// sessions expire although no packet comes.
const liveTick = 2 * time.Millisecond

// How long pumpLive waits, once ctx is done, for its reader goroutine: one
// it cannot wake (standard input) to finish by itself, or one it has woken
// (a live source) to hand over what it had read and its io.EOF.
const (
	detachGrace = 100 * time.Millisecond
	endGrace    = time.Second
)

// pumpLive adds the segments of a capture that is happening (a live
// interface, standard input) to b. A reader goroutine reads them; this
// goroutine adds them and, when the wire is quiet, moves capture time on
// with the wall clock (Builder.Advance). It returns at the end of the
// input, or when ctx is done.
//
// A live interface has no end of its own: ctx ends it (the first signal,
// --duration, an abort), and end is its source's Close. A capture.Source is
// not safe for concurrent use, but the live source's Close is the
// documented exception (capture.OpenLive): it may be called while ReadFrame
// waits in another goroutine, which then returns io.EOF. So pumpLive calls
// it here, while the reader goroutine reads, and then adds what that
// goroutine had read until the io.EOF.
//
// Standard input (end nil) has no such Close: closing the source under a
// ReadFrame would be a data race and would not wake it. When ctx is done
// its reader goroutine stays blocked until the process exits (unless the
// input ends within detachGrace), and detached says that r, and the source
// under it, are still in use: the caller must not close them. (A live
// reader that endGrace after the Close has not returned is left the same
// way.)
func pumpLive(ctx context.Context, r *capture.Reader, b passBuilder, end func() error) (err error, detached bool) {
	if end != nil && r.SetReadDeadline(time.Now().Add(liveTick)) == nil {
		return pumpDeadline(ctx, r, b, end), false
	}
	type item struct {
		p   capture.Packet
		err error
	}
	pkts := make(chan item, 256)
	stop := make(chan struct{})
	defer close(stop)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			b.meter.read()
			p, err := r.Next()
			var it item
			if err != nil {
				it.err = err
			} else {
				it.p = *p
				it.p.Payload = append([]byte(nil), p.Payload...) // r reuses its buffer
			}
			select {
			case pkts <- it:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(liveTick)
	defer tick.Stop()
	var last time.Time // capture time of the last packet
	var lastWall time.Time
	done := ctx.Done()
	var ended <-chan time.Time // set once end has been called
	for {
		select {
		case it := <-pkts:
			if it.err != nil {
				if errors.Is(it.err, io.EOF) {
					return nil, false
				}
				return it.err, false
			}
			b.Add(&it.p)
			if it.p.Time.After(last) {
				last, lastWall = it.p.Time, time.Now()
			}
		case now := <-tick.C:
			if !last.IsZero() {
				// Capture time runs with the wall clock since the last
				// packet: right for a live interface, and for a stream
				// from a host whose clock differs.
				b.Advance(last.Add(now.Sub(lastWall)))
			}
		case <-done:
			if end == nil {
				select {
				case <-readerDone:
					return nil, false
				case <-time.After(detachGrace):
					return nil, true
				}
			}
			end() // wakes the reader: its next item is io.EOF
			done, ended = nil, time.After(endGrace)
		case <-ended:
			return nil, true
		}
	}
}

// pumpDeadline is pumpLive for a live source, on one goroutine: the
// source's read deadline wakes it every liveTick on a quiet wire, so a
// segment goes from the socket to the builder without a hand-off between
// goroutines (one less wake-up on the way of every request, measured in
// Summary.LiveLag). end (the source's Close) runs here, on this goroutine,
// once ctx is done; the reads after it return io.EOF.
func pumpDeadline(ctx context.Context, r *capture.Reader, b passBuilder, end func() error) error {
	var last, lastWall time.Time // capture and wall time of the last packet
	tick := time.Now().Add(liveTick)
	stopped := false
	for {
		if !stopped && ctx.Err() != nil {
			end()
			stopped = true
		}
		b.meter.read()
		p, err := r.Next()
		switch {
		case err == nil:
			b.Add(p)
			if p.Time.After(last) {
				last, lastWall = p.Time, time.Now()
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
		if now := time.Now(); !now.Before(tick) {
			if !last.IsZero() {
				b.Advance(last.Add(now.Sub(lastWall)))
			}
			tick = now.Add(liveTick)
			if err := r.SetReadDeadline(tick); err != nil && !stopped {
				return err
			}
		}
	}
}

// openSource opens the capture file or stream, the live interface
// (filtered to the selected ports), or the capture agents' merge.
func openSource(e env, f *replayFlags, sel selection) (capture.Source, error) {
	switch {
	case f.pcapListen != "":
		opt := f.agents
		opt.Logf = func(format string, args ...any) { logf(e, format, args...) }
		m, err := agent.Listen(f.pcapListen, opt)
		if err != nil {
			return nil, fmt.Errorf("--pcap-listen %s: %w", f.pcapListen, err)
		}
		host, port, _ := net.SplitHostPort(m.Addr().String())
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			host = "THIS-HOST"
		}
		logf(e, "waiting for capture agents on %s (on each capture host: tcpdump -U --immediate-mode -w - 'tcp port N' | nc -N %s %s)", m.Addr(), host, port)
		return m, nil
	case f.pcapDial != "":
		opt := f.agents
		opt.Logf = func(format string, args ...any) { logf(e, format, args...) }
		m, err := agent.Dial(context.Background(), f.pcapDial, opt)
		if err != nil {
			return nil, fmt.Errorf("--pcap %s: connect to the capture agent: %w", f.pcap, err)
		}
		return m, nil
	case f.live != "":
		return capture.OpenLive(f.live, capture.LiveOptions{Ports: sel.ports(), BufferSize: f.liveBuf})
	}
	return capture.Open(f.pcap)
}

// sessionConfig is the session builder's configuration from the flags; the
// selection comes through seen (its keep is Config.Keep).
func sessionConfig(f *replayFlags, seen *serversSeen) session.Config {
	cfg := session.Config{ServerDataLimit: f.serverLim, IdleTimeout: f.idleTimeout, Keep: seen.keep}
	if f.endless() || f.pcap == "-" {
		// A capture that is happening: chunks are handed on when a write
		// ends (PSH) or its merge window passes, and a connection idle
		// for hours is still one session unless --idle-timeout says
		// otherwise.
		cfg.Live = true
	}
	return cfg
}

// setupPath builds the dialer: kernel sockets, or a TUN device with the
// netstack on it. cleanup undoes it in reverse order (stack first, so no
// goroutine writes to a closed fd; then the device and its host changes).
func setupPath(e env, f *replayFlags, tap netstack.Tap) (replay.Dialer, func(), error) {
	if f.via == "socket" {
		return &replay.SocketDialer{}, func() {}, nil
	}
	var targets []netip.Addr
	if f.target.IsValid() {
		targets = append(targets, f.target.Addr())
	}
	for _, t := range f.maps {
		targets = append(targets, t.Addr())
	}
	tcfg := tun.Config{
		Name: f.tunName,
		MTU:  f.mtu,
		// Offloads (GSO and checksums) where the link speaks vnet
		// headers: fewer, larger packets at any MTU.
		VnetHdr:           f.link == netstack.LinkBatch,
		ClientPrefixes:    clientPrefixes(f),
		Targets:           targets,
		Forward:           f.forward,
		AllowRouteOverlap: f.keepIP,
		Logf:              func(format string, args ...any) { debugf(e, format, args...) },
	}
	if f.keepIP {
		warnf(e, "--keep-client-ip routes %v into %s for the run: replies to those real addresses on this host go to the replay", tcfg.ClientPrefixes, f.tunName)
	}
	dev, err := tun.Open(tcfg)
	if err != nil {
		return nil, nil, setupError{err}
	}
	ep, err := netstack.NewLinkEndpointOpts(f.link, dev.Fd(), uint32(dev.MTU()), netstack.LinkOptions{VnetHdr: dev.VnetHdr()})
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("link endpoint on %s: %w", dev.Name(), err)
	}
	if tap != nil {
		// --write-pcap: only then is the endpoint wrapped, so a run
		// without it pays nothing.
		ep = netstack.NewTapEndpoint(ep, tap)
	}
	st, err := netstack.New(ep, netstack.Options{MTU: uint32(dev.MTU()), ConnectTimeout: f.dialTimeout})
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("netstack on %s: %w", dev.Name(), err)
	}
	return st, func() {
		st.Close()
		if err := dev.Close(); err != nil {
			warnf(e, "cleanup of %s: %v", dev.Name(), err)
		}
	}, nil
}

func clientPrefixes(f *replayFlags) []netip.Prefix {
	if len(f.nets) == 0 {
		return nil // tun's defaults: 198.18.0.0/15 and 2001:2::/48
	}
	return f.nets
}

// Errors that choose the exit code.
type inputError struct{ error }
type usageError struct{ error }

// setupError: the host setup (TUN, routes, sysctls) was refused or failed.
type setupError struct{ error }

func (e setupError) Unwrap() error { return e.error }

func (e inputError) Unwrap() error { return e.error }
func (e usageError) Unwrap() error { return e.error }

func exitCodeFor(err error) int {
	var ie inputError
	var ue usageError
	var se setupError
	switch {
	case errors.As(err, &se):
		return exitPriv
	case errors.As(err, &ie):
		return exitInput
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, tun.ErrPermission), errors.Is(err, tun.ErrConflict):
		return exitPriv
	}
	return exitFailure
}

// fail logs err as an error: in the text format one line, plus a hint line
// where there is a remedy.
func fail(e env, err error) {
	var pe *tun.PermissionError
	switch {
	case errors.As(err, &pe):
		failHint(e, err, pe.Hint())
	case strings.Contains(err.Error(), "needs forwarding mode"):
		failHint(e, err, "add --forward, and on the target's host route the client range back to this host (README: \"Target on another host\")")
	default:
		e.logger().Error(err.Error())
	}
}

// failHint logs err with its remedy.
func failHint(e env, err error, hint string) {
	e.logger().Error(err.Error(), "hint", hint)
}

// byteSizeFlag shows a --live-buffer value (0: the default).
func byteSizeFlag(n int) string {
	if n == 0 {
		n = capture.DefaultLiveBuffer
	}
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprint(n)
}
