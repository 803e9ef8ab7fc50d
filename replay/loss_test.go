package replay

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestCaptureLossReplay: sessions whose capture lost client bytes (a live
// capture's kernel drops) are replayed as far as the capture allows and
// marked Incomplete, not blamed on the target, and they never wait a
// TurnTimeout for answers to requests the target was never sent. Against a
// real 127.0.0.1 line-echo server; TurnTimeout and CloseTimeout are an hour,
// so a wait for a lost request's answer would hang the test.
func TestCaptureLossReplay(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "RESET\n" {
				// A target that resets the connection at this request.
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				return
			}
			c.Write([]byte(line))
		}
	})
	cl := netip.MustParseAddrPort("10.0.0.1:40000")
	srv := netip.MustParseAddrPort("10.0.0.2:7")
	sessions := []*session.Session{
		// The only request was lost; the server's answer and close were
		// captured: nothing to send, close without waiting.
		{
			Client: cl, Server: srv, ClientBytes: 7, ServerBytes: 7, ServerData: []byte("GET /1\n"),
			End: session.EndServerFIN, Flags: session.Holes,
			Holes: []session.Hole{{Offset: 0, Len: 7}},
		},
		// Keep-alive, the second of three requests lost: the third waits
		// for two answers, the target gives one (it got one request).
		{
			Client: cl, Server: srv, ClientBytes: 21, ServerBytes: 21, ServerData: []byte("GET /1\nGET /2\nGET /3\n"),
			Chunks: []session.Chunk{
				{Data: []byte("GET /1\n")},
				{Data: []byte("GET /3\n"), StreamOffset: 14, ServerBytesBefore: 14},
			},
			End: session.EndClientFIN, Flags: session.Holes,
			Holes: []session.Hole{{Offset: 7, Len: 7}},
		},
		// A request lost, and the target resets at the next one: with a
		// capture this incomplete, not the target's failure.
		{
			Client: cl, Server: srv, ClientBytes: 20, ServerBytes: 14, ServerData: []byte("GET /1\nGET /2\n"),
			Chunks: []session.Chunk{
				{Data: []byte("GET /1\n")},
				{Data: []byte("RESET\n"), StreamOffset: 14, ServerBytesBefore: 14},
			},
			End: session.EndClientFIN, Flags: session.Holes,
			Holes: []session.Hole{{Offset: 7, Len: 7}},
		},
		// The same reset with a complete capture: the target's failure.
		{
			Client: cl, Server: srv, ClientBytes: 13, ServerBytes: 7, ServerData: []byte("GET /1\n"),
			Chunks: []session.Chunk{
				{Data: []byte("GET /1\n")},
				{Data: []byte("RESET\n"), StreamOffset: 7, ServerBytesBefore: 7},
			},
			End: session.EndClientFIN,
		},
		// The same without loss: a plain success, for contrast.
		{
			Client: cl, Server: srv, ClientBytes: 14, ServerBytes: 14, ServerData: []byte("GET /1\nGET /2\n"),
			Chunks: []session.Chunk{
				{Data: []byte("GET /1\n")},
				{Data: []byte("GET /2\n"), StreamOffset: 7, ServerBytesBefore: 7},
			},
			End: session.EndClientFIN,
		},
	}
	for i, s := range sessions {
		s.ID = uint64(i)
		s.Client = netip.AddrPortFrom(cl.Addr(), cl.Port()+uint16(i))
	}
	ch := make(chan *session.Session, len(sessions))
	for _, s := range sessions {
		ch <- s
	}
	close(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var results []Result
	obs := observerFunc(func(r *Result) { results = append(results, *r) })
	sum, err := Run(ctx, Config{
		Dialer: &SocketDialer{}, Target: netip.MustParseAddrPort(ln.Addr().String()), Speed: SpeedMax,
		TurnTimeout: time.Hour, CloseTimeout: time.Hour, QuietTimeout: 50 * time.Millisecond,
		MaxSessions: 1, Observer: obs,
	}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the replay waited for answers to lost requests until the test gave up: %+v", sum)
	}
	if sum.Incomplete != 3 || sum.Succeeded != 1 || sum.Failed.Total() != 1 || sum.Failed.Reset != 1 {
		t.Errorf("incomplete %d, succeeded %d, failed %+v; want 3, 1, one reset (the complete capture's)", sum.Incomplete, sum.Succeeded, sum.Failed)
	}
	d := sum.Deviations
	if d.LostTurns != 3 || d.TurnTimeouts != 0 || d.CloseTimeouts != 0 || d.EarlyClose != 0 {
		t.Errorf("deviations %+v; want 3 lost turns and nothing else", d)
	}
	for _, r := range results {
		if r.Outcome == Incomplete && r.Deviations.LostTurns != 1 {
			t.Errorf("an incomplete session with %d lost turns, want 1: %+v", r.Deviations.LostTurns, r)
		}
	}
	if sum.BytesSent != 0+14+13+13+14 || sum.BytesReceived != 0+14+7+7+14 {
		t.Errorf("sent %d, received %d; want 54, 42", sum.BytesSent, sum.BytesReceived)
	}
}

// observerFunc calls fn with each session's result (from the sessions'
// goroutines, one at a time here: MaxSessions 1).
type observerFunc func(r *Result)

func (f observerFunc) Begin(*SessionInfo) SessionObserver { return resultObserver(f) }

type resultObserver func(r *Result)

func (resultObserver) Captured(int64, []byte) {}
func (resultObserver) Received([]byte)        {}
func (o resultObserver) Done(r *Result)       { o(r) }
