package nstest_test

import (
	"context"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
)

var (
	client = netip.MustParseAddrPort("198.18.0.1:50000")
	target = netip.MustParseAddrPort("192.0.2.80:80")
)

func TestHooksSniffAndDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	var mu sync.Mutex
	var seen []string
	p := nstest.NewPair(t, nstest.Options{Hook: func(dir nstest.Dir, pkt []byte) nstest.Verdict {
		seg, ok := nstest.ParseTCP(pkt)
		if !ok {
			t.Errorf("unparsable packet %x", pkt)
			return nstest.Verdict{}
		}
		mu.Lock()
		seen = append(seen, dir.String()+" "+seg.Flags.String())
		mu.Unlock()
		if dir == nstest.ServerToClient && seg.Has(nstest.SYN|nstest.ACK) {
			if seg.Src != target || seg.Dst != client {
				t.Errorf("SYN-ACK %s -> %s, want %s -> %s", seg.Src, seg.Dst, target, client)
			}
			return nstest.Verdict{Delay: delay}
		}
		return nstest.Verdict{}
	}})
	l, err := p.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), target.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()

	start := time.Now()
	c, err := p.Client.DialTCP(context.Background(), client, target)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("dial took %v, less than the SYN-ACK's delay %v", d, delay)
	}
	c.Close()

	// The handshake's last ACK may still be on its way through the hook
	// when DialTCP returns: wait for it, bounded.
	want := []string{"client->server SYN", "server->client SYN|ACK", "client->server ACK"}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= len(want) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < len(want) {
		t.Fatalf("saw %v", seen)
	}
	for i, w := range want {
		if seen[i] != w {
			t.Errorf("packet %d: %q, want %q (all: %v)", i, seen[i], w, seen)
		}
	}
}

func TestDropAndSetHook(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	l, err := p.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Drop everything: the dial cannot complete.
	p.SetHook(func(nstest.Dir, []byte) nstest.Verdict { return nstest.Verdict{Drop: true} })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if c, err := p.Client.DialTCP(ctx, client, target); err == nil {
		c.Close()
		t.Fatal("dial through a wire that drops everything succeeded")
	}
	// Remove the hook: the next dial works.
	p.SetHook(nil)
	c, err := p.Client.DialTCP(context.Background(), netip.AddrPortFrom(client.Addr(), client.Port()+1), target)
	if err != nil {
		t.Fatalf("dial after removing the hook: %v", err)
	}
	c.Close()
}

// Close with packets still held back by a long delay drops them and leaves
// no goroutines.
func TestCloseWithDelayedPackets(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		p := nstest.NewPair(t, nstest.Options{Hook: func(nstest.Dir, []byte) nstest.Verdict {
			return nstest.Verdict{Delay: time.Hour}
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		p.Client.DialTCP(ctx, client, target)
		p.Close()
		p.Close() // idempotent; t.Cleanup calls it once more
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after Close", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseTCPRejects(t *testing.T) {
	for name, pkt := range map[string][]byte{
		"empty":     nil,
		"garbage":   {0x45, 1, 2, 3},
		"ipv6 stub": {0x60, 0, 0, 0},
	} {
		if seg, ok := nstest.ParseTCP(pkt); ok {
			t.Errorf("%s: parsed as %+v", name, seg)
		}
	}
	if _, ok := nstest.ICMPv4Unreachable([]byte{0x60}, 1); ok {
		t.Error("ICMPv4Unreachable accepted a non-IPv4 packet")
	}
}

func TestFlagsString(t *testing.T) {
	for f, want := range map[nstest.TCPFlags]string{
		0:                                    "none",
		nstest.SYN:                           "SYN",
		nstest.SYN | nstest.ACK:              "SYN|ACK",
		nstest.FIN | nstest.PSH | nstest.ACK: "FIN|PSH|ACK",
	} {
		if got := f.String(); got != want {
			t.Errorf("%08b: %q, want %q", uint8(f), got, want)
		}
	}
}
