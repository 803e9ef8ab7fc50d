package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/agent"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// Namespace prefixes every metric of tcopy-tun.
const Namespace = "tcopy_tun"

// DurationBuckets are the upper bounds, in seconds, of the timing
// histograms: from 10 µs (a chunk written at once) to a minute (a session
// stuck behind its predecessors), 1-2.5-5 per decade.
var DurationBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10, 30, 60,
}

// Exporter holds the metrics of one process: the run being replayed, its
// capture sources and the timing histograms. See the package doc.
type Exporter struct {
	reg                           *prometheus.Registry
	chunkLate, startLate, liveLag prometheus.Histogram
	refused                       prometheus.Counter

	mu      sync.Mutex
	runner  *replay.Runner
	rec     *intercept.Recorder
	base    counts // the final counts of the runs Watch replaced
	sources []*Source
	agents  *agent.Merger // capture agents, if the input is theirs
}

var _ replay.Metrics = (*Exporter)(nil)

// New returns an Exporter whose registry holds tcopy-tun's metrics and the
// Go runtime's and the process's standard ones (go_*, process_*).
func New() *Exporter {
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: name, Help: help, Buckets: DurationBuckets,
		})
	}
	x := &Exporter{
		reg: prometheus.NewRegistry(),
		chunkLate: hist("chunk_lateness_seconds",
			"How late each client chunk was written: from the moment it was due (its scaled time had come and the target had sent the bytes it waits for, or a timeout released it) to the write."),
		startLate: hist("start_lateness_seconds",
			"How late each session was dialed: from the moment it was due (start time, causal predecessors done, a concurrency slot free) to the dial."),
		liveLag: hist("live_lag_seconds",
			"Live input only: how long after its capture each client chunk was written to the target."),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "metrics_refused_connections_total",
			Help: "Connections to the metrics endpoint closed unread because the peer is outside --metrics-allow.",
		}),
	}
	x.reg.MustRegister(x.chunkLate, x.startLate, x.liveLag, x.refused,
		(*collector)(x),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return x
}

// Registry returns the registry behind Handler, for tests and for
// registering more collectors.
func (x *Exporter) Registry() *prometheus.Registry { return x.reg }

// SessionStarted implements replay.Metrics.
func (x *Exporter) SessionStarted(late time.Duration) { x.startLate.Observe(late.Seconds()) }

// ChunkWritten implements replay.Metrics.
func (x *Exporter) ChunkWritten(late, lag time.Duration) {
	x.chunkLate.Observe(late.Seconds())
	if lag >= 0 {
		x.liveLag.Observe(lag.Seconds())
	}
}

// Watch makes r (and rec, the run's intercept, nil for none) the run the
// counters come from. The counts of a run it replaces stay in the
// counters: call it only once that run is over (its Summary final).
func (x *Exporter) Watch(r *replay.Runner, rec *intercept.Recorder) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.runner != nil || x.rec != nil {
		x.base.add(snapshot(x.runner, x.rec))
	}
	x.runner, x.rec = r, rec
}

// Source returns the capture counters of the input called name (a file
// name, an interface, an agent's address), creating them at the first
// call; it is the "source" label of the capture metrics. Keep names to a
// bounded set (one per input, not one per connection): each is a time
// series for as long as the process runs.
func (x *Exporter) Source(name string) *Source {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, s := range x.sources {
		if s.name == name {
			return s
		}
	}
	s := &Source{name: name}
	x.sources = append(x.sources, s)
	return s
}

// Source is the capture counters of one input. Update and EndReading come
// from the goroutine that owns the input's capture.Reader (a Reader is not
// safe for concurrent use, so the exporter never reads it itself).
type Source struct {
	name string

	mu        sync.Mutex
	base, cur captureCounts
	drops     capture.DropCounter
	baseDrops uint64
}

type captureCounts struct {
	frames, bytes, segments, notTCP, malformed, truncated int64
}

func (c *captureCounts) add(o captureCounts) {
	c.frames += o.frames
	c.bytes += o.bytes
	c.segments += o.segments
	c.notTCP += o.notTCP
	c.malformed += o.malformed
	c.truncated += o.truncated
}

// Update sets the counters of the current reading of the input to st (a
// capture.Reader's Stats so far).
func (s *Source) Update(st capture.Stats) {
	s.mu.Lock()
	s.cur = captureCounts{st.Frames, st.Bytes, st.TCP, st.NonTCP, st.Malformed, st.Truncated}
	s.mu.Unlock()
}

// SetDropCounter gives the live source whose kernel drops are exported
// (read at each scrape: capture.DropCounter may be called from any
// goroutine).
func (s *Source) SetDropCounter(dc capture.DropCounter) {
	s.mu.Lock()
	s.drops = dc
	s.mu.Unlock()
}

