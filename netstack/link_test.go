package netstack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcopy-tun/tcopy-tun/netstack"
)

// socketPairStacks joins two stacks with link endpoints of the given kind on
// the two ends of a SOCK_SEQPACKET socketpair: packet boundaries are kept
// as on a TUN, so the link endpoints run their real code without root.
// It returns the stacks and the caller-side fds (still open: the endpoints
// work on duplicates).
func socketPairStacks(t *testing.T, kind netstack.LinkKind) (client, server *netstack.Stack, fds [2]int) {
	return socketPairStacksOpts(t, kind, netstack.LinkOptions{})
}

func socketPairStacksOpts(t *testing.T, kind netstack.LinkKind, opts netstack.LinkOptions) (client, server *netstack.Stack, fds [2]int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	fds = [2]int{sp[0], sp[1]}
	for _, fd := range sp {
		// Room for a burst of 64 KiB packets in flight per direction.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	// With vnet headers, a 1500-byte MTU: segments larger than the MSS
	// then exist only thanks to GSO.
	mtu := uint32(65535)
	if opts.VnetHdr {
		mtu = 1500
	}
	var stacks [2]*netstack.Stack
	for i, fd := range sp {
		ep, err := netstack.NewLinkEndpointOpts(kind, fd, mtu, opts)
		if err != nil {
			t.Fatalf("link endpoint %s: %v", kind, err)
		}
		if stacks[i], err = netstack.New(ep, netstack.Options{Logf: t.Logf}); err != nil {
			t.Fatalf("stack on %s: %v", kind, err)
		}
	}
	return stacks[0], stacks[1], fds
}

func openFDs(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		m[e.Name()] = target
	}
	return m
}

func TestLinkEndpointsOverSocketPair(t *testing.T) {
	for _, cfg := range []struct {
		name string
		kind netstack.LinkKind
		opts netstack.LinkOptions
	}{
		{"batch", netstack.LinkBatch, netstack.LinkOptions{}},
		{"fdbased", netstack.LinkFdbased, netstack.LinkOptions{}},
		// Both ends with vnet headers at MTU 1500: GSO segments of up to
		// 64 KiB with partial checksums cross the wire, headers stripped
		// again on the other side. (What the kernel makes of them is
		// TestPrivilegedTUNGSO's job.)
		{"batch vnet", netstack.LinkBatch, netstack.LinkOptions{VnetHdr: true}},
	} {
		kind := cfg.kind
		t.Run(cfg.name, func(t *testing.T) {
			checkGoroutines(t)
			fdsBefore := openFDs(t)
			client, server, fds := socketPairStacksOpts(t, kind, cfg.opts)

			var wg sync.WaitGroup
			for _, addr := range []netip.AddrPort{targetV4, targetV6} {
				l, err := server.ListenTCP(addr)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						wg.Add(1)
						go func() {
							defer wg.Done()
							defer c.Close()
							io.Copy(c, c)
						}()
					}
				}()
			}

			// Concurrent short sessions, both families.
			const sessions = 64
			errs := make(chan error, sessions+1)
			var cwg sync.WaitGroup
			for i := range sessions {
				cwg.Add(1)
				go func() {
					defer cwg.Done()
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 0)
					dst := targetV4
					if i%2 == 1 {
						a := clientV6.As16()
						a[15] = byte(i)
						src, dst = netip.AddrPortFrom(netip.AddrFrom16(a), 0), targetV6
					}
					errs <- echoOnce(client, src, dst, []byte(fmt.Sprintf("hello %d", i)))
				}()
			}
			// And one bulk session: 32 MiB each way.
			cwg.Add(1)
			go func() {
				defer cwg.Done()
				errs <- echoOnce(client, netip.AddrPortFrom(clientV4, 0), targetV4, bytes.Repeat([]byte{0xa5, 0x5a, 1, 2}, 8<<20))
			}()
			cwg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}

			if cfg.opts.VnetHdr {
				// 32 MiB each way is 23 k segments of 1460 bytes.
				if n := client.Stats().PacketsSent; n > 23000/4 {
					t.Errorf("%d packets sent with GSO: segments are not large", n)
				}
			}
			client.Close()
			server.Close()
			wg.Wait()

			// The endpoints closed their duplicates; the caller's fds are
			// still open and still the caller's to close.
			for _, fd := range fds {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
					t.Errorf("caller's fd %d closed by the stack: %v", fd, err)
				}
				unix.Close(fd)
			}
			leaked := 0
			for fd, target := range openFDs(t) {
				if _, ok := fdsBefore[fd]; ok {
					continue
				}
				if kind == netstack.LinkFdbased && target == "anon_inode:[eventfd]" {
					continue // fdbased's stop eventfd, see doc.go
				}
				// ReadDir's own descriptor may show up.
				if target != "" {
					t.Logf("fd %s -> %s left open", fd, target)
					leaked++
				}
			}
			if leaked > 1 {
				t.Errorf("%d descriptors left open", leaked)
			}
		})
	}
}

