package intercept

import (
	"bytes"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Defaults for the zero values of Options.
const (
	// DefaultRecordLimit bounds the bytes kept per session stream: the
	// lead of one stream over the other, and the answers recorded for the
	// volatile-header comparison.
	DefaultRecordLimit = 1 << 20
	// recordSlack: an answer this much longer than the captured one can
	// still differ only in header values (a longer Server or Set-Cookie
	// value); beyond it, it is Different whatever its headers say.
	recordSlack = 4 << 10
)

// Options configure a Recorder. The zero value is usable.
type Options struct {
	// StrictHTTP turns off the Volatile class: answers that differ only in
	// volatile HTTP header values then count as SameLength or Different.
	StrictHTTP bool
	// VolatileHeaders replaces DefaultVolatileHeaders (case-insensitive).
	VolatileHeaders []string
	// RecordLimit bounds the bytes kept of each of a session's two streams
	// (default DefaultRecordLimit; the CLI's --response-limit):
	//
	//   - The captured answer and the target's answer are compared as both
	//     arrive; the one that is ahead is kept only until the other
	//     catches up, at most RecordLimit bytes of lead. Bytes beyond it are
	//     not kept, and when the other side reaches them they go
	//     uncompared: the session is then NotComparable (CapturedMatch
	//     true) unless a difference was found in what was compared, which
	//     decides SameLength or Different as usual. A longer lead never
	//     costs more memory. The target's lead is a copy; the captured
	//     lead is references to the segments Captured was given (not
	//     copied), at most RecordLimit bytes of them, which pin at most
	//     the rest of the segments at its two ends besides.
	//   - For the Volatile class both answers are kept whole while the
	//     captured one starts with "HTTP/1." (and StrictHTTP is off), as
	//     long as neither is longer than RecordLimit. The captured one is
	//     kept by reference, and while the answers agree the target's is
	//     not copied either (it is the captured prefix). Only at Done, when
	//     the answers differ, are they copied into one slice each and
	//     normalised (transient copies of at most about RecordLimit each).
	//
	// So a session holds at most about RecordLimit bytes of copies of the
	// answer and references to RecordLimit captured bytes (pinning less
	// than two segments more), whatever its length.
	RecordLimit int
	// MaxRows bounds the per-session rows kept for the report (about 250
	// bytes each): 0 keeps all, a negative value none. Totals always count
	// every session; Totals.RowsDropped says how many rows were left out.
	MaxRows int
	// Rules are what the per-request comparison ignores (--ignore); nil:
	// only the volatile HTTP headers.
	Rules *Rules
	// Baseline says that a baseline target runs (replay.Config.Baseline):
	// each request of a copy to the target is compared with the answer of
	// its baseline twin, and the baseline's own differences (from the
	// capture, and between its answers to the same request) are learned
	// as noise. Without it the reference is the capture.
	Baseline bool
}

// Recorder is the intercept sink's bookkeeping: it implements
// replay.Observer, compares each session's answer with the captured one as
// both arrive, and keeps a small row per session for the report.
//
// Begin and Report may be called concurrently; the per-session observers
// follow replay.SessionObserver's contract. After a session's Done the
// Recorder keeps no reference to its captured data.
type Recorder struct {
	opts     Options
	volatile map[string]bool

	mu      sync.Mutex
	rows    []row
	totals  Totals
	dropped int64

	reqs *reqStats // the per-request comparison (its own lock)
}

// New returns a Recorder.
func New(opts Options) *Recorder {
	if opts.RecordLimit <= 0 {
		opts.RecordLimit = DefaultRecordLimit
	}
	names := opts.VolatileHeaders
	if names == nil {
		names = DefaultVolatileHeaders
	}
	r := &Recorder{opts: opts, volatile: make(map[string]bool, len(names)), reqs: newReqStats(opts.Baseline)}
	for _, n := range names {
		r.volatile[strings.ToLower(n)] = true
	}
	return r
}

var _ replay.Observer = (*Recorder)(nil)

// Begin starts following one session. Only the Head is known yet: the
// row's capture-end fields (and its id, the session's end number) are
// filled from the Result's Tail at Done.
func (r *Recorder) Begin(info *replay.SessionInfo) replay.SessionObserver {
	h := info.Head
	o := &sessionObs{r: r, cmp: newComparer(r.opts.RecordLimit, !r.opts.StrictHTTP)}
	o.row = row{
		id: h.ID, startID: h.ID, pass: int32(info.Pass), copy: int32(info.Copy),
		capClient: h.Client, mapped: info.Client, server: h.Server, target: info.Target,
		scheduled: info.Scheduled, baseline: info.Baseline,
	}
	key := joinKey{pass: info.Pass, copy: info.Copy, id: h.ID}
	o.key, o.base = key, info.Baseline
	o.trk = newTracker(r, h.Server, func(rec reqRec) { r.reqs.add(key, h.ID, info.Baseline, rec) })
	if h.Partial {
		o.row.flags = session.Partial
	}
	return o
}

// sessionObs follows one session. Its methods run on the session's owner
// goroutine one after the other, never concurrently: no lock needed.
type sessionObs struct {
	r    *Recorder
	cmp  comparer // its stores are dropped at Done
	row  row
	trk  *tracker // the per-request comparison
	key  joinKey
	base bool
}

var _ replay.TimedObserver = (*sessionObs)(nil)

// Captured and Received (an engine that gives no times) compare the
// session as a whole only: the per-request comparison needs the requests
// and the times, which only the TimedObserver calls give.
func (o *sessionObs) Captured(off int64, data []byte) { o.cmp.captured(off, data) }

func (o *sessionObs) Received(p []byte) { o.cmp.received(p) }

func (o *sessionObs) CapturedAt(off int64, data []byte, at time.Duration) {
	o.cmp.captured(off, data)
	o.trk.captured(off, data, at)
}

func (o *sessionObs) ReceivedAt(p []byte, at time.Time) {
	o.cmp.received(p)
	o.trk.received(p, at)
}

func (o *sessionObs) Sent(c session.Chunk, at time.Time) { o.trk.sent(c, at) }

func (o *sessionObs) Done(res *replay.Result) {
	rw := &o.row
	rw.outcome, rw.dialed, rw.endRep, rw.local = res.Outcome, res.Dialed, res.End, res.Local
	rw.sent, rw.recv, rw.chunksSent = res.BytesSent, res.BytesReceived, int32(res.ChunksSent)
	rw.chunks = int32(res.Chunks)
	rw.dev = [5]int32{int32(res.Deviations.TurnTimeouts), int32(res.Deviations.QuietTurns),
		int32(res.Deviations.EarlyClose), int32(res.Deviations.CloseTimeouts), int32(res.Deviations.LostTurns)}
	if !res.Start.IsZero() {
		rw.durationNS = res.Finish.Sub(res.Start).Nanoseconds()
	}
	if res.Err != nil {
		rw.err = res.Err.Error()
	}
	if t := res.Tail; t != nil {
		// The report numbers sessions in the order they ended in the
		// capture, as inspect and the complete-session model do.
		rw.id = t.EndSeq
		rw.endCap, rw.flags = t.End, t.Flags
		rw.capClientBytes, rw.capServerBytes = t.ClientBytes, t.ServerBytes
	} else {
		// The capture had not ended: what is known so far. The row keeps
		// the session's start number (Head.ID): it has no end number.
		// endCap stays capture-end (which matches any replayed end).
		if o.cmp.holes {
			rw.flags |= session.Holes
		}
		rw.capServerBytes = o.cmp.end[capSide]
	}
	o.classify(res)
	o.cmp.release()
	if res.Outcome == replay.Canceled || res.Dropped > 0 || res.Tail == nil {
		// Cut short: what was not paired yet has no verdict.
		o.trk.capS.drop()
	}
	o.trk.finish()
	o.r.reqs.done(o.key, o.key.id, o.base)
	o.r.add(rw)
}

// complete reports whether the captured server stream arrived whole, so that
// a verdict is possible: the capture ended (Tail), nothing was cut by the
// builder's limit, no hole was skipped, and the captured bytes add up to
// the stream's length. (A snap length cut of the server stream shows as
// holes; one of the client stream alone does not make the answer
// incomparable.)
func (o *sessionObs) complete(t *session.Tail) bool {
	return t != nil && t.Flags&session.ServerCut == 0 && !o.cmp.holes && o.cmp.capBytes == t.ServerBytes
}

// classify sets the row's match class and first difference.
func (o *sessionObs) classify(res *replay.Result) {
	rw, c := &o.row, &o.cmp
	n := c.end[repSide]
	capBytes := rw.capServerBytes
	rw.firstDiff = -1
	switch {
	case !rw.dialed:
		rw.match = NotReplayed
		return
	case rw.outcome == replay.Canceled, res.Dropped > 0:
		// Cut short by the user (SIGINT), or the replay could not send
		// all the client had sent (a live capture outran it): no verdict
		// on the answer, only whether what arrived agreed with the
		// capture so far.
		o.notComparable()
		return
	case n == 0 && capBytes > 0:
		rw.match = Missing
		rw.firstDiff = 0
		return
	case !o.complete(res.Tail):
		o.notComparable()
		return
	case c.firstDiff < 0 && c.skipped:
		// What was compared agreed, but not all of it could be (a
		// stream's lead outgrew RecordLimit): no verdict.
		o.notComparable()
		return
	case c.firstDiff < 0 && n == capBytes:
		rw.match = Identical
		return
	}
	rw.firstDiff = c.firstDiff
	if rw.firstDiff < 0 {
		rw.firstDiff = min(n, capBytes) // a prefix of the other
	}
	if o.volatile(capBytes) {
		rw.match = Volatile
		return
	}
	rw.match = Different
	if n == capBytes {
		rw.match = SameLength
	}
	o.snippets()
}

// notComparable classifies the row as NotComparable, telling whether the
// parts compared agreed.
func (o *sessionObs) notComparable() {
	rw, c := &o.row, &o.cmp
	rw.match = NotComparable
	rw.capturedMatch = c.firstDiff < 0
	if c.firstDiff >= 0 {
		rw.firstDiff = c.firstDiff
		o.snippets()
	}
}

// volatile reports whether both answers were recorded and differ only in
// volatile HTTP header values.
func (o *sessionObs) volatile(capBytes int64) bool {
	c := &o.cmp
	if !c.recording || !c.http || c.end[repSide] > capBytes+recordSlack {
		return false
	}
	// Only now, at Done, are the captured references made one slice.
	capd, ok := c.capturedWhole()
	if !ok {
		return false
	}
	ans, ok := c.answer(capd)
	if !ok {
		return false
	}
	a, okA := normalizeHTTP(ans, o.r.volatile)
	b, okB := normalizeHTTP(capd, o.r.volatile)
	return okA && okB && bytes.Equal(a, b)
}

// snippets keeps short excerpts of both streams at the first difference.
func (o *sessionObs) snippets() {
	rw, c := &o.row, &o.cmp
	rw.diffCaptured = string(c.excerpt(capSide, rw.firstDiff))
	if c.firstDiff >= 0 {
		rw.diffReplayed = string(c.excerpt(repSide, c.firstDiff))
	}
}

// row is the compact per-session record; the report formats it.
type row struct {
	id, startID                       uint64
	pass, copy                        int32
	capClient, mapped, server, target netip.AddrPort
	local                             netip.AddrPort
	scheduled                         time.Time
	durationNS                        int64
	outcome                           replay.Outcome
	dialed                            bool
	endCap, endRep                    session.End
	flags                             session.Flags
	match                             Match
	capturedMatch                     bool
	sent, recv                        int64
	capClientBytes, capServerBytes    int64
	chunks, chunksSent                int32
	dev                               [5]int32 // turn timeouts, quiet, early close, close timeouts, lost turns
	firstDiff                         int64
	baseline                          bool
	err                               string
	diffCaptured, diffReplayed        string
}

func (r *Recorder) add(rw *row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rw.baseline {
		r.totals.BaselineSessions++
	} else {
		r.totals.count(rw)
	}
	if r.opts.MaxRows < 0 || (r.opts.MaxRows > 0 && len(r.rows) >= r.opts.MaxRows) {
		r.dropped++
		return
	}
	r.rows = append(r.rows, *rw)
}
