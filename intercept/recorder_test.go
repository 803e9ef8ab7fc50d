package intercept

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func capSession(id uint64, server string, flags session.Flags, holes ...session.Hole) *session.Session {
	s := &session.Session{
		ID:     id,
		Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), uint16(50000+id)),
		Server: netip.MustParseAddrPort("10.0.0.1:80"), ISN: 7,
		Start: t0, StartOffset: time.Duration(id) * time.Second, Duration: time.Second,
		Chunks:     []session.Chunk{{Data: []byte("GET / HTTP/1.1\r\n\r\n")}},
		ServerData: []byte(server), ServerBytes: int64(len(server)), End: session.EndClientFIN,
		Flags: flags, Holes: holes,
	}
	s.ClientBytes = int64(len(s.Chunks[0].Data))
	for _, h := range holes {
		if h.Server {
			s.ServerBytes += h.Len
		}
	}
	return s
}

// order is how play interleaves the captured server bytes (Captured) and
// the target's answer (Received).
type order int

const (
	capturedFirst order = iota // the whole capture, then the answer
	capturedLast               // the answer, then the capture (the capture lags)
	capturedLeads              // alternating pieces, a captured one first
	answerLeads                // alternating pieces, a piece of the answer first
)

var orders = []order{capturedFirst, capturedLast, capturedLeads, answerLeads}

func (o order) String() string {
	return [...]string{"captured-first", "captured-last", "captured-leads", "answer-leads"}[o]
}

// feeding is how play hands a session to a Recorder.
type feeding struct {
	answer string
	step   int // size of the pieces of both streams; 0: one piece each
	order  order
	res    replay.Result
	// cut: the replay ended before the capture did (Result.Tail nil); the
	// session's ServerData is what had been captured by then.
	cut bool
}

// play feeds one session through a Recorder as the engine would: Begin with
// the session's Head, its captured server segments and the answer in pieces
// interleaved as f says, then Done with f.res completed (Tail, Chunks, bytes
// received). Each captured piece is passed in a slice of its own that is
// never modified (the replay's copy, which the observer may keep until
// Done); each piece of the answer in a buffer that is overwritten after the
// call, as the engine's receive buffer is reused. After every call the
// session's two sides must be within their bound, and the captured side
// must hold references to the captured pieces, not copies (see checkCaps);
// after Done nothing may be held, and no captured piece may have been
// modified. play may run on any goroutine (it reports with t.Errorf only).
func play(t testing.TB, r *Recorder, s *session.Session, f feeding) {
	t.Helper()
	info := &replay.SessionInfo{Head: s.Head(), Client: netip.MustParseAddrPort("198.18.3.4:20000"),
		Target: netip.MustParseAddrPort("127.0.0.1:8080"), Scheduled: t0.Add(s.StartOffset)}
	o := r.Begin(info).(*sessionObs)
	step := f.step
	if step <= 0 {
		step = 1 << 30
	}
	var capd []capPiece
	s.ServerSegments(func(off int64, data []byte) {
		for len(data) > 0 {
			n := min(step, len(data))
			capd = append(capd, capPiece{off, append([]byte(nil), data[:n]...)})
			off, data = off+int64(n), data[n:]
		}
	})
	given := capd[:len(capd):len(capd)] // the pieces as passed, to check against
	var ans [][]byte
	for b := []byte(f.answer); len(b) > 0; b = b[min(step, len(b)):] {
		ans = append(ans, b[:min(step, len(b))])
	}
	buf := make([]byte, min(step, 1<<20))
	scratch := func(p []byte) []byte {
		if len(p) > len(buf) {
			buf = make([]byte, len(p))
		}
		return buf[:copy(buf, p)]
	}
	check := func(what string) {
		t.Helper()
		if st := &o.cmp.rep; st.held() > o.cmp.bound || cap(st.buf) > 3*o.cmp.bound {
			t.Errorf("after %s: the answer's store holds %d bytes (cap %d), bound %d", what, st.held(), cap(st.buf), o.cmp.bound)
		}
		checkCaps(t, what, &o.cmp, given[:len(given)-len(capd)])
		for i := range buf {
			buf[i] = '#' // the caller reuses its buffer
		}
	}
	sendCap := func() {
		p := capd[0]
		capd = capd[1:]
		o.Captured(p.off, p.data)
		check("Captured")
	}
	sendAns := func() {
		p := ans[0]
		ans = ans[1:]
		o.Received(scratch(p))
		check("Received")
	}
	switch f.order {
	case capturedFirst:
		for len(capd) > 0 {
			sendCap()
		}
	case capturedLast:
		for len(ans) > 0 {
			sendAns()
		}
	}
	for turn := f.order == answerLeads; len(capd)+len(ans) > 0; turn = !turn {
		if turn && len(ans) > 0 || len(capd) == 0 {
			sendAns()
		} else {
			sendCap()
		}
	}
	res := f.res
	if res.Outcome == replay.OK && !res.Dialed && res.Err == nil {
		res.Dialed = true
		res.End = s.End
	}
	if res.Dialed {
		res.Local = info.Client
	}
	if !f.cut {
		res.Tail = s.Tail()
		res.Chunks = len(s.Chunks)
	}
	res.BytesReceived = int64(len(f.answer))
	o.Done(&res)
	if st := o.cmp.rep; st.buf != nil || st.runs != nil {
		t.Errorf("the answer's store kept after Done: %d bytes", cap(st.buf))
	}
	if cs := o.cmp.caps; cs.s != nil || cs.n != 0 {
		t.Errorf("captured references kept after Done: %d runs, %d bytes", len(cs.s), cs.n)
	}
	s.ServerSegments(func(off int64, data []byte) {
		for len(data) > 0 {
			n := min(step, len(data))
			if p := given[0]; p.off != off || !bytes.Equal(p.data, data[:n]) {
				t.Errorf("the captured piece at %d was modified: %q, passed %q", off, p.data, data[:n])
			}
			given = given[1:]
			off, data = off+int64(n), data[n:]
		}
	})
}