// echoOnce dials, writes msg, half-closes, and checks the echo.
func echoOnce(d dialer, src, dst netip.AddrPort, msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialTCP(ctx, src, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		if err == nil {
			err = c.(conn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("%s -> %s: read: %w", src, dst, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("%s -> %s: write: %w", src, dst, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("%s -> %s: echoed %d bytes, want %d", src, dst, len(got), len(msg))
	}
	return nil
}

func TestNewLinkEndpointErrors(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notapacketfd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name string
		kind netstack.LinkKind
		fd   int
		mtu  uint32
	}{
		{"unknown kind", "carrier-pigeon", int(f.Fd()), 1500},
		{"mtu too small", netstack.LinkBatch, int(f.Fd()), 576},
		{"closed fd", netstack.LinkBatch, 1 << 20, 1500},
		{"regular file", netstack.LinkBatch, int(f.Fd()), 1500},
		{"fdbased with vnet headers", netstack.LinkFdbased, int(f.Fd()), 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			ep, err := netstack.NewLinkEndpointOpts(tc.kind, tc.fd, tc.mtu, netstack.LinkOptions{VnetHdr: tc.name == "fdbased with vnet headers"})
			if err == nil {
				ep.Close()
				t.Fatal("no error")
			}
			t.Log(err)
			if after := openFDs(t); len(after) > len(before) {
				t.Errorf("error path left %d descriptors open", len(after)-len(before))
			}
		})
	}
	// The caller's fd survives every failure.
	if _, err := f.Stat(); err != nil {
		t.Fatalf("caller's file broken: %v", err)
	}
}

// Net.Conn conformance of the pieces replay relies on, for both link kinds'
// Conn (the same type): LocalAddr/RemoteAddr stable and allocation-free.
func TestConnAddrsDoNotAllocate(t *testing.T) {
	client, server, fds := socketPairStacks(t, netstack.LinkBatch)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	defer server.Close()
	defer client.Close()
	l, err := server.ListenTCP(targetV4)
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
	c := dial(t, client, netip.AddrPortFrom(clientV4, 43000), targetV4)
	defer c.Close()
	var la, ra net.Addr
	if n := testing.AllocsPerRun(100, func() { la, ra = c.LocalAddr(), c.RemoteAddr() }); n != 0 {
		t.Errorf("LocalAddr+RemoteAddr allocate %v times", n)
	}
	if la.String() != "198.18.0.10:43000" || ra.String() != targetV4.String() {
		t.Errorf("addresses %s -> %s", la, ra)
	}
}

// Regression: closing a stack while its link endpoint is delivering packets
// that need the stack's lock (SYNs to a closed port are answered with an RST,
// which looks up a route) must not deadlock. gVisor removes the NIC with
// that lock held and detaches the endpoint under it.
func TestCloseWhileDelivering(t *testing.T) {
	syn := synPacket(netip.MustParseAddrPort("198.18.7.7:1234"), targetV4)
	for _, kind := range netstack.LinkKinds() {
		t.Run(string(kind), func(t *testing.T) {
			checkGoroutines(t)
			for range 30 {
				sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				unix.SetNonblock(sp[1], true) // the flood must never block
				ep, err := netstack.NewLinkEndpoint(kind, sp[0], 65535)
				if err != nil {
					t.Fatal(err)
				}
				st, err := netstack.New(ep, netstack.Options{Logf: t.Logf})
				if err != nil {
					t.Fatal(err)
				}
				stop := make(chan struct{})
				flooded := make(chan struct{})
				go func() {
					defer close(flooded)
					for {
						select {
						case <-stop:
							return
						default:
						}
						unix.Write(sp[1], syn) // EAGAIN when full: fine
						// Drain the RSTs so the stack's writes keep going.
						unix.Recvfrom(sp[1], make([]byte, 128), unix.MSG_DONTWAIT)
					}
				}()
				time.Sleep(time.Millisecond)
				done := make(chan struct{})
				go func() {
					st.Close()
					close(done)
				}()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("Stack.Close deadlocked while packets were being delivered")
				}
				close(stop)
				<-flooded
				unix.Close(sp[0])
				unix.Close(sp[1])
			}
		})
	}
}

// Stack.Close aborts open connections with an RST that must reach the peer
// (a target left with a half-dead connection would hold it until its own
// timeouts): the link endpoint flushes what is queued when it stops.
func TestStackCloseResetsPeers(t *testing.T) {
	for _, kind := range netstack.LinkKinds() {
		t.Run(string(kind), func(t *testing.T) {
			checkGoroutines(t)
			client, server, fds := socketPairStacks(t, kind)
			defer unix.Close(fds[0])
			defer unix.Close(fds[1])
			defer server.Close()
			l, err := server.ListenTCP(targetV4)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			const conns = 50
			accepted := make(chan net.Conn, conns)
			go func() {
				for range conns {
					c, err := l.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			var mine []conn
			for i := range conns {
				c := dial(t, client, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 2, byte(i)}), 0), targetV4)
				mine = append(mine, c)
			}
			var peers []net.Conn
			for range conns {
				peers = append(peers, <-accepted)
			}
			// Fill the link's queue with data segments, so the RSTs of
			// the close queue up behind them.
			chunk := make([]byte, 256<<10)
			for _, c := range mine {
				if _, err := c.Write(chunk); err != nil {
					t.Fatal(err)
				}
			}
			client.Close() // conns left open on purpose
			var wg sync.WaitGroup
			for i, s := range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer s.Close()
					s.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err := io.Copy(io.Discard, s)
					if !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("peer %d after the client stack closed: %v, want ECONNRESET", i, err)
					}
				}()
			}
			wg.Wait()
		})
	}
}
