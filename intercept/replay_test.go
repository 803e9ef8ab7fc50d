package intercept

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// fetch sends one raw request and returns the raw response (framed by
// Content-Length, as net/http sends these small bodies).
func fetch(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(req))
	br := bufio.NewReader(c)
	var head strings.Builder
	clen := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head.WriteString(line)
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			clen, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	return head.String() + string(body)
}

var dateRE = regexp.MustCompile(`Date: [^\r]*`)

// TestReplayAgainstHTTPServer: the engine over kernel sockets against a real
// net/http server on 127.0.0.1, the Recorder as observer. Answers captured
// on another day differ only in their Date header: "volatile"; a changed
// body is "same-length"; a different page "different".
func TestReplayAgainstHTTPServer(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		if r.URL.Path == "/long" {
			fmt.Fprint(w, strings.Repeat("z", 300))
			return
		}
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	req := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n" }
	// "Captured" answers: real ones from yesterday.
	captured := func(path string) string {
		return dateRE.ReplaceAllString(fetch(t, addr, req(path)), "Date: Mon, 02 Mar 2026 10:00:00 GMT")
	}
	mk := func(id uint64, paths []string, answers []string) *session.Session {
		s := &session.Session{ID: id, Client: netip.MustParseAddrPort(fmt.Sprintf("192.0.2.1:%d", 40000+id)),
			Server: netip.MustParseAddrPort("10.0.0.1:80"), Start: t0, End: session.EndClientFIN}
		for i, p := range paths {
			s.Chunks = append(s.Chunks, session.Chunk{Data: []byte(req(p)), ServerBytesBefore: int64(len(s.ServerData))})
			s.ClientBytes += int64(len(req(p)))
			s.ServerData = append(s.ServerData, answers[i]...)
		}
		s.ServerBytes = int64(len(s.ServerData))
		return s
	}
	paths := []string{"/a", "/b", "/c"}
	var answers []string
	for _, p := range paths {
		answers = append(answers, captured(p))
	}
	ss := []*session.Session{
		mk(0, paths, answers),
		mk(1, []string{"/x"}, []string{strings.Replace(captured("/x"), "hello /x", "HELLO /x", 1)}),
		mk(2, []string{"/missing"}, []string{captured("/long")}),
	}
	ch := make(chan *session.Session, len(ss))
	for _, s := range ss {
		ch <- s
	}
	close(ch)
	rec := New(Options{})
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sum, err := replay.Run(ctx, replay.Config{Dialer: &replay.SocketDialer{}, Target: target,
		Observer: rec, QuietTimeout: 500 * time.Millisecond, Logf: t.Logf}, ch)
	if err != nil {
		t.Fatal(err)
	}
	rep := rec.Report(sum)
	rows := rep.Rows()
	want := []string{"volatile", "same-length", "different"}
	for i, r := range rows {
		if r.Match != want[i] || r.Outcome != "ok" || r.EndReplayed != "client-fin" {
			t.Errorf("session %d: match %s outcome %s end %s, want %s ok client-fin", r.ID, r.Match, r.Outcome, r.EndReplayed, want[i])
		}
	}
	// The capture's side of each row comes from the Result: its Tail and
	// chunk count.
	for i, r := range rows {
		s := ss[i]
		if r.Chunks != len(s.Chunks) || r.CapturedServerBytes != s.ServerBytes ||
			r.CapturedClientBytes != s.ClientBytes || r.EndCaptured != s.End.String() {
			t.Errorf("session %d: chunks %d, captured %d/%d bytes, end %s; want %d, %d/%d, %s", r.ID, r.Chunks,
				r.CapturedServerBytes, r.CapturedClientBytes, r.EndCaptured, len(s.Chunks), s.ServerBytes, s.ClientBytes, s.End)
		}
	}
	// The 404 answer is shorter than the captured one: one quiet turn.
	if rows[2].Deviations.QuietTurns != 1 || sum.Deviations.QuietTurns != 1 {
		t.Errorf("deviations %+v / %+v", rows[2].Deviations, sum.Deviations)
	}
	if rep.Totals.BytesReceived != sum.BytesReceived || sum.Succeeded != 3 {
		t.Errorf("totals %+v summary %+v", rep.Totals, sum)
	}
}
