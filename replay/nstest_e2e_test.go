package replay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestNetstackEndToEnd is the whole engine without root: the replay dials
// from mapped client addresses through one gVisor stack, an in-memory wire
// carries real IP packets to a second stack where a net/http server listens
// (the target), and the answers come back the same way. Every session must
// be delivered and every answer identical to the capture; the server counts
// what arrived.
func TestNetstackEndToEnd(t *testing.T) {
	checkLeaks(t)
	pair := nstest.NewPair(t, nstest.Options{})
	target := netip.MustParseAddrPort("10.77.0.1:8080")
	ln, err := pair.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header()["Date"] = nil // deterministic answers: compared byte for byte
		w.Header().Set("Content-Type", "text/plain")
		body := strings.Repeat(r.URL.Path, 1+len(r.URL.Path)%7)
		if r.URL.Path == "/big" {
			body = strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
		}
		// An explicit length: without it a large body goes chunked.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	req := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: target\r\n\r\n" }
	// The "captured" answers: fetched once through the same stacks.
	answers := map[string]string{}
	answer := func(path string) string {
		if a, ok := answers[path]; ok {
			return a
		}
		c, err := pair.Client.DialTCP(context.Background(), netip.MustParseAddrPort("198.18.255.1:0"), target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, req(path))
		br := bufio.NewReader(c)
		var head strings.Builder
		n := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			head.WriteString(line)
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if line == "\r\n" {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatal(err)
		}
		answers[path] = head.String() + string(body)
		return answers[path]
	}
	for k := range 9 {
		answer(fmt.Sprintf("/p%d", k))
	}
	answer("/big")
	prefetched := requests.Load()

	// 150 sessions from 15 clients, each reusing its ip:port: keep-alive
	// sessions of 1-4 requests, some pipelined, one 1 MiB download; they
	// end as clients do (FIN) or reset; causal chains every 10 sessions.
	var ss []*session.Session
	wantRequests := int64(0)
	for i := range 150 {
		s := &session.Session{ID: uint64(i), Server: netip.MustParseAddrPort("10.0.0.1:80"),
			Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 15)}), 40000),
			Start:  fakeEpoch, End: session.EndClientFIN}
		if i%10 == 9 {
			s.EndedBefore = uint64(i - 5)
		}
		if i%13 == 0 {
			s.End = session.EndClientRST
		}
		for k := range 1 + i%4 {
			path := fmt.Sprintf("/p%d", (i+k)%9)
			if i == 77 && k == 0 {
				path = "/big"
			}
			need := int64(len(s.ServerData))
			if i%5 == 0 && len(s.Chunks) > 0 {
				need = s.Chunks[len(s.Chunks)-1].ServerBytesBefore // pipelined
			}
			s.Chunks = append(s.Chunks, session.Chunk{Data: []byte(req(path)), ServerBytesBefore: need})
			s.ServerData = append(s.ServerData, answer(path)...)
			wantRequests++
		}
		s.ServerBytes = int64(len(s.ServerData))
		ss = append(ss, s)
	}
	obs := newRecObserver()
	ch := make(chan *session.Session)
	go func() {
		for _, s := range ss {
			ch <- s
		}
		close(ch)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := Run(ctx, Config{Dialer: pair.Client, Target: target, Speed: SpeedMax, Observer: obs,
		// A generous quiet timeout: under -race on a shared machine the
		// 1 MiB answer can pause for more than the default 100 ms, and this
		// test wants every turn answered in full.
		MaxSessions: 32, QuietTimeout: 5 * time.Second, Logf: t.Logf}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 150 || sum.Deviations.QuietTurns+sum.Deviations.TurnTimeouts != 0 {
		t.Fatalf("summary: %+v", sum)
	}
	for _, s := range ss {
		if got := obs.got(s.ID); got != string(s.ServerData) {
			t.Errorf("session %d: answer differs (%d bytes, want %d)", s.ID, len(got), len(s.ServerData))
		}
		info := obs.infos[s.ID]
		if !DefaultClientNet4.Contains(info.Client.Addr()) {
			t.Errorf("session %d dialed from %v", s.ID, info.Client)
		}
		if r := obs.result(t, s.ID); r.Local != info.Client {
			t.Errorf("session %d: local address %v, mapped %v", s.ID, r.Local, info.Client)
		}
	}
	if got := requests.Load() - prefetched; got != wantRequests {
		t.Errorf("target served %d requests, want %d", got, wantRequests)
	}
	t.Logf("%d sessions, %d requests in %v (%.0f sessions/s)", sum.Replayed, wantRequests, sum.Wall, sum.SessionsPerSec())
}

// TestNetstackFailures: errors through the netstack keep their errno, so
// the engine classifies them: a port without a listener refuses, a target
// that resets mid-session resets.
func TestNetstackFailures(t *testing.T) {
	checkLeaks(t)
	pair := nstest.NewPair(t, nstest.Options{})
	resetter := netip.MustParseAddrPort("10.77.0.2:9000")
	ln, err := pair.Listen(resetter)
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 4))
		c.(interface{ Abort() error }).Abort()
	})
	closedPort := netip.MustParseAddrPort("10.77.0.2:9001")
	mk := func(id uint64, server netip.AddrPort) *session.Session {
		return &session.Session{ID: id, Server: server, Client: netip.MustParseAddrPort("192.0.2.1:1234"),
			Chunks: []session.Chunk{{Data: []byte("ping")}}, ServerBytes: 4, End: session.EndClientFIN}
	}
	ch := make(chan *session.Session, 2)
	ch <- mk(0, resetter)
	ch <- mk(1, closedPort)
	close(ch)
	obs := newRecObserver()
	sum, err := Run(context.Background(), Config{Dialer: pair.Client,
		Map:      map[netip.AddrPort]netip.AddrPort{resetter: resetter, closedPort: closedPort},
		Observer: obs, Logf: t.Logf}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if r := obs.result(t, 0); r.Outcome != Reset {
		t.Errorf("resetting target: %v (%v)", r.Outcome, r.Err)
	}
	if r := obs.result(t, 1); r.Outcome != Refused {
		t.Errorf("closed port: %v (%v)", r.Outcome, r.Err)
	}
	if sum.Failed.Reset != 1 || sum.Failed.Refused != 1 {
		t.Errorf("summary failures %+v", sum.Failed)
	}
}