// capPiece is a piece of the captured server stream as passed to Captured.
type capPiece struct {
	off  int64
	data []byte
}

// checkCaps checks the captured side of c after the pieces given were
// passed to Captured: the runs it keeps are in stream order and hold at
// most c.bound bytes; a run of a piece of at least smallSeg bytes is that
// piece's own memory (a reference, not a copy), and a run of small pieces
// a chunk of its own with their bytes; and the pieces referenced pin at
// most the bytes kept plus the parts of the two at its ends that are not.
func checkCaps(t testing.TB, what string, c *comparer, given []capPiece) {
	t.Helper()
	cs := &c.caps
	if cs.n > c.bound || len(cs.live()) > c.bound || cap(cs.s) > 3*c.bound+firstSegs {
		t.Errorf("after %s: the captured side keeps %d bytes in %d runs (cap %d), bound %d",
			what, cs.n, len(cs.live()), cap(cs.s), c.bound)
	}
	// The piece holding stream offset off.
	piece := func(off int64) (capPiece, bool) {
		i := sort.Search(len(given), func(i int) bool { return given[i].off+int64(len(given[i].data)) > off })
		if i == len(given) || given[i].off > off {
			return capPiece{}, false
		}
		return given[i], true
	}
	// A dropped reference must not pin its piece.
	for i, r := range append(cs.s[:cs.head:cs.head], cs.s[len(cs.s):cap(cs.s)]...) {
		if r.data != nil {
			t.Errorf("after %s: a dropped captured run (%d) still refers to %d bytes", what, i, cap(r.data))
		}
	}
	n, end, maxPiece := 0, int64(-1), 0
	pinned := map[*byte]int{}
	for _, p := range given {
		maxPiece = max(maxPiece, len(p.data))
	}
	for _, r := range cs.live() {
		n += len(r.data)
		if len(r.data) == 0 || r.off < end {
			t.Errorf("after %s: captured run of %d bytes at %d, after %d", what, len(r.data), r.off, end)
			return
		}
		end = r.off + int64(len(r.data))
		p, ok := piece(r.off)
		if !ok {
			t.Errorf("after %s: captured run at %d: nothing was passed there", what, r.off)
			return
		}
		if !r.own {
			if len(p.data) < smallSeg || r.off+int64(len(r.data)) > p.off+int64(len(p.data)) ||
				&r.data[0] != &p.data[r.off-p.off] {
				t.Errorf("after %s: captured run at %d (%d bytes) is not a reference into the piece passed at %d (%d bytes)",
					what, r.off, len(r.data), p.off, len(p.data))
			}
			pinned[&p.data[0]] = len(p.data)
			continue
		}
		if cap(r.data) > 2*smallChunk {
			t.Errorf("after %s: owned chunk at %d of cap %d", what, r.off, cap(r.data))
		}
		for o := r.off; o < end; {
			p, ok := piece(o)
			if !ok || len(p.data) >= smallSeg {
				t.Errorf("after %s: captured bytes at %d copied (piece of %d bytes)", what, o, len(p.data))
				break
			}
			k := min(end, p.off+int64(len(p.data)))
			if !bytes.Equal(r.data[o-r.off:k-r.off], p.data[o-p.off:k-p.off]) {
				t.Errorf("after %s: owned bytes at %d differ from those passed", what, o)
			}
			if &r.data[o-r.off] == &p.data[o-p.off] {
				t.Errorf("after %s: owned chunk at %d is the piece passed", what, o)
			}
			o = k
		}
	}
	if n != cs.n {
		t.Errorf("after %s: the captured side counts %d bytes, its runs hold %d", what, cs.n, n)
	}
	sum := 0
	for _, l := range pinned {
		sum += l
	}
	if sum > n+2*maxPiece {
		t.Errorf("after %s: the captured runs pin %d bytes of pieces for %d kept (largest piece %d)", what, sum, n, maxPiece)
	}
}

