package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// lineServer is a real TCP server on 127.0.0.1: for each line "GET <n>" it
// answers "<n> bytes\n" padded with '.' to 32 bytes; "QUIT" makes it close.
// It counts what arrived, so the test checks the server's side too.
type lineServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	lines int
	conns int
	ends  map[string]int // how connections ended: "eof", "rst", "quit"
}

func startLineServer(t *testing.T) *lineServer { return startLineServerTB(t) }

func startLineServerTB(t testing.TB) *lineServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{ln: ln, ends: map[string]int{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func answer(line string) string {
	a := strings.TrimPrefix(line, "GET ") + " bytes\n"
	return strings.Repeat(".", 32-len(a)) + a
}

func (s *lineServer) serve(c net.Conn) {
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	br := bufio.NewReader(c)
	end := "eof"
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, syscall.ECONNRESET) {
				end = "rst"
			}
			break
		}
		line = strings.TrimSuffix(line, "\n")
		s.mu.Lock()
		s.lines++
		s.mu.Unlock()
		if line == "QUIT" {
			end = "quit"
			break
		}
		c.Write([]byte(answer(line)))
	}
	s.mu.Lock()
	s.ends[end]++
	s.mu.Unlock()
}

func (s *lineServer) addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// keepAlive builds a session of n request/answer turns, the capture's
// offsets step apart, ending as given.
func keepAlive(id uint64, n int, step time.Duration, end session.End) *session.Session {
	var chunks []session.Chunk
	var server []byte
	for i := range n {
		req := fmt.Sprintf("GET %d-%d\n", id, i)
		chunks = append(chunks, session.Chunk{Offset: time.Duration(i) * step, Data: []byte(req), ServerBytesBefore: int64(len(server))})
		server = append(server, answer(strings.TrimSuffix(req, "\n"))...)
	}
	s := mkSession(id, 0, end, int64(len(server)), chunks...)
	s.ServerData = server
	s.Duration = time.Duration(n) * step
	s.StartOffset = 0
	return s
}

func TestSocketReplayLoopback(t *testing.T) {
	checkLeaks(t)
	srv := startLineServer(t)
	obs := newRecObserver()
	var ss []*session.Session
	for i := range 40 {
		ss = append(ss, keepAlive(uint64(i), 5, 0, session.EndClientFIN))
	}
	// A pipelined session: three requests back to back, then the answers.
	p := mkSession(40, 0, session.EndClientFIN, 96,
		chunk(0, "GET p1\nGET p2\n", 0), chunk(0, "GET p3\n", 0))
	// One that the client resets, and one the server closes.
	rst := keepAlive(41, 2, 0, session.EndClientRST)
	quit := keepAlive(42, 1, 0, session.EndServerFIN)
	quit.Chunks = append(quit.Chunks, session.Chunk{Data: []byte("QUIT\n"), ServerBytesBefore: 32})
	ss = append(ss, p, rst, quit)

	cfg := Config{Dialer: &SocketDialer{}, Target: srv.addr(), Speed: SpeedMax, Observer: obs, MaxSessions: 8,
		QuietTimeout: time.Second, TurnTimeout: 10 * time.Second, CloseTimeout: 5 * time.Second, Logf: t.Logf}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch := make(chan *session.Session, len(ss))
	for _, s := range ss {
		ch <- s
	}
	close(ch)
	sum, err := Run(ctx, cfg, ch)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != int64(len(ss)) || sum.Failed.Total() != 0 || sum.Deviations.TurnTimeouts+sum.Deviations.QuietTurns != 0 {
		t.Fatalf("summary %+v", sum)
	}
	for _, s := range ss {
		if got, want := obs.got(s.ID), string(s.ServerData); s.ServerData != nil && got != want {
			t.Errorf("session %d: received %q, want %q", s.ID, got, want)
		}
	}
	if got := obs.got(40); got != answer("GET p1")+answer("GET p2")+answer("GET p3") {
		t.Errorf("pipelined: %q", got)
	}
	if r := obs.result(t, 41); r.End != session.EndClientRST {
		t.Errorf("reset session ended %v", r.End)
	}
	if r := obs.result(t, 42); r.End != session.EndServerFIN {
		t.Errorf("server-closed session ended %v", r.End)
	}
	// The server's side: every request line arrived, every connection
	// ended as captured.
	srv.ln.Close()
	srv.wg.Wait()
	wantLines := 40*5 + 3 + 2 + 2
	if srv.lines != wantLines || srv.conns != len(ss) {
		t.Errorf("server saw %d lines on %d conns, want %d on %d", srv.lines, srv.conns, wantLines, len(ss))
	}
	if srv.ends["rst"] != 1 || srv.ends["quit"] != 1 || srv.ends["eof"] != len(ss)-2 {
		t.Errorf("server saw ends %v", srv.ends)
	}
	t.Logf("%d sessions in %v (%.0f/s), chunk lateness p50 %v p99 %v",
		sum.Replayed, sum.Wall, sum.SessionsPerSec(), sum.ChunkLateness.P50, sum.ChunkLateness.P99)
}

