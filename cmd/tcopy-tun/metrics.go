package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/metrics"
)

// startMetrics serves --metrics for the run: it sets f.metrics, which
// replayOnce wires into each runner and capture source, and returns the
// function that stops the server. The address is logged (with the port
// the kernel chose for port 0).
func startMetrics(e env, f *replayFlags) (stop func(), err error) {
	x := metrics.New()
	srv, err := x.Listen(f.metricsAddr, metrics.ServerOptions{
		Allow:    f.metricsAllow,
		ErrorLog: slog.NewLogLogger(e.logger().Handler(), slog.LevelDebug),
	})
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", f.metricsAddr, err)
	}
	f.metrics = x
	logf(e, "serving metrics on http://%s/metrics", srv.Addr())
	return func() {
		if err := srv.Close(); err != nil {
			warnf(e, "metrics server: %v", err)
		}
	}, nil
}

// captureMeter hands a capture reader's counters to its metrics Source
// from the goroutine that reads it (a Reader is not safe for concurrent
// use): read is called before each Next, and passes the Stats on at most
// every meterPeriod, also on a quiet live wire (whose reads time out every
// liveTick). A capture that goes quiet on a blocking read (standard input)
// may leave the counters up to meterPeriod behind until its next frame.
type captureMeter struct {
	r    *capture.Reader
	src  *metrics.Source
	n    int
	last time.Time
}

// meterPeriod: a scrape lags the capture by little, and copying the Stats
// costs nothing measurable.
const meterPeriod = 250 * time.Millisecond

// newCaptureMeter returns nil without --metrics.
func newCaptureMeter(f *replayFlags, r *capture.Reader, src capture.Source) *captureMeter {
	if f.metrics == nil {
		return nil
	}
	m := &captureMeter{r: r, src: f.metrics.Source(sourceLabel(f))}
	if dc, ok := src.(capture.DropCounter); ok {
		m.src.SetDropCounter(dc)
	}
	return m
}

func sourceLabel(f *replayFlags) string {
	if f.pcap == "-" {
		return "stdin"
	}
	return f.sourceName()
}

// read is called before each Next of the Reader, on the goroutine that
// calls Next; nil-safe. It looks at the clock every 16th call only.
func (m *captureMeter) read() {
	if m == nil {
		return
	}
	if m.n++; m.n%16 != 0 {
		return
	}
	if now := time.Now(); now.Sub(m.last) >= meterPeriod {
		m.last = now
		m.src.Update(m.r.Stats())
	}
}

// end closes the reading; readerFree says whether this goroutine may still
// read the Reader's counters (not when a detached goroutine reads on).
func (m *captureMeter) end(readerFree bool) {
	if m == nil {
		return
	}
	if readerFree {
		m.src.Update(m.r.Stats())
	}
	m.src.EndReading()
}
