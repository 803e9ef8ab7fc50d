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

// play feeds one session through a Recorder as the engine would: Begin,
// the answer in pieces of size step, Done.
func play(r *Recorder, s *session.Session, answer string, step int, res replay.Result) {
	info := &replay.SessionInfo{Session: s, Client: netip.MustParseAddrPort("198.18.3.4:20000"),
		Target: netip.MustParseAddrPort("127.0.0.1:8080"), Scheduled: t0.Add(s.StartOffset)}
	o := r.Begin(info)
	for b := []byte(answer); len(b) > 0; {
		n := min(step, len(b))
		o.Received(append([]byte(nil), b[:n]...))
		b = b[n:]
	}
	if res.Outcome == replay.OK && !res.Dialed && res.Err == nil {
		res.Dialed = true
		res.End = s.End
	}
	if res.Dialed {
		res.Local = info.Client
	}
	res.BytesReceived = int64(len(answer))
	o.Done(&res)
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
	} {
		for _, step := range []int{1, 7, 1 << 20} {
			t.Run(fmt.Sprintf("%s/step%d", tc.name, step), func(t *testing.T) {
				r := New(tc.opts)
				play(r, tc.s, tc.answer, step, tc.res)
				rows := r.Report(nil).Rows()
				if len(rows) != 1 {
					t.Fatalf("%d rows", len(rows))
				}
				row := rows[0]
				if row.Match != tc.want.String() || row.FirstDiff != tc.firstDiff {
					t.Errorf("match %s first diff %d, want %s %d", row.Match, row.FirstDiff, tc.want, tc.firstDiff)
				}
				if tc.want == NotComparable && (row.CapturedMatch == nil || *row.CapturedMatch != (tc.firstDiff < 0)) {
					t.Errorf("captured match %v", row.CapturedMatch)
				}
			})
		}
	}
}

func TestSnippets(t *testing.T) {
	r := New(Options{})
	play(r, capSession(0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0), "HTTP/1.1 503 Unavailable\r\n\r\n", 3, replay.Result{})
	row := r.Report(nil).Rows()[0]
	if row.DiffCaptured != "200 OK\r\nContent-Length: 2\r\n\r\nok" || row.DiffReplayed != "503 Unavailable\r\n\r\n" {
		t.Errorf("snippets %q / %q", row.DiffCaptured, row.DiffReplayed)
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
	play(r, capSession(2, resp1, 0), strings.Replace(resp1, "10:00:00", "10:00:01", 1), 64, replay.Result{
		Start: t0, Finish: t0.Add(1500 * time.Microsecond), BytesSent: 18, ChunksSent: 1})
	play(r, capSession(0, resp1, 0), resp1, 64, replay.Result{Start: t0, Finish: t0.Add(time.Millisecond), BytesSent: 18, ChunksSent: 1})
	play(r, capSession(1, resp1, 0), "", 64, replay.Result{Outcome: replay.Refused,
		Err: errors.New("dial 127.0.0.1:8080 from 198.18.3.4:20000: connection refused"), Start: t0, Finish: t0})
	s3 := capSession(3, "abcdef", session.Truncated|session.ServerCut)
	s3.ServerBytes = 100
	play(r, s3, "abcdeX", 64, replay.Result{Outcome: replay.Deviation, Dialed: true, End: session.EndServerFIN,
		Deviations: replay.Deviations{TurnTimeouts: 1, QuietTurns: 2}, Start: t0, Finish: t0.Add(10 * time.Second), BytesSent: 18, ChunksSent: 1})
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
				play(r, capSession(uint64(g*25+i), resp1, 0), resp1, 13, replay.Result{})
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