// playAll plays s in every order with pieces of each size and returns the
// row of each, keyed by order and step.
func playAll(t *testing.T, opts Options, s *session.Session, f feeding, steps ...int) map[string]Row {
	t.Helper()
	rows := map[string]Row{}
	for _, ord := range orders {
		for _, step := range steps {
			r := New(opts)
			f.order, f.step = ord, step
			play(t, r, s, f)
			rs := r.Report(nil).Rows()
			if len(rs) != 1 {
				t.Fatalf("%d rows", len(rs))
			}
			rows[fmt.Sprintf("%s/step%d", ord, step)] = rs[0]
		}
	}
	return rows
}

const (
	resp1 = "HTTP/1.1 200 OK\r\nDate: Mon, 02 Mar 2026 10:00:00 GMT\r\nServer: nginx/1.24.0\r\nETag: \"abc\"\r\n" +
		"Set-Cookie: sid=AAAA; Path=/; HttpOnly\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	resp1Later = "HTTP/1.1 200 OK\r\nDate: Wed, 04 Mar 2026 05:06:07 GMT\r\nServer: nginx/1.25.3\r\nETag: \"abcdef\"\r\n" +
		"Set-Cookie: sid=BBBBBBBB; Path=/; HttpOnly\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	chunked = "HTTP/1.1 200 OK\r\nDate: Mon, 02 Mar 2026 10:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nExpires: never\r\n\r\n"
	chunkedLater = "HTTP/1.1 200 OK\r\nDate: Thu, 05 Mar 2026 11:11:11 GMT\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nExpires: never\r\n\r\n"
	notModified = "HTTP/1.1 304 Not Modified\r\nDate: Mon, 02 Mar 2026 10:00:00 GMT\r\nETag: \"1\"\r\n\r\n"
)

