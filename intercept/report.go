package intercept

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// ReportVersion is the version of the report's JSON form. Fields are only
// ever added; a change of meaning would bump it.
const ReportVersion = 1

// Totals count every session the Recorder saw, whether or not its row was
// kept.
type Totals struct {
	Sessions int64         `json:"sessions"`
	Outcomes OutcomeCounts `json:"outcomes"`
	Match    MatchCounts   `json:"match"`
	// EndMismatch counts connected sessions whose replay ended differently
	// from the capture (a captured "capture-end" matches any end).
	EndMismatch         int64 `json:"end_mismatch"`
	BytesSent           int64 `json:"bytes_sent"`
	BytesReceived       int64 `json:"bytes_received"`
	CapturedServerBytes int64 `json:"captured_server_bytes"`
	RowsDropped         int64 `json:"rows_dropped"`
	// BaselineSessions counts the copies replayed to the baseline
	// (--baseline); the other counts are the target's copies only.
	BaselineSessions int64 `json:"baseline_sessions"`
}

// OutcomeCounts count sessions by replay.Outcome.
type OutcomeCounts struct {
	OK        int64 `json:"ok"`
	Refused   int64 `json:"refused"`
	Reset     int64 `json:"reset"`
	Timeout   int64 `json:"timeout"`
	Deviation int64 `json:"deviation"`
	Canceled  int64 `json:"canceled"`
	Other     int64 `json:"other"`
	// Incomplete: the capture lacked what the session needed (lost
	// packets); not a failure of the target.
	Incomplete int64 `json:"capture_incomplete"`
}

// MatchCounts count sessions by Match.
type MatchCounts struct {
	Identical     int64 `json:"identical"`
	Volatile      int64 `json:"volatile"`
	SameLength    int64 `json:"same_length"`
	Different     int64 `json:"different"`
	Missing       int64 `json:"missing"`
	NotComparable int64 `json:"not_comparable"`
	NotReplayed   int64 `json:"not_replayed"`
}

// Compared is the number of sessions with a verdict on their answer.
func (m MatchCounts) Compared() int64 {
	return m.Identical + m.Volatile + m.SameLength + m.Different + m.Missing
}

// MatchRate is the fraction of compared sessions whose answer matched
// (identical or differing only in volatile headers); 0 with none compared.
func (m MatchCounts) MatchRate() float64 {
	if n := m.Compared(); n > 0 {
		return float64(m.Identical+m.Volatile) / float64(n)
	}
	return 0
}

func (t *Totals) count(rw *row) {
	t.Sessions++
	o := &t.Outcomes
	switch rw.outcome {
	case replay.OK:
		o.OK++
	case replay.Refused:
		o.Refused++
	case replay.Reset:
		o.Reset++
	case replay.Timeout:
		o.Timeout++
	case replay.Deviation:
		o.Deviation++
	case replay.Canceled:
		o.Canceled++
	case replay.Incomplete:
		o.Incomplete++
	default:
		o.Other++
	}
	m := &t.Match
	switch rw.match {
	case Identical:
		m.Identical++
	case Volatile:
		m.Volatile++
	case SameLength:
		m.SameLength++
	case Different:
		m.Different++
	case Missing:
		m.Missing++
	case NotComparable:
		m.NotComparable++
	default:
		m.NotReplayed++
	}
	if rw.endMismatch() {
		t.EndMismatch++
	}
	t.BytesSent += rw.sent
	t.BytesReceived += rw.recv
	t.CapturedServerBytes += rw.capServerBytes
}

func (rw *row) endMismatch() bool {
	return rw.dialed && rw.outcome != replay.Canceled && rw.endCap != session.EndCaptureEnd && rw.endCap != rw.endRep
}

// WriteText writes a one-line account of the answers, for the end-of-run
// summary.
func (t *Totals) WriteText(w io.Writer) error {
	m := t.Match
	_, err := fmt.Fprintf(w, "answers:  %.1f%% match (%d identical, %d differ only in volatile HTTP headers, %d same length, %d different, %d missing; %d not comparable, %d not replayed), %d ended differently than captured\n",
		100*m.MatchRate(), m.Identical, m.Volatile, m.SameLength, m.Different, m.Missing, m.NotComparable, m.NotReplayed, t.EndMismatch)
	return err
}

