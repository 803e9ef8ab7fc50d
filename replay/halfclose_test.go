package replay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestHalfCloseReplay: a captured client that sent its request with FIN and
// got the answer afterwards (ServerBytesAfterClose) is replayed the same way:
// the replay closes without waiting for an answer the target only gives
// after EOF, and still drains and counts that answer. Against a real
// 127.0.0.1 server that answers only after reading EOF.
func TestHalfCloseReplay(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) {
		req, _ := io.ReadAll(c) // until the client's FIN
		c.Write([]byte("got " + string(req)))
	})
	s := &session.Session{
		Client: netip.MustParseAddrPort("10.0.0.1:40000"), Server: netip.MustParseAddrPort("10.0.0.2:7"),
		Chunks:                []session.Chunk{{Data: []byte("QUIT\n")}},
		ClientBytes:           5,
		ServerData:            []byte("got QUIT\n"),
		ServerBytes:           9,
		ServerBytesAfterClose: 9,
		End:                   session.EndClientFIN,
	}
	ch := make(chan *session.Session, 1)
	ch <- s
	close(ch)
	start := time.Now()
	sum, err := Run(context.Background(), Config{
		Dialer: &SocketDialer{}, Target: netip.MustParseAddrPort(ln.Addr().String()), Speed: SpeedMax,
		TurnTimeout: 5 * time.Second, CloseTimeout: 5 * time.Second,
	}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 1 || sum.BytesReceived != 9 || sum.Deviations.TurnTimeouts != 0 {
		t.Errorf("succeeded %d, received %d, turn timeouts %d; want 1, 9, 0", sum.Succeeded, sum.BytesReceived, sum.Deviations.TurnTimeouts)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v: the replay waited for an answer that only comes after its FIN", d)
	}
}