// TestNetstackEchoWhileUploading: a target that answers while it is still
// reading (an echo) and a 24 MiB upload in one chunk, far beyond both
// stacks' buffers. The session owner reads while its write waits for room
// (PollConn); a writer that did not would stop reading, the target would
// stop reading once its answers filled our window, and the session would
// hang until its timeout.
func TestNetstackEchoWhileUploading(t *testing.T) {
	checkLeaks(t)
	pair := nstest.NewPair(t, nstest.Options{})
	target := netip.MustParseAddrPort("10.77.0.2:7")
	ln, err := pair.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		io.Copy(c, c) // echo until the client's FIN
	})

	data := []byte(strings.Repeat("0123456789abcdef", 24<<16)) // 24 MiB
	s := &session.Session{ID: 0, Server: netip.MustParseAddrPort("10.0.0.1:7"),
		Client: netip.MustParseAddrPort("192.0.2.1:40000"), Start: fakeEpoch, End: session.EndClientFIN,
		Chunks:      []session.Chunk{{Data: data}},
		ClientBytes: int64(len(data)), ServerBytes: int64(len(data)), ServerData: data}
	ch := make(chan *session.Session, 1)
	ch <- s
	close(ch)
	obs := newRecObserver()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := Run(ctx, Config{Dialer: pair.Client, Target: target, Speed: SpeedMax, Observer: obs,
		QuietTimeout: 5 * time.Second, SessionTimeout: 30 * time.Second, Logf: t.Logf}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 1 || sum.BytesReceived != int64(len(data)) {
		t.Fatalf("summary: %+v", sum)
	}
	if got := obs.got(0); got != string(data) {
		t.Errorf("echo differs: %d bytes back of %d", len(got), len(data))
	}
}