// WriteRequestsText writes the per-request comparison for the end-of-run
// summary: the verdicts, the response times side by side, and the routes
// that regressed.
func (rep *Report) WriteRequestsText(w io.Writer) error {
	q := rep.Requests
	if q.Requests == 0 {
		return nil
	}
	// Against the capture a difference is not yet a regression: nothing
	// told noise apart (the JSON field keeps its name).
	regressed := "regressed"
	if q.Against == AgainstCaptured {
		regressed = "differ"
	}
	fmt.Fprintf(w, "requests: %d compared with the %s: %d same, %d differ only in noise, %d %s, %d not comparable\n",
		q.Requests, q.Against, q.Same, q.Noise, q.Regressions, regressed, q.NotCompared)
	lat := func(name string, l LatencyStats) string {
		if l.Count == 0 {
			return ""
		}
		return fmt.Sprintf("; %s p50 %s p90 %s p99 %s", name, usDur(l.P50US), usDur(l.P90US), usDur(l.P99US))
	}
	rt := rep.ResponseTime
	fmt.Fprintf(w, "latency:  to the last byte%s%s%s (target/%s p50 %.2f p99 %.2f)\n",
		lat("target", rt.Replayed), lat("baseline", rt.Baseline), lat("captured", rt.Captured),
		rt.Ratio.Against, rt.Ratio.P50, rt.Ratio.P99)
	for _, r := range rep.Routes {
		// The routes worth a look: those that regressed, and those whose
		// p50 moved by half or more either way.
		if p := r.ResponseTime.Ratio.P50; r.Regressions == 0 && (p == 0 || p < 1.5 && p > 1/1.5) {
			continue
		}
		fmt.Fprintf(w, "  route %s: %d requests, %d %s; target p50 %s, %s p50 %s\n", r.Route, r.Requests, r.Regressions, regressed,
			usDur(r.ResponseTime.Replayed.P50US), r.ResponseTime.Ratio.Against, usDur(refLat(r.ResponseTime).P50US))
	}
	return nil
}

func refLat(rt ResponseTime) LatencyStats {
	if rt.Ratio.Against == AgainstBaseline {
		return rt.Baseline
	}
	return rt.Captured
}

