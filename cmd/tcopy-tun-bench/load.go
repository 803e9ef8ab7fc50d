package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The live workload's load generator: `tcopy-tun-bench load`, run by the
// harness inside its namespace. It opens short HTTP/1.1 sessions against
// the source server at a fixed rate, each the shape of one session of the
// short workload's capture (one GET for a 256-byte body with
// Connection: close; the server closes first), so that a live copy of them
// is comparable with the offline replay of that capture.
//
// The load is open loop: session i starts at i/rate after the first,
// whatever the sessions before it are doing, as independent users would.
// It is bounded three ways: by count (-n), by time (-duration, after which
// no session starts), and by sessions in flight (-max-inflight: a start due
// while that many are open is counted as missed, not queued, so a server or
// machine that cannot keep up shows as a lower achieved rate instead of a
// backlog). Each session has a deadline (-session-timeout).

// loadResult is the generator's answer: one JSON line on standard output.
type loadResult struct {
	Rate      float64 `json:"rate_asked"`
	Planned   int64   `json:"sessions_planned"`
	Started   int64   `json:"sessions_started"`
	OK        int64   `json:"sessions_ok"`
	Failed    int64   `json:"sessions_failed"`
	Missed    int64   `json:"sessions_missed"` // due while -max-inflight were open
	FirstErr  string  `json:"first_error,omitempty"`
	Seconds   float64 `json:"seconds"` // first start to last end
	StartSpan float64 `json:"start_seconds"`
	// Achieved is the rate at which sessions were started: started
	// sessions over the time from the first start to the last one's
	// schedule slot (the asked rate when the generator kept up).
	Achieved float64 `json:"rate_achieved"`
	// LateP99us is how late the 99th percentile start was against its
	// slot: the generator's own pacing error.
	LateP99us float64 `json:"start_late_p99_us"`
}

// loadOpts are the generator's parameters.
type loadOpts struct {
	addr           string
	rate           float64
	duration       time.Duration
	max            int64
	maxInflight    int64
	body           int64
	sessionTimeout time.Duration
	// clients, if set, are the client addresses the sessions come from,
	// in turn (session i from clients[i%len]): the short capture's 1,000
	// client hosts, which causal order and the per-host peer rule see.
	clients []netip.Addr
}

// runLoad is `tcopy-tun-bench load`.
func runLoad(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcopy-tun-bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o loadOpts
	fs.StringVar(&o.addr, "addr", "", "source server `HOST:PORT` to open sessions to")
	fs.Float64Var(&o.rate, "rate", 1000, "sessions started per second")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "start sessions for this long")
	fs.Int64Var(&o.max, "n", 100000, "start at most this many sessions")
	fs.Int64Var(&o.maxInflight, "max-inflight", 2000, "sessions open at once at most; a start due past that is missed")
	fs.Int64Var(&o.body, "body", 256, "answer body size asked for, in bytes")
	fs.DurationVar(&o.sessionTimeout, "session-timeout", 10*time.Second, "deadline of one session")
	clientNet := fs.String("client-net", "", "open sessions from `PREFIX`'s addresses (they must be local, e.g. a local route on lo)")
	clients := fs.Int("clients", 1000, "with -client-net: how many of its addresses, in turn")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *clientNet != "" {
		var err error
		if o.clients, err = clientAddrs(*clientNet, *clients); err != nil {
			fmt.Fprintf(stderr, "tcopy-tun-bench load: -client-net: %v\n", err)
			return exitUsage
		}
	}
	if err := o.check(); err != nil {
		fmt.Fprintf(stderr, "tcopy-tun-bench load: %v\n", err)
		return exitUsage
	}
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		// A signal stops further starts; the sessions open finish (each
		// within its deadline).
		select {
		case <-sig:
			close(stop)
		case <-stop:
		}
	}()
	res := generateLoad(o, stop)
	select {
	case <-stop:
	default:
		close(stop)
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return exitFailure
	}
	return exitOK
}

func (o loadOpts) check() error {
	switch {
	case o.addr == "":
		return fmt.Errorf("-addr is required")
	case !(o.rate > 0 && o.rate <= 1e6):
		return fmt.Errorf("-rate %v: want more than 0 and at most 1000000 per second", o.rate)
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return fmt.Errorf("-duration %v: want more than 0 and at most 10m", o.duration)
	case o.max <= 0:
		return fmt.Errorf("-n %d: want at least 1", o.max)
	case o.maxInflight <= 0:
		return fmt.Errorf("-max-inflight %d: want at least 1", o.maxInflight)
	case o.body < 0 || o.body > 1<<30:
		return fmt.Errorf("-body %d: want 0 to 1GiB", o.body)
	case o.sessionTimeout <= 0:
		return fmt.Errorf("-session-timeout %v: want more than 0", o.sessionTimeout)
	}
	return nil
}