func TestMatchClasses(t *testing.T) {
	later := strings.Replace(resp1, "Mon, 02 Mar 2026 10:00:00", "Tue, 03 Mar 2026 11:11:11", 1)
	for _, tc := range []struct {
		name      string
		s         *session.Session
		answer    string
		opts      Options
		res       replay.Result
		cut       bool
		want      Match
		firstDiff int64
	}{
		{name: "identical", s: capSession(0, resp1, 0), answer: resp1, want: Identical, firstDiff: -1},
		{name: "both empty", s: capSession(0, "", 0), answer: "", want: Identical, firstDiff: -1},
		{name: "date only, same length", s: capSession(0, resp1, 0), answer: later, want: Volatile,
			firstDiff: int64(strings.Index(resp1, "Mon"))},
		{name: "volatile values of other lengths", s: capSession(0, resp1, 0), answer: resp1Later, want: Volatile,
			firstDiff: int64(strings.Index(resp1, "Mon"))},
		{name: "keep-alive: chunked, 304 and content-length", s: capSession(0, chunked+notModified+resp1, 0),
			answer: chunkedLater + strings.Replace(notModified, "\"1\"", "\"22\"", 1) + resp1Later, want: Volatile,
			firstDiff: int64(strings.Index(chunked, "Mon"))},
		{name: "http, one answer more", s: capSession(0, resp1, 0), answer: resp1 + later, want: Different,
			firstDiff: int64(len(resp1))},
		{name: "http, agreeing, then a volatile header later", s: capSession(0, resp1+resp1, 0), answer: resp1 + resp1Later, want: Volatile,
			firstDiff: int64(len(resp1) + strings.Index(resp1, "Mon"))},
		{name: "strict http", s: capSession(0, resp1, 0), answer: later, opts: Options{StrictHTTP: true},
			want: SameLength, firstDiff: int64(strings.Index(resp1, "Mon"))},
		{name: "body differs", s: capSession(0, resp1, 0), answer: strings.Replace(later, "hello", "HELLO", 1),
			want: SameLength, firstDiff: int64(strings.Index(resp1, "Mon"))},
		{name: "other header differs", s: capSession(0, resp1, 0), answer: strings.Replace(resp1, "text/plain", "text/html", 1),
			want: Different, firstDiff: int64(strings.Index(resp1, "plain"))},
		{name: "status differs", s: capSession(0, resp1, 0), answer: strings.Replace(resp1, "200 OK", "500 NO", 1),
			want: SameLength, firstDiff: 9},
		{name: "shorter prefix", s: capSession(0, "abcdefgh", 0), answer: "abcd", want: Different, firstDiff: 4},
		{name: "longer", s: capSession(0, "abcd", 0), answer: "abcdefgh", want: Different, firstDiff: 4},
		{name: "not http", s: capSession(0, "+OK ready 1\r\n", 0), answer: "+OK ready 2\r\n", want: SameLength, firstDiff: 10},
		{name: "missing", s: capSession(0, resp1, 0), answer: "", want: Missing, firstDiff: 0},
		{name: "answer where none was captured", s: capSession(0, "", 0), answer: "x", want: Different, firstDiff: 0},
		{name: "record limit", s: capSession(0, resp1, 0), answer: later, opts: Options{RecordLimit: 10},
			want: SameLength, firstDiff: int64(strings.Index(resp1, "Mon"))},
		{name: "server hole, captured parts agree", s: capSession(0, "abcdgh", session.Holes,
			session.Hole{Server: true, Offset: 4, Len: 2}), answer: "abcdXXgh", want: NotComparable, firstDiff: -1},
		{name: "server hole, captured parts differ", s: capSession(0, "abcdgh", session.Holes,
			session.Hole{Server: true, Offset: 4, Len: 2}), answer: "abcdXXgZ", want: NotComparable, firstDiff: 7},
		{name: "client hole only", s: capSession(0, "abcd", session.Holes,
			session.Hole{Server: false, Offset: 4, Len: 2}), answer: "abcd", want: Identical, firstDiff: -1},
		{name: "canceled mid-answer, agreeing so far", s: capSession(0, resp1, 0), answer: resp1[:20], want: NotComparable, firstDiff: -1,
			res: replay.Result{Outcome: replay.Canceled, Dialed: true, Err: context.Canceled}},
		{name: "canceled mid-answer, differing", s: capSession(0, "abcdef", 0), answer: "abX", want: NotComparable, firstDiff: 2,
			res: replay.Result{Outcome: replay.Canceled, Dialed: true, Err: context.Canceled}},
		{name: "refused", s: capSession(0, resp1, 0), answer: "", want: NotReplayed, firstDiff: -1,
			res: replay.Result{Outcome: replay.Refused, Err: syscall.ECONNREFUSED}},
		{name: "server hole at the start", s: capSession(0, "cdef", session.Holes,
			session.Hole{Server: true, Offset: 0, Len: 2}), answer: "abcdef", want: NotComparable, firstDiff: -1},
		{name: "server hole at the end", s: capSession(0, "abcd", session.Holes,
			session.Hole{Server: true, Offset: 4, Len: 2}), answer: "abcdef", want: NotComparable, firstDiff: -1},
		{name: "server hole, http", s: capSession(0, resp1[:20]+resp1[30:], session.Holes,
			session.Hole{Server: true, Offset: 20, Len: 10}), answer: resp1, want: NotComparable, firstDiff: -1},
		{name: "server cut by the builder's limit", s: func() *session.Session {
			s := capSession(0, "abcd", session.Truncated|session.ServerCut)
			s.ServerBytes = 10
			return s
		}(), answer: "abcdefghij", want: NotComparable, firstDiff: -1},
		{name: "client snap length cut only", s: capSession(0, "abcd", session.Holes|session.Truncated|session.SnapLen,
			session.Hole{Server: false, Offset: 4, Len: 2}), answer: "abcd", want: Identical, firstDiff: -1},
		{name: "replay ended before the capture, agreeing so far", s: capSession(0, resp1[:30], 0), answer: resp1, cut: true,
			want: NotComparable, firstDiff: -1, res: replay.Result{Outcome: replay.Reset, Dialed: true, Err: syscall.ECONNRESET}},
		{name: "replay ended before the capture, differing", s: capSession(0, resp1[:30], 0), answer: later, cut: true,
			want: NotComparable, firstDiff: int64(strings.Index(resp1, "Mon")), res: replay.Result{Outcome: replay.Reset, Dialed: true, Err: syscall.ECONNRESET}},
		{name: "replay ended before the capture, nothing captured yet", s: capSession(0, "", 0), answer: "", cut: true,
			want: NotComparable, firstDiff: -1, res: replay.Result{Outcome: replay.Deviation, Dialed: true}},
		{name: "replay ended before the capture, no answer", s: capSession(0, "abc", 0), answer: "", cut: true,
			want: Missing, firstDiff: 0, res: replay.Result{Outcome: replay.Deviation, Dialed: true}},
		{name: "client bytes dropped", s: capSession(0, resp1, 0), answer: resp1[:40], want: NotComparable, firstDiff: -1,
			res: replay.Result{Outcome: replay.OK, Dialed: true, End: session.EndClientFIN, Dropped: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := playAll(t, tc.opts, tc.s, feeding{answer: tc.answer, res: tc.res, cut: tc.cut}, 1, 7, 64, 1<<20)
			for name, row := range rows {
				if row.Match != tc.want.String() || row.FirstDiff != tc.firstDiff {
					t.Errorf("%s: match %s first diff %d, want %s %d", name, row.Match, row.FirstDiff, tc.want, tc.firstDiff)
				}
				if tc.want == NotComparable && (row.CapturedMatch == nil || *row.CapturedMatch != (tc.firstDiff < 0)) {
					t.Errorf("%s: captured match %v", name, row.CapturedMatch)
				}
			}
		})
	}
}

