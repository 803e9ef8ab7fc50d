package replay

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Summary is the outcome of a replay, for the end-of-run summary and the
// report. Runner.Summary returns a snapshot at any time (for a progress
// line); the one returned after the last Run is final.
type Summary struct {
	RunID  uint64
	Passes int
	Speed  float64 // SpeedMax (+Inf) for max
	Start  time.Time
	// Wall is from the first Run's start to the last Run's end (or to now
	// while running).
	Wall time.Duration

	// Read counts sessions received from the channel. Skipped were left out
	// by Sample or Shard, Unmapped had no target. Planned counts the copies
	// scheduled (Multiply per selected session); Replayed the copies begun
	// (dial attempted); NotStarted the planned ones that never began
	// (context canceled or Duration reached).
	Read, Skipped, Unmapped, Planned, Replayed, NotStarted int64
	// Succeeded counts replayed sessions with outcome OK; Failed the others
	// by reason, but for Incomplete: sessions whose capture lost bytes that
	// the replay would have needed (outcome Incomplete), not the target's
	// failures.
	Succeeded  int64
	Failed     Failures
	Incomplete int64

	// BytesSent, BytesReceived, ChunksSent and Deviations are counted as
	// they happen, also while a session runs.
	BytesSent, BytesReceived int64
	ChunksSent               int64
	Deviations               DeviationTotals

	// ChunkLateness is how late each client chunk was written: from the
	// moment it was due (its scaled time had come and the target had sent
	// the bytes it waits for, or a timeout released it) to the write. At
	// --speed max only the dependency counts. StartLateness is the same for
	// session starts (due: start time, predecessors done, a slot free).
	ChunkLateness, StartLateness Latency

	// LiveLag (live input only) is how long after its capture each client
	// chunk was written to the target: from the capture timestamp of the
	// chunk's first segment to the write.
	LiveLag Latency
	// Shed counts sessions given up before they started: the reader could
	// not wait for them and the replay's byte budget was spent (offline).
	// DroppedSessions counts live sessions whose bytes did not fit their
	// window or the budget, DroppedBytes those bytes: such a session was
	// replayed up to the first dropped byte. PeerTimeouts counts sessions
	// that stopped waiting for a peer connection's progress (Head.Peers)
	// after TurnTimeout.
	Shed, DroppedSessions, DroppedBytes, PeerTimeouts int64

	// CaptureDrops counts packets the capture lost before the replay saw
	// them: a live capture's kernel drops (its buffer was full). The
	// command sets it; sessions they hurt are Incomplete, or carry holes.
	CaptureDrops int64

	// InFlight is how many session copies are running (begun, not done)
	// at the moment of the snapshot: 0 once the run is over. It is not
	// part of the JSON form.
	InFlight int64
}

// Failures counts failed sessions by reason (see Outcome).
type Failures struct {
	Refused, Reset, Timeout, Deviation, Canceled, Other int64
}

// Total is the number of failed sessions.
func (f Failures) Total() int64 {
	return f.Refused + f.Reset + f.Timeout + f.Deviation + f.Canceled + f.Other
}

// DeviationTotals sums Result.Deviations over the run.
type DeviationTotals struct {
	TurnTimeouts, QuietTurns, EarlyClose, CloseTimeouts, LostTurns int64
}

// Latency summarises a distribution of delays.
type Latency struct {
	Count              int64
	P50, P90, P99, Max time.Duration
}

// SessionsPerSec is the rate of replayed sessions over the wall time.
func (s *Summary) SessionsPerSec() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return float64(s.Replayed) / s.Wall.Seconds()
}

// SummaryVersion is the version of Summary's JSON form. Fields are only ever
// added; a change of meaning would bump it.
const SummaryVersion = 1

type latencyJSON struct {
	Count int64   `json:"count"`
	P50us float64 `json:"p50_us"`
	P90us float64 `json:"p90_us"`
	P99us float64 `json:"p99_us"`
	Maxus float64 `json:"max_us"`
}

func latJSON(l Latency) latencyJSON {
	us := func(d time.Duration) float64 { return math.Round(float64(d)/1e1) / 1e2 }
	return latencyJSON{Count: l.Count, P50us: us(l.P50), P99us: us(l.P99), P90us: us(l.P90), Maxus: us(l.Max)}
}

