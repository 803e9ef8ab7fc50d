package replay

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestNetstackStreamingCapture is the streaming path whole, without root: a
// session.Builder is fed a capture one packet at a time, as a live source
// delivers it, and hands its sessions to the engine, which replays them
// through two gVisor stacks to a line server. A long connection (one client
// host creates a "schema" and keeps the connection open) is replayed while
// it is open in the capture; a second connection of the same host, which
// uses the schema and ends first, starts only once the first one's answer
// has arrived in the replay.
func TestNetstackStreamingCapture(t *testing.T) {
	checkLeaks(t)
	pair := nstest.NewPair(t, nstest.Options{})
	target := netip.MustParseAddrPort("10.77.0.1:6379")
	ln, err := pair.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []string
	lines := make(chan string, 16)
	release := make(chan struct{}) // the schema's answer waits for it
	serveEach(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			log = append(log, strings.TrimSpace(line))
			mu.Unlock()
			lines <- strings.TrimSpace(line)
			if strings.TrimSpace(line) == "CREATE" {
				<-release
			}
			c.Write([]byte("+OK\r\n"))
		}
	})

	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	server := "10.0.0.1:6379"
	schema := replaytest.NewConv("192.0.2.9:40000", server, t0).Handshake().
		Send("CREATE\n").Reply("+OK\r\n").ClientAck().Wait(time.Second)
	worker := replaytest.NewConv("192.0.2.9:40001", server, schema.Now()).Handshake().
		Send("USE\n").Reply("+OK\r\n").CloseClient()
	schema.At(worker.Now().Add(time.Second)).Send("LAST\n").Reply("+OK\r\n").CloseClient()
	first := schema.Packets()
	// The schema connection's packets up to its first answer, then the
	// worker's whole life, then the rest of the schema connection.
	var head, rest []capture.Packet
	for _, p := range first {
		if p.Time.Before(worker.Packets()[0].Time) {
			head = append(head, p)
		} else {
			rest = append(rest, p)
		}
	}
	pkts := replaytest.Merge(head, worker.Packets(), rest)

	r, err := New(Config{Dialer: pair.Client, Target: target, Speed: SpeedMax, Live: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	peerWait := make(chan uint64, 4)
	r.testHook = func(ev hookEvent, id uint64) {
		if ev == hookPeerWait {
			peerWait <- id
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Stream(ctx, func(ctx context.Context, sink session.Sink) error {
		b := session.NewBuilder(session.Config{Live: true}, sink)
		defer b.Close()
		expect := func(want, why string) {
			select {
			case l := <-lines:
				if l != want {
					t.Errorf("the target got %q, want %q (%s)", l, want, why)
				}
			case <-ctx.Done():
				t.Fatalf("%q did not reach the target (%s)", want, why)
			}
		}
		for i := range pkts {
			b.Add(&pkts[i])
			switch i {
			case len(head) - 1:
				expect("CREATE", "the schema connection is open in the capture: its request goes now, not at its end")
			case len(head) + len(worker.Packets()) - 1:
				// The worker has begun and ended in the capture; the
				// target still holds the schema's answer: the worker
				// waits for it.
				select {
				case <-peerWait:
				case <-ctx.Done():
					t.Fatal("the worker did not wait for the schema connection's answer")
				}
				select {
				case l := <-lines:
					t.Fatalf("the target got %q before the schema's answer", l)
				default:
				}
				close(release)
				// As a live source would: the rest comes after the
				// worker's request has happened.
				expect("USE", "the worker, once the schema connection's answer has arrived")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := r.Summary()
	if sum.Succeeded != 2 || sum.PeerTimeouts != 0 {
		t.Fatalf("summary %+v", sum)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(log, " "); got != "CREATE USE LAST" {
		t.Fatalf("the target saw %q", got)
	}
}
