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
// received). Each piece is passed in a buffer that is overwritten after the
// call, as the engine's buffers are reused. After every call the session's
// stores must be within their bound, and after Done empty. play may run on
// any goroutine (it reports with t.Errorf only).
func play(t testing.TB, r *Recorder, s *session.Session, f feeding) {
	t.Helper()
	info := &replay.SessionInfo{Head: s.Head(), Client: netip.MustParseAddrPort("198.18.3.4:20000"),
		Target: netip.MustParseAddrPort("127.0.0.1:8080"), Scheduled: t0.Add(s.StartOffset)}
	o := r.Begin(info).(*sessionObs)
	step := f.step
	if step <= 0 {
		step = 1 << 30
	}
	type piece struct {
		off  int64
		data []byte
	}
	var capd []piece
	s.ServerSegments(func(off int64, data []byte) {
		for len(data) > 0 {
			n := min(step, len(data))
			capd = append(capd, piece{off, data[:n]})
			off, data = off+int64(n), data[n:]
		}
	})
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
		for i := range o.cmp.st {
			st := &o.cmp.st[i]
			if st.held() > o.cmp.bound || cap(st.buf) > 3*o.cmp.bound {
				t.Errorf("after %s: store %d holds %d bytes (cap %d), bound %d", what, i, st.held(), cap(st.buf), o.cmp.bound)
			}
		}
		for i := range buf {
			buf[i] = '#' // the caller reuses its buffer
		}
	}
	sendCap := func() {
		p := capd[0]
		capd = capd[1:]
		o.Captured(p.off, scratch(p.data))
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
	for i, st := range o.cmp.st {
		if st.buf != nil || st.runs != nil {
			t.Errorf("store %d kept after Done: %d bytes", i, cap(st.buf))
		}
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
			rows := playAll(t, tc.opts, tc.s, feeding{answer: tc.answer, res: tc.res, cut: tc.cut}, 1, 7, 1<<20)
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := playAll(t, Options{}, capSession(0, tc.captured, 0), feeding{answer: tc.answer}, 1, 3, 1<<20)
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
