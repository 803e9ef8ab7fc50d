package replay

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// shortSessions builds n one-request sessions (HTTP/1.1 connection: close
// style: the server answers and closes), all from distinct clients, none
// waiting for another.
func shortSessions(n int, reqLen, respLen int) []*session.Session {
	req := make([]byte, reqLen)
	ss := make([]*session.Session, n)
	for i := range ss {
		s := mkSession(uint64(i), 0, session.EndServerFIN, int64(respLen), session.Chunk{Data: req})
		s.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
		ss[i] = s
	}
	return ss
}

func runBench(b *testing.B, cfg Config, ss []*session.Session) *Summary {
	b.Helper()
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan *session.Session, 1024)
	go func() {
		for _, s := range ss {
			ch <- s
		}
		close(ch)
	}()
	if err := r.Run(context.Background(), ch); err != nil {
		b.Fatal(err)
	}
	sum := r.Summary()
	if sum.Succeeded != int64(len(ss)) {
		b.Fatalf("%d of %d sessions succeeded: %+v", sum.Succeeded, len(ss), sum.Failed)
	}
	return sum
}

// BenchmarkEngineShortSessions measures the engine alone: in-memory conns of
// each connKind, a server that answers 200 bytes and closes. Allocations are
// per session.
func BenchmarkEngineShortSessions(b *testing.B) {
	for _, k := range connKinds() {
		b.Run(k.String(), func(b *testing.B) { benchEngineShortSessions(b, k) })
	}
}

func benchEngineShortSessions(b *testing.B, k connKind) {
	const n = 2000
	ss := shortSessions(n, 100, 200)
	resp := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	var wall time.Duration
	for range b.N {
		d := newMemDialerKind(b, k, newFakeClock(), func(c *memConn, _ dialRec) {
			readN(b, c, 100)
			c.Write(resp)
		})
		// The real clock: the fake one needs a test to advance it.
		sum := runBench(b, Config{Dialer: d, Target: testTarget, Speed: SpeedMax, MaxSessions: 256}, ss)
		wall += sum.Wall
	}
	b.ReportMetric(float64(n*b.N)/wall.Seconds(), "sessions/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*b.N), "ns/session")
}

// BenchmarkSocketShortSessions is the kernel-socket baseline on loopback:
// the same workload as the netstack path (issue 5's comparison).
func BenchmarkSocketShortSessions(b *testing.B) {
	for _, conc := range []int{64, 512} {
		b.Run(fmt.Sprintf("conc%d", conc), func(b *testing.B) {
			srv := startLineServerTB(b)
			const n = 2000
			var ss []*session.Session
			for i := range n {
				s := keepAlive(uint64(i), 1, 0, session.EndClientFIN)
				ss = append(ss, s)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var wall time.Duration
			for range b.N {
				sum := runBench(b, Config{Dialer: &SocketDialer{}, Target: srv.addr(), Speed: SpeedMax, MaxSessions: conc}, ss)
				wall += sum.Wall
			}
			b.ReportMetric(float64(n*b.N)/wall.Seconds(), "sessions/s")
		})
	}
}