// generateLoad runs the load until its count or duration is reached (or
// stop is closed) and every session it started has ended.
func generateLoad(o loadOpts, stop <-chan struct{}) loadResult {
	res := loadResult{Rate: o.rate}
	planned := min(o.max, int64(o.rate*o.duration.Seconds()))
	planned = max(planned, 1)
	res.Planned = planned
	expect := int64(len(appendResponseHeader(nil, o.body, true))) + o.body
	var (
		ok, failed, inflight atomic.Int64
		wg                   sync.WaitGroup
		errOnce              sync.Once
		firstErr             string
	)
	session := func(i int64) {
		defer wg.Done()
		defer inflight.Add(-1)
		var from netip.Addr
		if len(o.clients) > 0 {
			from = o.clients[i%int64(len(o.clients))]
		}
		err := loadSession(o.addr, from, o.body, i, expect, o.sessionTimeout)
		if err != nil {
			failed.Add(1)
			errOnce.Do(func() { firstErr = fmt.Sprintf("session %d: %v", i, err) })
			return
		}
		ok.Add(1)
	}
	late := make([]time.Duration, 0, min(planned, 1<<20))
	interval := time.Duration(float64(time.Second) / o.rate)
	start := time.Now()
	var lastSlot time.Duration
	var i int64
loop:
	for i < planned {
		select {
		case <-stop:
			break loop
		default:
		}
		// Start every session whose slot has come, then sleep until the
		// next slot (at most 1 ms at a time: bursts stay small).
		now := time.Since(start)
		for ; i < planned; i++ {
			slot := time.Duration(i) * interval
			if slot > now {
				break
			}
			lastSlot = slot
			if inflight.Load() >= o.maxInflight {
				res.Missed++
				continue
			}
			if len(late) < cap(late) {
				late = append(late, now-slot)
			}
			inflight.Add(1)
			wg.Add(1)
			res.Started++
			go session(i)
		}
		if i < planned {
			next := time.Duration(i)*interval - time.Since(start)
			time.Sleep(min(max(next, 50*time.Microsecond), time.Millisecond))
		}
	}
	startSpan := time.Since(start)
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.OK, res.Failed, res.FirstErr = ok.Load(), failed.Load(), firstErr
	// The span of the starts is the schedule's (the last slot plus one
	// interval), or longer when the generator fell behind it.
	span := max(lastSlot+interval, startSpan)
	res.StartSpan = span.Seconds()
	if span > 0 {
		res.Achieved = float64(res.Started) / span.Seconds()
	}
	res.LateP99us = float64(percentile(late, 0.99)) / 1e3
	return res
}

// loadSession is one short session: connect, one GET with
// Connection: close, read the answer to the server's close, check its
// length, close.
func loadSession(addr string, from netip.Addr, body, i, expect int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	var rb [256]byte
	if _, err := c.Write(appendRequest(rb[:0], "GET", body, int(i), 0, 0, true)); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	// Read to the server's close into one pooled buffer: the load shares
	// the cores with what it measures, so it allocates as little as it can.
	bp := loadBufs.Get().(*[]byte)
	defer loadBufs.Put(bp)
	buf := *bp
	const ok200 = "HTTP/1.1 200 "
	var head [len(ok200)]byte
	hn := 0
	var got int64
	for {
		n, err := c.Read(buf)
		if hn < len(head) {
			hn += copy(head[hn:], buf[:n])
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
	}
	if string(head[:hn]) != ok200 {
		return fmt.Errorf("answer %q…", head[:hn])
	}
	if got != expect {
		return fmt.Errorf("answer of %d bytes, want %d", got, expect)
	}
	return nil
}

var loadBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// clientAddrs returns the first n addresses of prefix after its network
// address.
func clientAddrs(prefix string, n int) ([]netip.Addr, error) {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return nil, err
	}
	p = p.Masked()
	if n < 1 || n > 65536 {
		return nil, fmt.Errorf("%d clients: want 1 to 65536", n)
	}
	out := make([]netip.Addr, 0, n)
	for a := p.Addr().Next(); len(out) < n; a = a.Next() {
		if !a.IsValid() || !p.Contains(a) {
			return nil, fmt.Errorf("%s holds fewer than %d addresses", p, n)
		}
		out = append(out, a)
	}
	return out, nil
}

// percentile returns the p-quantile of d (sorted in place), 0 if empty.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	k := int(p*float64(len(d)-1) + 0.5)
	return d[min(max(k, 0), len(d)-1)]
}
