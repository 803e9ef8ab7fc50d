package replay

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestShorterAnswers: a target whose answers are shorter than the captured
// ones (a counter with fewer digits, a smaller page) must still be seen
// answering each turn. Once behind the capture's byte count, every later
// turn used to wait for the full TurnTimeout. Against a real 127.0.0.1
// server that answers every line with "ok\n" where the capture had 10 bytes.
func TestShorterAnswers(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n := 0
		for br := bufio.NewReader(c); ; n++ {
			if _, err := br.ReadString('\n'); err != nil {
				lines <- n
				return
			}
			c.Write([]byte("ok\n"))
		}
	}()
	const turns = 6
	s := &session.Session{
		Client: netip.MustParseAddrPort("10.0.0.1:40000"), Server: netip.MustParseAddrPort("10.0.0.2:7"),
		End: session.EndClientFIN,
	}
	for i := range turns {
		s.Chunks = append(s.Chunks, session.Chunk{Data: []byte("INCR x\n"), ServerBytesBefore: int64(10 * i), StreamOffset: int64(7 * i)})
	}
	s.ClientBytes = 7 * turns
	s.ServerData = []byte(strings.Repeat(":100000000\n"[:10], turns))
	s.ServerBytes = int64(len(s.ServerData))
	ch := make(chan *session.Session, 1)
	ch <- s
	close(ch)
	start := time.Now()
	sum, err := Run(context.Background(), Config{
		Dialer: &SocketDialer{}, Target: netip.MustParseAddrPort(ln.Addr().String()), Speed: SpeedMax,
		TurnTimeout: 5 * time.Second, QuietTimeout: 50 * time.Millisecond, CloseTimeout: time.Second,
	}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-lines; got != turns {
		t.Errorf("server got %d lines, want %d", got, turns)
	}
	if sum.Deviations.TurnTimeouts != 0 || sum.ChunksSent != turns {
		t.Errorf("turn timeouts %d, chunks %d; want 0, %d", sum.Deviations.TurnTimeouts, sum.ChunksSent, turns)
	}
	// Each short turn may cost one QuietTimeout at most, never a TurnTimeout.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v: short answers were waited for as if missing", d)
	}
}