// TestSocketReplayTimed replays at speed 1 with the default PreciseClock and
// checks that chunks go out on schedule. The bound is loose (a shared
// machine); the measured values are logged.
func TestSocketReplayTimed(t *testing.T) {
	checkLeaks(t)
	srv := startLineServer(t)
	var ss []*session.Session
	for i := range 10 {
		s := keepAlive(uint64(i), 6, 15*time.Millisecond, session.EndClientFIN)
		s.StartOffset = time.Duration(i) * 7 * time.Millisecond
		ss = append(ss, s)
	}
	ch := make(chan *session.Session, len(ss))
	for _, s := range ss {
		ch <- s
	}
	close(ch)
	start := time.Now()
	sum, err := Run(context.Background(), Config{Dialer: &SocketDialer{}, Target: srv.addr(), Speed: 1}, ch)
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start)
	if sum.Succeeded != 10 || sum.ChunkLateness.Count != 60 {
		t.Fatalf("summary %+v", sum)
	}
	// The last session starts at 63 ms and lasts 90 ms: the run cannot be
	// shorter, and has no reason to be much longer.
	if wall < 153*time.Millisecond || wall > 2*time.Second {
		t.Errorf("wall %v, want about 153 ms", wall)
	}
	if sum.ChunkLateness.P50 > 20*time.Millisecond {
		t.Errorf("chunk lateness p50 %v", sum.ChunkLateness.P50)
	}
	t.Logf("speed 1: wall %v, chunk lateness p50 %v p99 %v max %v, start lateness p50 %v",
		wall, sum.ChunkLateness.P50, sum.ChunkLateness.P99, sum.ChunkLateness.Max, sum.StartLateness.P50)
}

func TestSocketDialerErrors(t *testing.T) {
	// A port nobody listens on: bind, note it, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	d := &SocketDialer{}
	_, err = d.DialTCP(context.Background(), netip.AddrPort{}, dst)
	if !errors.Is(err, syscall.ECONNREFUSED) || classify(err) != Refused {
		t.Errorf("dial closed port: %v", err)
	}

	// Abort sends an RST: the server's read fails with ECONNRESET.
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan error, 1)
	go func() {
		c, err := srv.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		got <- err
	}()
	c, err := d.DialTCP(context.Background(), netip.AddrPort{}, srv.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	if err := c.(*SocketConn).Abort(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server read after Abort: %v, want ECONNRESET", err)
	}

	// A canceled dial reports the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.DialTCP(ctx, netip.AddrPort{}, dst); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled dial: %v", err)
	}
}

func TestSocketRefusedRun(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	ch := make(chan *session.Session, 3)
	for i := range 3 {
		ch <- keepAlive(uint64(i), 1, 0, session.EndClientFIN)
	}
	close(ch)
	sum, err := Run(context.Background(), Config{Dialer: &SocketDialer{}, Target: dst}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Failed.Refused != 3 || sum.Replayed != 3 {
		t.Errorf("summary %+v", sum)
	}
}