// MarshalJSON writes the summary with snake_case names and explicit units.
func (s *Summary) MarshalJSON() ([]byte, error) {
	speed := "max"
	if !math.IsInf(s.Speed, 1) {
		speed = fmt.Sprint(s.Speed)
	}
	type failures struct {
		Refused   int64 `json:"refused"`
		Reset     int64 `json:"reset"`
		Timeout   int64 `json:"timeout"`
		Deviation int64 `json:"deviation"`
		Canceled  int64 `json:"canceled"`
		Other     int64 `json:"other"`
	}
	type devs struct {
		TurnTimeouts  int64 `json:"turn_timeouts"`
		QuietTurns    int64 `json:"quiet_turns"`
		EarlyClose    int64 `json:"early_close"`
		CloseTimeouts int64 `json:"close_timeouts"`
		LostTurns     int64 `json:"lost_turns"`
	}
	return json.Marshal(struct {
		Version        int         `json:"version"`
		RunID          string      `json:"run_id"`
		Passes         int         `json:"passes"`
		Speed          string      `json:"speed"`
		Start          time.Time   `json:"start"`
		WallSeconds    float64     `json:"wall_seconds"`
		SessionsPerSec float64     `json:"sessions_per_second"`
		Read           int64       `json:"sessions_read"`
		Skipped        int64       `json:"sessions_skipped"`
		Unmapped       int64       `json:"sessions_unmapped"`
		Planned        int64       `json:"sessions_planned"`
		Replayed       int64       `json:"sessions_replayed"`
		NotStarted     int64       `json:"sessions_not_started"`
		Succeeded      int64       `json:"sessions_succeeded"`
		FailedTotal    int64       `json:"sessions_failed"`
		Incomplete     int64       `json:"sessions_capture_incomplete"`
		Failed         failures    `json:"failed"`
		BytesSent      int64       `json:"bytes_sent"`
		BytesReceived  int64       `json:"bytes_received"`
		ChunksSent     int64       `json:"chunks_sent"`
		Deviations     devs        `json:"deviations"`
		ChunkLateness  latencyJSON `json:"chunk_lateness"`
		StartLateness  latencyJSON `json:"start_lateness"`
		LiveLag        latencyJSON `json:"live_lag"`
		Shed           int64       `json:"sessions_shed"`
		DroppedSess    int64       `json:"sessions_dropped"`
		DroppedBytes   int64       `json:"bytes_dropped"`
		PeerTimeouts   int64       `json:"peer_timeouts"`
		CaptureDrops   int64       `json:"capture_drops"`
	}{
		Version: SummaryVersion, RunID: fmt.Sprintf("%016x", s.RunID), Passes: s.Passes, Speed: speed,
		Start: s.Start, WallSeconds: s.Wall.Seconds(), SessionsPerSec: s.SessionsPerSec(),
		Read: s.Read, Skipped: s.Skipped, Unmapped: s.Unmapped, Planned: s.Planned,
		Replayed: s.Replayed, NotStarted: s.NotStarted, Succeeded: s.Succeeded,
		FailedTotal: s.Failed.Total(), Incomplete: s.Incomplete,
		Failed: failures{s.Failed.Refused, s.Failed.Reset, s.Failed.Timeout,
			s.Failed.Deviation, s.Failed.Canceled, s.Failed.Other},
		BytesSent: s.BytesSent, BytesReceived: s.BytesReceived, ChunksSent: s.ChunksSent,
		Deviations: devs{s.Deviations.TurnTimeouts, s.Deviations.QuietTurns,
			s.Deviations.EarlyClose, s.Deviations.CloseTimeouts, s.Deviations.LostTurns},
		ChunkLateness: latJSON(s.ChunkLateness), StartLateness: latJSON(s.StartLateness),
		LiveLag: latJSON(s.LiveLag), Shed: s.Shed, DroppedSess: s.DroppedSessions, DroppedBytes: s.DroppedBytes,
		PeerTimeouts: s.PeerTimeouts, CaptureDrops: s.CaptureDrops,
	})
}