// EndReading closes the current reading: its counts stay, and the next
// reading of the same input (--loop) counts from zero again.
func (s *Source) EndReading() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base.add(s.cur)
	s.cur = captureCounts{}
	if s.drops != nil {
		if n, err := s.drops.Drops(); err == nil {
			s.baseDrops += n
		}
		s.drops = nil
	}
}

func (s *Source) snapshot() (c captureCounts, drops uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c = s.base
	c.add(s.cur)
	drops = s.baseDrops
	if s.drops != nil {
		if n, err := s.drops.Drops(); err == nil {
			drops += n
		}
	}
	return c, drops
}

// counts are the monotonic counters of one run, from its Summary and its
// intercept's Totals.
type counts struct {
	passes                                                int64
	read, skipped, unmapped, planned, started, notStarted int64
	outcomes                                              [8]int64 // by replay.Outcome
	sent, received, turns                                 int64
	deviations                                            [5]int64 // turn timeouts, quiet turns, early close, close timeouts, lost turns
	shed, droppedSessions, droppedBytes, peerTimeouts     int64
	answers                                               [7]int64 // by intercept.Match
	endMismatch                                           int64
	// The per-request comparison: requests compared, same, not compared
	// (monotonic), and noise and regressions as judged so far (gauges: a
	// difference first taken for a regression may become noise once the
	// baseline shows it).
	requests, reqSame, reqNotCompared, reqNoise, reqRegressions int64
}

func (c *counts) add(o counts) {
	for _, p := range [][2]*int64{
		{&c.passes, &o.passes}, {&c.read, &o.read}, {&c.skipped, &o.skipped}, {&c.unmapped, &o.unmapped},
		{&c.planned, &o.planned}, {&c.started, &o.started}, {&c.notStarted, &o.notStarted},
		{&c.sent, &o.sent}, {&c.received, &o.received}, {&c.turns, &o.turns},
		{&c.shed, &o.shed}, {&c.droppedSessions, &o.droppedSessions},
		{&c.droppedBytes, &o.droppedBytes}, {&c.peerTimeouts, &o.peerTimeouts},
		{&c.endMismatch, &o.endMismatch},
		{&c.requests, &o.requests}, {&c.reqSame, &o.reqSame}, {&c.reqNotCompared, &o.reqNotCompared},
		{&c.reqNoise, &o.reqNoise}, {&c.reqRegressions, &o.reqRegressions},
	} {
		*p[0] += *p[1]
	}
	for i := range c.outcomes {
		c.outcomes[i] += o.outcomes[i]
	}
	for i := range c.deviations {
		c.deviations[i] += o.deviations[i]
	}
	for i := range c.answers {
		c.answers[i] += o.answers[i]
	}
}

// snapshot reads a run's counters; inFlight is not among them (a gauge).
func snapshot(r *replay.Runner, rec *intercept.Recorder) counts {
	var c counts
	if r != nil {
		s := r.Summary()
		f := s.Failed
		c.passes = int64(s.Passes)
		c.read, c.skipped, c.unmapped, c.planned, c.started, c.notStarted =
			s.Read, s.Skipped, s.Unmapped, s.Planned, s.Replayed, s.NotStarted
		c.outcomes = [8]int64{s.Succeeded, f.Refused, f.Reset, f.Timeout, f.Deviation, f.Canceled, f.Other, s.Incomplete}
		c.sent, c.received, c.turns = s.BytesSent, s.BytesReceived, s.ChunksSent
		d := s.Deviations
		c.deviations = [5]int64{d.TurnTimeouts, d.QuietTurns, d.EarlyClose, d.CloseTimeouts, d.LostTurns}
		c.shed, c.droppedSessions, c.droppedBytes, c.peerTimeouts = s.Shed, s.DroppedSessions, s.DroppedBytes, s.PeerTimeouts
	}
	if rec != nil {
		t := rec.Totals()
		m := t.Match
		c.answers = [7]int64{m.Identical, m.Volatile, m.SameLength, m.Different, m.Missing, m.NotComparable, m.NotReplayed}
		c.endMismatch = t.EndMismatch
		q := rec.Requests()
		c.requests, c.reqSame, c.reqNotCompared, c.reqNoise, c.reqRegressions = q.Requests, q.Same, q.NotCompared, q.Noise, q.Regressions
	}
	return c
}

// Label values, in the order of the arrays in counts: replay.Outcome's and
// intercept.Match's own names (a test keeps them so).
var (
	outcomeLabels   = []string{"ok", "refused", "reset", "timeout", "deviation", "canceled", "other", "capture-incomplete"}
	deviationLabels = []string{"turn_timeout", "quiet_turn", "early_close", "close_timeout", "lost_turn"}
	matchLabels     = []string{"identical", "volatile", "same-length", "different", "missing", "not-comparable", "not-replayed"}
)