// TestSnippets: the excerpts at the first difference are the same whichever
// stream arrives first, also when the captured side arrives after the
// target's answer, and whether or not the answers are being recorded for
// the volatile check.
func TestSnippets(t *testing.T) {
	for _, tc := range []struct {
		name, captured, answer string
		firstDiff              int64
		diffCaptured           string
		diffReplayed           string
	}{
		{"http", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 503 Unavailable\r\n\r\n", 9,
			"200 OK\r\nContent-Length: 2\r\n\r\nok", "503 Unavailable\r\n\r\n"},
		{"not http, long tails", "+OK " + strings.Repeat("a", 100), "+OK " + strings.Repeat("b", 100), 4,
			strings.Repeat("a", 32), strings.Repeat("b", 32)},
		{"answer shorter", "0123456789abcdefghij", "0123456789", 10, "abcdefghij", ""},
		{"answer longer", "0123456789", "0123456789abcdefghij", 10, "", ""},
		// With pieces of 64 bytes (kept by reference) the excerpts span
		// two pieces.
		{"across pieces", strings.Repeat("0123456789", 20), strings.Repeat("0123456789", 6) + "X" + strings.Repeat("0123456789", 14)[1:], 60,
			strings.Repeat("0123456789", 4)[:32], "X1234567890123456789012345678901"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := playAll(t, Options{}, capSession(0, tc.captured, 0), feeding{answer: tc.answer}, 1, 3, 64, 1<<20)
			for name, row := range rows {
				if row.FirstDiff != tc.firstDiff || row.DiffCaptured != tc.diffCaptured || row.DiffReplayed != tc.diffReplayed {
					t.Errorf("%s: first diff %d, snippets %q / %q; want %d, %q / %q", name, row.FirstDiff,
						row.DiffCaptured, row.DiffReplayed, tc.firstDiff, tc.diffCaptured, tc.diffReplayed)
				}
			}
		})
	}
}

// TestCapturedArrivesLate: the capture delivers the server bytes after the
// target has answered whole (a replay that runs ahead of the capture), in
// pieces; the difference is found only then, with both excerpts.
func TestCapturedArrivesLate(t *testing.T) {
	captured := resp1 + resp1
	answer := resp1 + strings.Replace(resp1, "hello", "HELLO", 1)
	at := int64(len(resp1) + strings.Index(resp1, "hello"))
	for _, step := range []int{1, 5, 64, 1 << 20} {
		r := New(Options{})
		play(t, r, capSession(0, captured, 0), feeding{answer: answer, step: step, order: capturedLast})
		row := r.Report(nil).Rows()[0]
		if row.Match != "same-length" || row.FirstDiff != at || row.DiffCaptured != "hello" || row.DiffReplayed != "HELLO" {
			t.Errorf("step %d: %s at %d, %q / %q", step, row.Match, row.FirstDiff, row.DiffCaptured, row.DiffReplayed)
		}
	}
}

// TestInterleaved: small pieces of both streams in turn, each side leading
// by a piece, through every class that needs both streams.
func TestInterleaved(t *testing.T) {
	later := strings.Replace(resp1, "Mon, 02 Mar 2026 10:00:00", "Tue, 03 Mar 2026 11:11:11", 1)
	for _, tc := range []struct {
		captured, answer string
		want             Match
	}{
		{resp1 + chunked, resp1 + chunked, Identical},
		{resp1 + chunked, resp1Later + chunkedLater, Volatile},
		{resp1 + chunked, later + strings.Replace(chunked, "world", "WORLD", 1), SameLength},
		{resp1 + chunked, later + strings.Replace(chunked, "6;x=y\r\n world", "5\r\nworld", 1), Different},
		{"x" + resp1, "x" + later, SameLength},
	} {
		for _, ord := range []order{capturedLeads, answerLeads} {
			for step := 1; step <= 17; step += 4 {
				r := New(Options{})
				play(t, r, capSession(0, tc.captured, 0), feeding{answer: tc.answer, step: step, order: ord})
				if row := r.Report(nil).Rows()[0]; row.Match != tc.want.String() {
					t.Errorf("%.10q %s step %d: %s, want %s", tc.answer, ord, step, row.Match, tc.want)
				}
			}
		}
	}
}