// WriteText writes the human summary (a few lines, for stderr).
func (s *Summary) WriteText(w io.Writer) error {
	speed := "max"
	if !math.IsInf(s.Speed, 1) {
		speed = fmt.Sprintf("%gx", s.Speed)
	}
	f := s.Failed
	_, err := fmt.Fprintf(w,
		"sessions: %d planned, %d replayed, %d succeeded, %d failed (refused %d, reset %d, timeout %d, deviation %d, canceled %d, other %d)%s\n"+
			"bytes:    %s sent, %s received, %d chunks\n"+
			"turns:    %d timed out, %d answered short, %d early closes, %d close timeouts\n"+
			"timing:   chunk lateness p50 %s p99 %s max %s; start lateness p50 %s p99 %s\n"+
			"run:      %s wall, %.1f sessions/s, speed %s, run id %016x\n",
		s.Planned, s.Replayed, s.Succeeded, f.Total(), f.Refused, f.Reset, f.Timeout, f.Deviation, f.Canceled, f.Other,
		s.notes(),
		byteSize(s.BytesSent), byteSize(s.BytesReceived), s.ChunksSent,
		s.Deviations.TurnTimeouts, s.Deviations.QuietTurns, s.Deviations.EarlyClose, s.Deviations.CloseTimeouts,
		roundDur(s.ChunkLateness.P50), roundDur(s.ChunkLateness.P99), roundDur(s.ChunkLateness.Max),
		roundDur(s.StartLateness.P50), roundDur(s.StartLateness.P99),
		roundDur(s.Wall), s.SessionsPerSec(), speed, s.RunID)
	if err != nil {
		return err
	}
	if s.LiveLag.Count > 0 {
		_, err = fmt.Fprintf(w, "live:     lag from capture to write p50 %s p90 %s p99 %s max %s (%d chunks)\n",
			roundDur(s.LiveLag.P50), roundDur(s.LiveLag.P90), roundDur(s.LiveLag.P99), roundDur(s.LiveLag.Max), s.LiveLag.Count)
	}
	if err == nil && s.Shed+s.DroppedSessions+s.PeerTimeouts > 0 {
		_, err = fmt.Fprintf(w, "limits:   %d sessions shed, %d sessions with dropped bytes (%s), %d peer waits timed out\n",
			s.Shed, s.DroppedSessions, byteSize(s.DroppedBytes), s.PeerTimeouts)
	}
	if err == nil && s.CaptureDrops+s.Incomplete+s.Deviations.LostTurns > 0 {
		_, err = fmt.Fprintf(w, "loss:     %d packets lost by the capture; %d sessions capture-incomplete (the capture lacks what they needed: not the target's failures), %d turns after lost client bytes\n",
			s.CaptureDrops, s.Incomplete, s.Deviations.LostTurns)
	}
	return err
}

func (s *Summary) notes() string {
	n := ""
	if s.Incomplete > 0 {
		n += fmt.Sprintf("; %d capture-incomplete", s.Incomplete)
	}
	if s.NotStarted > 0 {
		n += fmt.Sprintf("; %d not started", s.NotStarted)
	}
	if s.Skipped > 0 {
		n += fmt.Sprintf("; %d skipped by sample/shard", s.Skipped)
	}
	if s.Unmapped > 0 {
		n += fmt.Sprintf("; %d without a target", s.Unmapped)
	}
	return n
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}

// histogram is a lock-free log-linear histogram of durations: exact below
// 64 ns, then 32 buckets per power of two (about 3 % resolution), fixed
// size, safe for concurrent Record.
type histogram struct {
	buckets [histBuckets]atomic.Int64
	count   atomic.Int64
	max     atomic.Int64
}

const (
	histSub     = 32                         // sub-buckets per power of two
	histBuckets = (64-6)*histSub + 2*histSub // covers every int64
)

func histIndex(v uint64) int {
	e := bits.Len64(v) - 6
	if e <= 0 {
		return int(v)
	}
	return e*histSub + int(v>>uint(e))
}

// histLower is the smallest value of bucket i.
func histLower(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	return uint64(i-e*histSub) << uint(e)
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.buckets[histIndex(uint64(d))].Add(1)
	h.count.Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantile returns the upper bound of the bucket holding quantile q (so it
// never understates), capped by the maximum seen.
func (h *histogram) quantile(q float64, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			upper := histLower(i+1) - 1
			if i+1 >= histBuckets {
				upper = math.MaxInt64
			}
			return time.Duration(min(upper, uint64(h.max.Load())))
		}
	}
	return time.Duration(h.max.Load())
}

func (h *histogram) summary() Latency {
	n := h.count.Load()
	return Latency{Count: n, P50: h.quantile(0.50, n), P90: h.quantile(0.90, n), P99: h.quantile(0.99, n), Max: time.Duration(h.max.Load())}
}
