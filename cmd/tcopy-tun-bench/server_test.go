package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// startTestServer runs the bench target on a loopback port for one test.
func startTestServer(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(ln, 0)
	t.Cleanup(s.close)
	return s
}

func dialTest(t *testing.T, s *server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// wantResponse is the exact answer the convention prescribes.
func wantResponse(n int64, close bool) string {
	return string(appendResponseHeader(nil, n, close)) + strings.Repeat(string(bodyByte), int(n))
}

func TestServerKeepAliveAndClose(t *testing.T) {
	s := startTestServer(t)
	c := dialTest(t, s)
	r := bufio.NewReader(c)
	for i, n := range []int64{0, 10, 5000, 100000} {
		c.Write(appendRequest(nil, "GET", n, 1, i, 0, false))
		got := make([]byte, len(wantResponse(n, false)))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if string(got) != wantResponse(n, false) {
			t.Fatalf("request %d: answer %.80q…", i, got)
		}
	}
	// Connection: close is echoed and the server closes.
	c.Write(appendRequest(nil, "GET", 3, 1, 9, 0, true))
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != wantResponse(3, true) {
		t.Fatalf("closing answer %q, %v", rest, err)
	}
	st := s.stats()
	if st.Conns != 1 || st.Requests != 5 || st.Bad != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestServerPipelining: a batch written at once is answered in order, and
// the answers leave together (one flush) when the batch arrived together.
func TestServerPipelining(t *testing.T) {
	s := startTestServer(t)
	c := dialTest(t, s)
	var req []byte
	var want string
	for i := range 10 {
		req = appendRequest(req, "GET", int64(100*i), 2, i, 0, i == 9)
		want += wantResponse(int64(100*i), i == 9)
	}
	c.Write(req)
	got, err := io.ReadAll(c)
	if err != nil || string(got) != want {
		t.Fatalf("pipelined answers differ (%d bytes, want %d): %v", len(got), len(want), err)
	}
	if st := s.stats(); st.Requests != 10 {
		t.Errorf("stats %+v", st)
	}
}

// TestServerBulk: a large POST body is read whole, then a large answer is
// written.
func TestServerBulk(t *testing.T) {
	s := startTestServer(t)
	c := dialTest(t, s)
	const up, down = 5<<20 + 17, 3<<20 + 5
	go func() {
		c.Write(appendRequest(nil, "POST", down, 3, 0, up, true))
		c.Write(bytes.Repeat([]byte{'u'}, up))
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != wantResponse(down, true) {
		t.Fatalf("bulk answer: %d bytes, want %d", len(got), len(wantResponse(down, true)))
	}
	st := s.stats()
	if st.BytesIn < up || st.BytesOut != int64(len(got)) || st.Requests != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestServerRejectsForeignRequests(t *testing.T) {
	s := startTestServer(t)
	for _, req := range []string{
		"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
		"DELETE /bytes/5 HTTP/1.1\r\n\r\n",
		"POST /bytes/5 HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		c := dialTest(t, s)
		c.Write([]byte(req))
		got, _ := io.ReadAll(c)
		if string(got) != notFound {
			t.Errorf("%q: answer %q, want 404 and close", req, got)
		}
	}
	if st := s.stats(); st.Bad != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestServeCommand drives `serve` through its standard input and output as
// the harness does.
func TestServeCommand(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- runServe([]string{"-listen", "127.0.0.1:0"}, inR, outW, io.Discard)
		outW.Close()
	}()
	br := bufio.NewReader(outR)
	l, err := br.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(l), "listening ")
	if err != nil || !ok {
		t.Fatalf("first line %q, %v", l, err)
	}
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(appendRequest(nil, "GET", 1, 0, 0, 0, true))
	io.ReadAll(c)
	c.Close()
	io.WriteString(inW, "stats\n")
	l, _ = br.ReadString('\n')
	if !strings.Contains(l, `"requests":1`) || !strings.Contains(l, `"conns":1`) {
		t.Errorf("stats line %q", l)
	}
	inW.Close() // end of input: the server exits
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not exit at end of input")
	}
}