// TestBound: a captured stream (or answer) far larger than RecordLimit is
// never held whole: the side ahead keeps at most RecordLimit bytes (play
// checks it after every call), and what it could not keep goes uncompared.
func TestBound(t *testing.T) {
	const limit = 1000
	big := make([]byte, 100_000)
	for i := range big {
		big[i] = byte('a' + i%23)
	}
	with := func(at int, b byte) string {
		c := append([]byte(nil), big...)
		c[at] = b
		return string(c)
	}
	farSteps := []int{100, 4096, 1 << 20}
	httpBig := "HTTP/1.1 200 OK\r\nDate: Mon, 02 Mar 2026 10:00:00 GMT\r\nContent-Length: 100000\r\n\r\n" + string(big)
	for _, tc := range []struct {
		name             string
		captured, answer string
		orders           []order
		steps            []int
		want             Match
		firstDiff        int64
	}{
		// One side ahead by the whole stream: only the first RecordLimit
		// bytes are compared; the rest cannot be.
		{"identical, one side far ahead", string(big), string(big), []order{capturedFirst, capturedLast}, farSteps, NotComparable, -1},
		{"difference past the bound", string(big), with(50_000, '!'), []order{capturedFirst, capturedLast}, farSteps, NotComparable, -1},
		// What was compared decides.
		{"difference within the bound", string(big), with(300, '!'), []order{capturedFirst, capturedLast}, farSteps, SameLength, 300},
		{"shorter answer within the bound", string(big), string(big[:500]), []order{capturedFirst, capturedLast}, farSteps, Different, 500},
		// In step, neither side leads by more than a piece (no larger than
		// the limit): all compared.
		{"identical in step", string(big), string(big), []order{capturedLeads, answerLeads}, []int{100, limit}, Identical, -1},
		{"difference in step", string(big), with(50_000, '!'), []order{capturedLeads, answerLeads}, []int{100, limit}, SameLength, 50_000},
		// An HTTP answer longer than the limit is not recorded for the
		// volatile check.
		{"http, longer than the limit", httpBig, strings.Replace(httpBig, "10:00:00", "10:00:01", 1), orders, farSteps, SameLength,
			int64(strings.Index(httpBig, "10:00:00") + 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ord := range tc.orders {
				for _, step := range tc.steps {
					r := New(Options{RecordLimit: limit})
					play(t, r, capSession(0, tc.captured, 0), feeding{answer: tc.answer, step: step, order: ord})
					row := r.Report(nil).Rows()[0]
					if row.Match != tc.want.String() || row.FirstDiff != tc.firstDiff {
						t.Errorf("%s step %d: %s at %d, want %s at %d", ord, step, row.Match, row.FirstDiff, tc.want, tc.firstDiff)
					}
					if tc.want == NotComparable && (row.CapturedMatch == nil || !*row.CapturedMatch) {
						t.Errorf("%s step %d: captured match %v", ord, step, row.CapturedMatch)
					}
					if tc.firstDiff >= 0 {
						wantCap := tc.captured[tc.firstDiff:min(len(tc.captured), int(tc.firstDiff)+snippetLen)]
						if row.DiffCaptured != wantCap {
							t.Errorf("%s step %d: captured excerpt %q, want %q", ord, step, row.DiffCaptured, wantCap)
						}
					}
				}
			}
		})
	}
}

