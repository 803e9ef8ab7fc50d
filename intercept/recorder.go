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
	// DefaultRecordLimit bounds the bytes kept per session for the
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
	// RecordLimit bounds the bytes of one session's answer kept for the
	// volatile-header comparison (default DefaultRecordLimit). Only answers
	// to captured HTTP responses are kept, and at most the captured length
	// plus a few KiB, so memory follows the captured data of the sessions in
	// flight. A longer answer is still compared byte by byte as it arrives.
	RecordLimit int
	// MaxRows bounds the per-session rows kept for the report (about 250
	// bytes each): 0 keeps all, a negative value none. Totals always count
	// every session; Totals.RowsDropped says how many rows were left out.
	MaxRows int
}

// Recorder is the intercept sink's bookkeeping: it implements
// replay.Observer, compares each session's answer with the capture as it
// arrives, and keeps a small row per session for the report.
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
	r := &Recorder{opts: opts, volatile: make(map[string]bool, len(names))}
	for _, n := range names {
		r.volatile[strings.ToLower(n)] = true
	}
	return r
}

var _ replay.Observer = (*Recorder)(nil)

// Begin starts following one session.
func (r *Recorder) Begin(info *replay.SessionInfo) replay.SessionObserver {
	s := info.Session
	o := &sessionObs{r: r, s: s, cmp: newComparer(s), complete: complete(s)}
	o.row = row{
		id: s.ID, pass: int32(info.Pass), copy: int32(info.Copy),
		capClient: s.Client, mapped: info.Client, server: s.Server, target: info.Target,
		endCap: s.End, flags: s.Flags,
		capClientBytes: s.ClientBytes, capServerBytes: s.ServerBytes, chunks: int32(len(s.Chunks)),
		scheduled: info.Scheduled,
	}
	if !r.opts.StrictHTTP && o.complete && bytes.HasPrefix(s.ServerData, []byte("HTTP/1.")) {
		o.recLimit = min(r.opts.RecordLimit, len(s.ServerData)+recordSlack)
		o.recording = true
	}
	return o
}

// sessionObs follows one session. Received and Done run on the session's
// goroutines one after the other, never concurrently: no lock needed.
type sessionObs struct {
	r         *Recorder
	s         *session.Session // dropped at Done
	cmp       comparer
	complete  bool
	recording bool
	recLimit  int
	rec       []byte
	row       row
}

func (o *sessionObs) Received(p []byte) {
	base := o.cmp.n
	o.cmp.feed(p)
	if !o.recording {
		return
	}
	if int(o.cmp.n) > o.recLimit {
		o.recording, o.rec = false, nil
		return
	}
	if o.rec == nil {
		// Recording is lazy: while the answer agrees with the captured one
		// byte for byte (the common case), the recording would be a copy
		// of s.ServerData (complete: no holes, not cut), so none is made.
		// The first byte that differs, or goes beyond the captured
		// answer, starts it from that copy.
		if o.cmp.firstDiff < 0 && o.cmp.n <= int64(len(o.s.ServerData)) {
			return
		}
		o.rec = make([]byte, base, max(int(o.cmp.n), min(o.recLimit, 2*len(o.s.ServerData))))
		copy(o.rec, o.s.ServerData[:base])
	}
	o.rec = append(o.rec, p...)
}

// recorded returns the answer received so far, if it was recorded whole.
func (o *sessionObs) recorded() ([]byte, bool) {
	switch {
	case !o.recording:
		return nil, false
	case o.rec == nil:
		return o.s.ServerData[:o.cmp.n], true // it agreed all along
	}
	return o.rec, int64(len(o.rec)) == o.cmp.n
}

func (o *sessionObs) Done(res *replay.Result) {
	rw := &o.row
	rw.outcome, rw.dialed, rw.endRep, rw.local = res.Outcome, res.Dialed, res.End, res.Local
	rw.sent, rw.recv, rw.chunksSent = res.BytesSent, res.BytesReceived, int32(res.ChunksSent)
	rw.dev = [4]int32{int32(res.Deviations.TurnTimeouts), int32(res.Deviations.QuietTurns),
		int32(res.Deviations.EarlyClose), int32(res.Deviations.CloseTimeouts)}
	if !res.Start.IsZero() {
		rw.durationNS = res.Finish.Sub(res.Start).Nanoseconds()
	}
	if res.Err != nil {
		rw.err = res.Err.Error()
	}
	o.classify()
	o.s, o.rec, o.cmp.segs = nil, nil, nil
	o.r.add(rw)
}

// classify sets the row's match class and first difference.
func (o *sessionObs) classify() {
	rw, c := &o.row, &o.cmp
	capBytes := o.s.ServerBytes
	rw.firstDiff = -1
	switch {
	case !rw.dialed:
		rw.match = NotReplayed
		return
	case rw.outcome == replay.Canceled:
		// Cut short by the user (SIGINT): no verdict on the answer, only
		// whether what arrived agreed with the capture so far.
		rw.match = NotComparable
		rw.capturedMatch = c.firstDiff < 0
		if c.firstDiff >= 0 {
			rw.firstDiff = c.firstDiff
			o.snippets()
		}
		return
	case c.n == 0 && capBytes > 0:
		rw.match = Missing
		rw.firstDiff = 0
		return
	case !o.complete:
		rw.match = NotComparable
		rw.capturedMatch = c.firstDiff < 0
		if c.firstDiff >= 0 {
			rw.firstDiff = c.firstDiff
			o.snippets()
		}
		return
	case c.firstDiff < 0 && c.n == capBytes:
		rw.match = Identical
		return
	}
	rw.firstDiff = c.firstDiff
	if rw.firstDiff < 0 {
		rw.firstDiff = min(c.n, capBytes) // a prefix of the other
	}
	if rec, ok := o.recorded(); ok {
		a, okA := normalizeHTTP(rec, o.r.volatile)
		b, okB := normalizeHTTP(o.s.ServerData, o.r.volatile)
		if okA && okB && bytes.Equal(a, b) {
			rw.match = Volatile
			return
		}
	}
	rw.match = Different
	if c.n == capBytes {
		rw.match = SameLength
	}
	o.snippets()
}

// snippets keeps short excerpts of both streams at the first difference.
func (o *sessionObs) snippets() {
	rw := &o.row
	rw.diffCaptured = string(o.cmp.capturedAt(rw.firstDiff))
	if o.cmp.firstDiff >= 0 {
		rw.diffReplayed = string(o.cmp.replayed)
	}
}

// row is the compact per-session record; the report formats it.
type row struct {
	id                                uint64
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
	dev                               [4]int32 // turn timeouts, quiet, early close, close timeouts
	firstDiff                         int64
	err                               string
	diffCaptured, diffReplayed        string
}

func (r *Recorder) add(rw *row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.totals.count(rw)
	if r.opts.MaxRows < 0 || (r.opts.MaxRows > 0 && len(r.rows) >= r.opts.MaxRows) {
		r.dropped++
		return
	}
	r.rows = append(r.rows, *rw)
}