func usDur(us float64) time.Duration {
	d := time.Duration(us * 1e3)
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// Row is one session of the report.
type Row struct {
	// ID numbers the captured sessions in the order they ended in the
	// capture (Tail.EndSeq, as inspect numbers them); a session whose
	// capture had not ended when its replay did has its start number
	// (Head.ID) instead, and Ended false. StartID numbers the sessions in
	// the order they started in the capture, always.
	ID             uint64 `json:"id"`
	StartID        uint64 `json:"start_id"`
	Pass           int    `json:"pass"`
	Copy           int    `json:"copy"`
	CapturedClient string `json:"captured_client"`
	MappedClient   string `json:"mapped_client"`
	Server         string `json:"server"`
	Target         string `json:"target"`
	// LocalAddr is the connection's actual local address (differs from
	// MappedClient with kernel sockets); empty when not connected.
	LocalAddr string `json:"local_addr,omitempty"`
	// Scheduled is when the session was due; DurationMS how long it ran
	// from its dial.
	Scheduled  time.Time `json:"scheduled"`
	DurationMS float64   `json:"duration_ms"`
	Outcome    string    `json:"outcome"`
	Error      string    `json:"error,omitempty"`
	// EndCaptured and EndReplayed name who closed first and how
	// ("client-fin", "server-rst", ...; "capture-end"; "none" when the
	// session never connected).
	EndCaptured         string   `json:"end_captured"`
	EndReplayed         string   `json:"end_replayed"`
	Flags               []string `json:"flags"`
	Chunks              int      `json:"chunks"`
	ChunksSent          int      `json:"chunks_sent"`
	BytesSent           int64    `json:"bytes_sent"`
	BytesReceived       int64    `json:"bytes_received"`
	CapturedClientBytes int64    `json:"captured_client_bytes"`
	CapturedServerBytes int64    `json:"captured_server_bytes"`
	Match               string   `json:"match"`
	// CapturedMatch, for not-comparable sessions: whether the captured
	// parts of the server stream agreed with the answer.
	CapturedMatch *bool `json:"captured_match,omitempty"`
	// FirstDiff is the stream offset of the first difference (-1: none);
	// DiffCaptured and DiffReplayed are up to 32 bytes of each stream from
	// there.
	FirstDiff    int64         `json:"first_diff"`
	DiffCaptured string        `json:"diff_captured,omitempty"`
	DiffReplayed string        `json:"diff_replayed,omitempty"`
	Deviations   DeviationsRow `json:"deviations"`
	// Baseline marks a copy replayed to the baseline (--baseline).
	Baseline bool `json:"baseline,omitempty"`
	// DiffCapturedEsc and DiffReplayedEsc are DiffCaptured and
	// DiffReplayed escaped (printable text as is, other bytes \xNN): no
	// byte is lost, unlike in the JSON strings above.
	DiffCapturedEsc string `json:"diff_captured_escaped,omitempty"`
	DiffReplayedEsc string `json:"diff_replayed_escaped,omitempty"`
}

// DeviationsRow mirrors replay.Deviations.
type DeviationsRow struct {
	TurnTimeouts  int `json:"turn_timeouts"`
	QuietTurns    int `json:"quiet_turns"`
	EarlyClose    int `json:"early_close"`
	CloseTimeouts int `json:"close_timeouts"`
	LostTurns     int `json:"lost_turns"`
}

func (rw *row) export() Row {
	r := Row{
		ID: rw.id, StartID: rw.startID, Pass: int(rw.pass), Copy: int(rw.copy),
		CapturedClient: rw.capClient.String(), MappedClient: rw.mapped.String(),
		Server: rw.server.String(), Target: rw.target.String(),
		Scheduled: rw.scheduled, DurationMS: float64(rw.durationNS/1e3) / 1e3,
		Outcome: rw.outcome.String(), Error: rw.err,
		EndCaptured: rw.endCap.String(), EndReplayed: "none",
		Flags:  rw.flags.Names(),
		Chunks: int(rw.chunks), ChunksSent: int(rw.chunksSent),
		BytesSent: rw.sent, BytesReceived: rw.recv,
		CapturedClientBytes: rw.capClientBytes, CapturedServerBytes: rw.capServerBytes,
		Match: rw.match.String(), FirstDiff: rw.firstDiff,
		DiffCaptured: rw.diffCaptured, DiffReplayed: rw.diffReplayed,
		Deviations: DeviationsRow{int(rw.dev[0]), int(rw.dev[1]), int(rw.dev[2]), int(rw.dev[3]), int(rw.dev[4])},
		Baseline:   rw.baseline,
	}
	if rw.diffCaptured != "" {
		r.DiffCapturedEsc = escape([]byte(rw.diffCaptured), snippetLen)
	}
	if rw.diffReplayed != "" {
		r.DiffReplayedEsc = escape([]byte(rw.diffReplayed), snippetLen)
	}
	if rw.dialed {
		r.EndReplayed = rw.endRep.String()
	}
	if rw.local.IsValid() {
		r.LocalAddr = rw.local.String()
	}
	if rw.match == NotComparable {
		r.CapturedMatch = &rw.capturedMatch
	}
	return r
}

// Report is the end-of-run report: the replay's summary, the intercept's
// totals and one row per session, ordered by pass, session ID and copy.
type Report struct {
	Version int
	Summary *replay.Summary
	Totals  Totals
	// Extras are further top-level members the command adds (the capture
	// agents, say), written after the summary in this order; their names
	// must not be "version", "summary", "totals" or "sessions".
	Extras []Extra
	// Requests and ResponseTime are the per-request comparison over the
	// run (JSON: summary.requests, summary.response_time); Routes the same
	// per route, in route order; Regressions the regressed requests kept
	// (a bounded number per route), in route order.
	Requests     RequestTotals
	ResponseTime ResponseTime
	Routes       []RouteReport
	Regressions  []Regression
	rows         []row
}

// Extra is one more top-level member of the JSON report: Name and the
// JSON encoding of Value.
type Extra struct {
	Name  string
	Value any
}

// Report snapshots what the Recorder holds, with the replay's summary (nil
// to leave it out). The rows are sorted; the Recorder keeps recording.
func (r *Recorder) Report(sum *replay.Summary) *Report {
	r.mu.Lock()
	rep := &Report{Version: ReportVersion, Summary: sum, Totals: r.totals, rows: append([]row(nil), r.rows...)}
	rep.Totals.RowsDropped = r.dropped
	r.mu.Unlock()
	r.reqs.results(rep)
	sort.Slice(rep.rows, func(i, j int) bool {
		a, b := &rep.rows[i], &rep.rows[j]
		if a.pass != b.pass {
			return a.pass < b.pass
		}
		if a.id != b.id {
			return a.id < b.id
		}
		return a.copy < b.copy
	})
	return rep
}

// summaryJSON is the replay's summary with the per-request comparison
// added to it (summary.requests, summary.response_time): the summary's
// own fields stay as they are.
func (rep *Report) summaryJSON() ([]byte, error) {
	b, err := json.Marshal(rep.Summary)
	if err != nil {
		return nil, err
	}
	extra, err := json.Marshal(struct {
		Requests     RequestTotals `json:"requests"`
		ResponseTime ResponseTime  `json:"response_time"`
	}{rep.Requests, rep.ResponseTime})
	if err != nil {
		return nil, err
	}
	// Both are JSON objects: join them ({...a} + {b...}).
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[len(b)-1] != '}' || len(extra) < 2 {
		return nil, fmt.Errorf("summary is not a JSON object")
	}
	out := append(b[:len(b)-1:len(b)-1], ',')
	return append(out, extra[1:]...), nil
}

// Rows returns the report's sessions.
func (rep *Report) Rows() []Row {
	out := make([]Row, len(rep.rows))
	for i := range rep.rows {
		out[i] = rep.rows[i].export()
	}
	return out
}

// WriteJSON writes the report as one JSON object:
//
//	{"version": 1, "summary": {...}, "totals": {...}, "sessions": [{...}, ...]}
//
// with one session per line. Rows are formatted one at a time, so writing a
// large report does not double its memory.
func (rep *Report) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	put := func(prefix string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		bw.WriteString(prefix)
		_, err = bw.Write(b)
		return err
	}
	fmt.Fprintf(bw, "{\n  \"version\": %d,\n", rep.Version)
	if rep.Summary != nil {
		b, err := rep.summaryJSON()
		if err != nil {
			return fmt.Errorf("write report: summary: %w", err)
		}
		bw.WriteString("  \"summary\": ")
		bw.Write(b)
		bw.WriteString(",\n")
	}
	for _, x := range rep.Extras {
		name, _ := json.Marshal(x.Name)
		if err := put("  "+string(name)+": ", x.Value); err != nil {
			return fmt.Errorf("write report: %s: %w", x.Name, err)
		}
		bw.WriteString(",\n")
	}
	if err := put("  \"totals\": ", rep.Totals); err != nil {
		return fmt.Errorf("write report: totals: %w", err)
	}
	routes, regs := rep.Routes, rep.Regressions
	if routes == nil {
		routes = []RouteReport{}
	}
	if regs == nil {
		regs = []Regression{}
	}
	if err := put(",\n  \"routes\": ", routes); err != nil {
		return fmt.Errorf("write report: routes: %w", err)
	}
	if err := put(",\n  \"regressions\": ", regs); err != nil {
		return fmt.Errorf("write report: regressions: %w", err)
	}
	bw.WriteString(",\n  \"sessions\": [")
	for i := range rep.rows {
		sep := ",\n    "
		if i == 0 {
			sep = "\n    "
		}
		if err := put(sep, rep.rows[i].export()); err != nil {
			return fmt.Errorf("write report: session %d: %w", rep.rows[i].id, err)
		}
	}
	if len(rep.rows) > 0 {
		bw.WriteString("\n  ")
	}
	bw.WriteString("]\n}\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Totals returns the totals so far: every session whose Done has returned.
// Unlike Report it copies no rows, so it is cheap enough for every scrape
// of a metrics endpoint; it may be called at any time.
func (r *Recorder) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.totals
	t.RowsDropped = r.dropped
	return t
}