func TestNormalizeHTTP(t *testing.T) {
	vol := map[string]bool{"date": true, "set-cookie": true}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"HTTP/1.1 200 OK\r\nDate: x\r\nSet-Cookie: a=b; Path=/\r\nContent-Length: 3\r\n\r\nabc",
			"HTTP/1.1 200 OK\r\nDate:\r\nSet-Cookie:a\r\nContent-Length: 3\r\n\r\nabc", true},
		// A body that looks like a response is still body.
		{"HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\nHTTP/1.1 404 x\r\nDate: y\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\nHTTP/1.1 404 x\r\nDate: y\r\n", true},
		// 204 has no body: the next response follows.
		{"HTTP/1.1 204 No\r\nDate: a\r\n\r\nHTTP/1.1 204 No\r\nDate: b\r\n\r\n",
			"HTTP/1.1 204 No\r\nDate:\r\n\r\nHTTP/1.1 204 No\r\nDate:\r\n\r\n", true},
		// Cut inside the headers: normalised as far as it goes.
		{"HTTP/1.1 200 OK\r\nDate: a\r\nConte", "HTTP/1.1 200 OK\r\nDate:\r\nConte", true},
		// Chunked body cut short: the rest is body.
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true},
		{"SSH-2.0-OpenSSH\r\n", "", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxgarbage", "", false},
	} {
		got, ok := normalizeHTTP([]byte(tc.in), vol)
		if ok != tc.ok || (ok && string(got) != tc.want) {
			t.Errorf("normalizeHTTP(%q) = %q %v, want %q %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	if n := chunkedLen([]byte("3\r\nabc\r\n0\r\n\r\nHTTP")); n != 13 {
		t.Errorf("chunkedLen = %d, want 13", n)
	}
}

// TestReportGolden: the JSON form, field names and all, is a contract.
func TestReportGolden(t *testing.T) {
	r := New(Options{})
	play(t, r, capSession(2, resp1, 0), feeding{answer: strings.Replace(resp1, "10:00:00", "10:00:01", 1), step: 64, res: replay.Result{
		Start: t0, Finish: t0.Add(1500 * time.Microsecond), BytesSent: 18, ChunksSent: 1}})
	play(t, r, capSession(0, resp1, 0), feeding{answer: resp1, step: 64, res: replay.Result{
		Start: t0, Finish: t0.Add(time.Millisecond), BytesSent: 18, ChunksSent: 1}})
	play(t, r, capSession(1, resp1, 0), feeding{step: 64, res: replay.Result{Outcome: replay.Refused,
		Err: errors.New("dial 127.0.0.1:8080 from 198.18.3.4:20000: connection refused"), Start: t0, Finish: t0}})
	s3 := capSession(3, "abcdef", session.Truncated|session.ServerCut)
	s3.ServerBytes = 100
	play(t, r, s3, feeding{answer: "abcdeX", step: 64, order: capturedLast, res: replay.Result{Outcome: replay.Deviation, Dialed: true,
		End: session.EndServerFIN, Deviations: replay.Deviations{TurnTimeouts: 1, QuietTurns: 2},
		Start: t0, Finish: t0.Add(10 * time.Second), BytesSent: 18, ChunksSent: 1}})
	sum := &replay.Summary{RunID: 0x1234, Passes: 1, Speed: 1, Start: t0, Wall: 3 * time.Second,
		Read: 4, Planned: 4, Replayed: 4, Succeeded: 2, Failed: replay.Failures{Refused: 1, Deviation: 1},
		BytesSent: 54, BytesReceived: 400, ChunksSent: 3,
		ChunkLateness: replay.Latency{Count: 3, P50: 42 * time.Microsecond, P99: 99 * time.Microsecond, Max: 99 * time.Microsecond}}
	var buf bytes.Buffer
	if err := r.Report(sum).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden.json")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("report differs from %s (run with -update if the change is intended):\n%s", golden, buf.String())
	}
	// And it is JSON.
	var v map[string]any
	if err := jsonUnmarshal(buf.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderConcurrentAndBounded(t *testing.T) {
	r := New(Options{MaxRows: 50})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				play(t, r, capSession(uint64(g*25+i), resp1, 0), feeding{answer: resp1, step: 13, order: order(i % len(orders))})
			}
		}()
	}
	wg.Wait()
	rep := r.Report(nil)
	if rep.Totals.Sessions != 200 || rep.Totals.Match.Identical != 200 || len(rep.Rows()) != 50 || rep.Totals.RowsDropped != 150 {
		t.Errorf("totals %+v, %d rows", rep.Totals, len(rep.Rows()))
	}
	if rep.Totals.Match.MatchRate() != 1 {
		t.Errorf("match rate %v", rep.Totals.Match.MatchRate())
	}
	var sb strings.Builder
	rep.Totals.WriteText(&sb)
	if !strings.Contains(sb.String(), "100.0% match (200 identical") {
		t.Errorf("text: %s", sb.String())
	}
}

// TestRowID: a row is numbered by the session's end in the capture
// (Tail.EndSeq, the report's numbering before sessions streamed), or by its
// start (Head.ID) when the capture had not ended.
func TestRowID(t *testing.T) {
	r := New(Options{})
	s := capSession(3, "ok", 0)
	for _, cut := range []bool{false, true} {
		h := s.Head()
		h.ID = 7 // started eighth, ended fourth
		o := r.Begin(&replay.SessionInfo{Head: h})
		o.Captured(0, []byte("ok"))
		o.Received([]byte("ok"))
		res := replay.Result{Dialed: true, End: s.End, Tail: s.Tail(), Chunks: 1}
		if cut {
			res.Tail = nil
		}
		o.Done(&res)
	}
	rows := r.Report(nil).Rows()
	if len(rows) != 2 || rows[0].ID != 3 || rows[0].Match != "identical" || rows[1].ID != 7 || rows[1].Match != "not-comparable" ||
		rows[1].CapturedServerBytes != 2 || rows[1].EndCaptured != "capture-end" {
		t.Errorf("rows %+v", rows)
	}
}

// TestCapturedNotCopied: the captured side keeps the slices Captured was
// given, not copies. A keep-alive session's whole captured stream arriving
// before the answer (the session builder reading ahead at --speed max) is
// referenced run by run, and a session whose answer agrees byte for byte
// allocates a few bookkeeping objects, nothing in proportion to its bytes.
func TestCapturedNotCopied(t *testing.T) {
	const answers = 50
	capd, stream := keepAlive(answers, "Mon, 02 Mar 2026 10:00:00 GMT")
	s := &session.Session{Server: capSession(0, "", 0).Server, Start: t0, End: session.EndClientFIN,
		ServerData: stream, ServerBytes: int64(len(stream))}
	info := &replay.SessionInfo{Head: s.Head()}
	tail := s.Tail()
	r := New(Options{MaxRows: -1})
	buf := make([]byte, 32<<10)
	playOne := func(check bool) {
		o := r.Begin(info).(*sessionObs)
		var off int64
		for _, p := range capd {
			o.Captured(off, p)
			off += int64(len(p))
		}
		if check {
			live := o.cmp.caps.live()
			if len(live) != len(capd) || o.cmp.caps.held() != len(stream) {
				t.Fatalf("captured side keeps %d runs, %d bytes; want %d, %d", len(live), o.cmp.caps.held(), len(capd), len(stream))
			}
			for i, run := range live {
				if run.own || len(run.data) != len(capd[i]) || &run.data[0] != &capd[i][0] {
					t.Fatalf("captured run %d (%d bytes) is not the slice passed (%d bytes)", i, len(run.data), len(capd[i]))
				}
			}
		}
		for a := stream; len(a) > 0; {
			n := copy(buf, a)
			o.Received(buf[:n])
			a = a[n:]
		}
		o.Done(&replay.Result{Dialed: true, End: session.EndClientFIN, Tail: tail, Chunks: answers,
			BytesReceived: int64(len(stream))})
	}
	playOne(true)
	if m := r.Report(nil).Totals.Match; m.Identical != 1 {
		t.Fatalf("match %+v", m)
	}

	// Begin's observer and the list of references (growing to 64) are all
	// a session allocates.
	if n := testing.AllocsPerRun(20, func() { playOne(false) }); n > 6 {
		t.Errorf("%v allocations per session", n)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const runs = 20
	for range runs {
		playOne(false)
	}
	runtime.ReadMemStats(&m1)
	if per := (m1.TotalAlloc - m0.TotalAlloc) / runs; per > uint64(len(stream))/8 {
		t.Errorf("%d bytes allocated per session of %d captured bytes", per, len(stream))
	}
}

// TestSegs: the captured side's list of references on its own: excerpts
// and contiguous bytes across runs and gaps, small segments sharing a
// chunk, trimming from both ends, and a long list given back once emptied.
func TestSegs(t *testing.T) {
	var s segs
	a, b := []byte(strings.Repeat("a", 100)), []byte(strings.Repeat("b", 100))
	s.add(0, a, false)
	s.add(100, b, false)
	s.add(250, []byte("xy"), true) // after a gap
	s.add(252, []byte("z"), true)  // into the same chunk
	if l := s.live(); len(l) != 3 || &l[0].data[0] != &a[0] || &l[1].data[0] != &b[0] || string(l[2].data) != "xyz" || !l[2].own || s.held() != 203 {
		t.Fatalf("runs %+v, %d bytes", l, s.held())
	}
	if got := string(s.at(90, 20)); got != strings.Repeat("a", 10)+strings.Repeat("b", 10) {
		t.Errorf("at(90, 20) = %q", got)
	}
	if got := string(s.at(195, 20)); got != "bbbbb" {
		t.Errorf("at(195, 20) = %q (stops at the gap)", got)
	}
	if got := s.at(220, 5); got != nil {
		t.Errorf("at(220) = %q, in the gap", got)
	}
	if got, ok := s.contiguous(50, 150); !ok || string(got) != strings.Repeat("a", 50)+strings.Repeat("b", 50) {
		t.Errorf("contiguous(50, 150) = %q %v", got, ok)
	}
	if got, ok := s.contiguous(10, 20); !ok || &got[0] != &a[10] {
		t.Errorf("contiguous(10, 20) is not the run itself")
	}
	if _, ok := s.contiguous(0, 252); ok {
		t.Errorf("contiguous across the gap")
	}
	s.keep(150, 251)
	if l := s.live(); len(l) != 2 || l[0].off != 150 || len(l[0].data) != 50 || string(l[1].data) != "x" || s.held() != 51 {
		t.Errorf("after keep: %+v, %d bytes", l, s.held())
	}
	if s.s[0].data != nil {
		t.Errorf("the dropped run still refers to its segment")
	}
	s.keep(noEnd, noEnd)
	if s.held() != 0 || s.s == nil {
		t.Errorf("emptied short list: %d bytes, list %v", s.held(), s.s)
	}
	for i := range 2 * releaseSegs {
		s.add(int64(i)*100, a, false)
	}
	s.keep(noEnd, noEnd)
	if s.s != nil || s.head != 0 || s.n != 0 {
		t.Errorf("an emptied long list is kept: cap %d", cap(s.s))
	}
}
