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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tcopy-tun/tcopy-tun/netstack"
	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
)

// Addresses as the product uses them: clients in the benchmarking ranges,
// targets anywhere.
var (
	clientV4 = netip.MustParseAddr("198.18.0.10")
	clientV6 = netip.MustParseAddr("2001:2::10")
	targetV4 = netip.MustParseAddrPort("10.0.0.2:8080")
	targetV6 = netip.MustParseAddrPort("[2001:db8::2]:8080")
)

// The dialer contract replay/replay.go declares (matched, not imported:
// netstack must not know replay).
type dialer interface {
	DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error)
}

var _ dialer = (*netstack.Stack)(nil)

// conn is what replay type-asserts for.
type conn interface {
	net.Conn
	CloseWrite() error
	Abort() error
}

// checkGoroutines fails the test if, after everything the test registered
// with t.Cleanup has run, more goroutines are left than when it started.
// Register it first so its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines: %d before, %d after close\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// echoServer accepts on l and echoes every connection until EOF, then
// closes it. It stops when l is closed (t.Cleanup) and waits for its
// goroutines.
func echoServer(t testing.TB, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
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
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

func listen(t testing.TB, p *nstest.Pair, addr netip.AddrPort) net.Listener {
	t.Helper()
	l, err := p.Listen(addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return l
}

func dial(t testing.TB, d dialer, src, dst netip.AddrPort) conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialTCP(ctx, src, dst)
	if err != nil {
		t.Fatalf("dial %s -> %s: %v", src, dst, err)
	}
	cc, ok := c.(conn)
	if !ok {
		t.Fatalf("conn %T lacks CloseWrite/Abort", c)
	}
	return cc
}

func TestDialEcho(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"ipv4", netip.AddrPortFrom(clientV4, 40000), targetV4},
		{"ipv6", netip.AddrPortFrom(clientV6, 40000), targetV6},
		{"ipv4 ephemeral port", netip.AddrPortFrom(clientV4, 0), targetV4},
		{"ipv4-mapped ipv6", netip.AddrPortFrom(netip.AddrFrom16(clientV4.As16()), 40001),
			netip.AddrPortFrom(netip.AddrFrom16(targetV4.Addr().As16()), targetV4.Port())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			p := nstest.NewPair(t, nstest.Options{})
			echoServer(t, listen(t, p, netip.AddrPortFrom(tc.dst.Addr().Unmap(), tc.dst.Port())))

			c := dial(t, p.Client, tc.src, tc.dst)
			defer c.Close()
			la := c.LocalAddr().(*net.TCPAddr).AddrPort()
			if la.Addr() != tc.src.Addr().Unmap() || (tc.src.Port() != 0 && la.Port() != tc.src.Port()) || la.Port() == 0 {
				t.Errorf("local address %s, want %s", la, tc.src)
			}
			if ra := c.RemoteAddr().(*net.TCPAddr).AddrPort(); ra.Addr() != tc.dst.Addr().Unmap() || ra.Port() != tc.dst.Port() {
				t.Errorf("remote address %s, want %s", ra, tc.dst)
			}

			// Larger than one segment and than the initial window, so
			// flow control and reassembly are exercised.
			msg := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16)
			go func() {
				c.Write(msg)
				c.CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	for _, dst := range []netip.AddrPort{targetV4, targetV6} {
		src := netip.AddrPortFrom(clientV4, 0)
		if dst.Addr().Is6() {
			src = netip.AddrPortFrom(clientV6, 0)
		}
		_, err := p.Client.DialTCP(context.Background(), src, dst)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s with nothing listening: %v, want ECONNREFUSED", dst, err)
		}
		// The kernel dialer's wording, so logs read alike on both paths.
		if !strings.Contains(err.Error(), "connect: connection refused") || !strings.Contains(err.Error(), dst.String()) {
			t.Errorf("error text %q", err)
		}
	}
	if n := p.Client.Stats().AssignedAddresses; n != 0 {
		t.Errorf("%d addresses still assigned after failed dials", n)
	}
}

func TestServerResetMidStream(t *testing.T) {
	checkGoroutines(t)
	p := nstest.NewPair(t, nstest.Options{})
	l := listen(t, p, targetV4)
	defer l.Close()
	accepted := make(chan conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c.(conn)
	}()
	c := dial(t, p.Client, netip.AddrPortFrom(clientV4, 0), targetV4)
	defer c.Close()
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	if _, err := s.Write([]byte("partial answer")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, len("partial answer"))
	if err != nil || string(buf[:n]) != "partial answer" {
		t.Fatalf("read before reset: %q, %v", buf[:n], err)
	}
	if err := s.Abort(); err != nil {
		t.Fatalf("server abort: %v", err)
	}
	_, err = c.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after server reset: %v, want ECONNRESET", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "read" {
		t.Errorf("read error %#v is not a read *net.OpError", err)
	}
}

func TestDialTimeout(t *testing.T) {
	dropSYNs := func(dir nstest.Dir, pkt []byte) nstest.Verdict {
		seg, ok := nstest.ParseTCP(pkt)
		return nstest.Verdict{Drop: ok && seg.Has(nstest.SYN)}
	}

	t.Run("connect timeout", func(t *testing.T) {
		// Long enough for the SYN retransmitted at 1 s to be dropped too.
		p := nstest.NewPair(t, nstest.Options{Client: netstack.Options{ConnectTimeout: 1500 * time.Millisecond}, Hook: dropSYNs})
		echoServer(t, listen(t, p, targetV4))
		start := time.Now()
		_, err := p.Client.DialTCP(context.Background(), netip.AddrPortFrom(clientV4, 0), targetV4)
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("dial with SYNs dropped: %v, want ETIMEDOUT", err)
		}
		if st := p.Client.Stats(); st.Timeouts == 0 && st.Retransmits == 0 && st.SegmentsSent < 2 {
			t.Errorf("no SYN retransmission before the timeout: %+v", st)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("error %v is not a net.Error timeout", err)
		}
		t.Logf("timed out after %v: %v", time.Since(start).Round(time.Millisecond), err)
	})

	t.Run("context deadline", func(t *testing.T) {
		p := nstest.NewPair(t, nstest.Options{Hook: dropSYNs})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := p.Client.DialTCP(ctx, netip.AddrPortFrom(clientV6, 0), targetV6)
		if !errors.Is(err, syscall.ETIMEDOUT) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dial past its context deadline: %v, want ETIMEDOUT and DeadlineExceeded", err)
		}
	})

	t.Run("context cancel", func(t *testing.T) {
		p := nstest.NewPair(t, nstest.Options{Hook: dropSYNs})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := p.Client.DialTCP(ctx, netip.AddrPortFrom(clientV4, 0), targetV4)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled dial: %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("cancel took %v to abort the dial", d)
		}
		if n := p.Client.Stats().AssignedAddresses; n != 0 {
			t.Errorf("%d addresses still assigned after cancelled dial", n)
		}
	})
}

func TestDialUnreachable(t *testing.T) {
	for _, tc := range []struct {
		code uint8
		want syscall.Errno
	}{
		{0, syscall.ENETUNREACH},
		{1, syscall.EHOSTUNREACH},
	} {
		t.Run(tc.want.Error(), func(t *testing.T) {
			p := nstest.NewPair(t, nstest.Options{})
			// A router on the way answers the SYN with an ICMP error, as
			// the kernel does for a target it has no route to.
			p.SetHook(func(dir nstest.Dir, pkt []byte) nstest.Verdict {
				seg, ok := nstest.ParseTCP(pkt)
				if !ok || !seg.Has(nstest.SYN) {
					return nstest.Verdict{}
				}
				icmp, ok := nstest.ICMPv4Unreachable(pkt, tc.code)
				if !ok {
					t.Errorf("cannot build icmp for %x", pkt)
				}
				go p.Inject(nstest.ServerToClient, icmp)
				return nstest.Verdict{Drop: true}
			})
			_, err := p.Client.DialTCP(context.Background(), netip.AddrPortFrom(clientV4, 0), targetV4)
			if !errors.Is(err, tc.want) {
				t.Fatalf("dial answered by icmp code %d: %v, want %v", tc.code, err, tc.want)
			}
		})
	}
}

func TestCloseWriteDeliversFIN(t *testing.T) {
	checkGoroutines(t)
	p := nstest.NewPair(t, nstest.Options{})
	l := listen(t, p, targetV6)
	defer l.Close()
	serverDone := make(chan error, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			serverDone <- err
			return
		}
		defer s.Close()
		req, err := io.ReadAll(s) // returns at the client's FIN
		if err != nil {
			serverDone <- fmt.Errorf("server read: %w", err)
			return
		}
		// Half-closed by the client, the server can still answer.
		_, err = s.Write(append([]byte("got "), req...))
		serverDone <- err
	}()
	c := dial(t, p.Client, netip.AddrPortFrom(clientV6, 0), targetV6)
	defer c.Close()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	if _, err := c.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write after CloseWrite: %v, want EPIPE", err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if string(resp) != "got request" {
		t.Fatalf("answer %q", resp)
	}
	if err := <-serverDone; err != nil {
		t.Fatal(err)
	}
}

func TestAbortSendsRST(t *testing.T) {
	checkGoroutines(t)
	var rsts atomic.Int32
	src := netip.AddrPortFrom(clientV4, 41000)
	p := nstest.NewPair(t, nstest.Options{Hook: func(dir nstest.Dir, pkt []byte) nstest.Verdict {
		if seg, ok := nstest.ParseTCP(pkt); ok && dir == nstest.ClientToServer && seg.Src == src && seg.Has(nstest.RST) {
			rsts.Add(1)
		}
		return nstest.Verdict{}
	}})
	l := listen(t, p, targetV4)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, err := l.Accept()
		if err == nil {
			accepted <- s
		}
		close(accepted)
	}()
	c := dial(t, p.Client, src, targetV4)
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	if _, err := c.Write([]byte("unsent tail")); err != nil {
		t.Fatal(err)
	}
	if err := c.Abort(); err != nil {
		t.Fatalf("abort: %v", err)
	}
	// The server may read the data that arrived before the RST; then the
	// reset must show.
	buf := make([]byte, 64)
	var err error
	for err == nil {
		_, err = s.Read(buf)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read after client abort: %v, want ECONNRESET", err)
	}
	if rsts.Load() == 0 {
		t.Error("no RST from the client on the wire")
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("close after abort: %v, want net.ErrClosed", err)
	}
}

func TestDialRefusesIPv6Loopback(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	_, err := p.Client.DialTCP(context.Background(), netip.AddrPortFrom(clientV6, 0), netip.MustParseAddrPort("[::1]:80"))
	if !errors.Is(err, netstack.ErrIPv6Loopback) {
		t.Fatalf("dial ::1: %v, want ErrIPv6Loopback", err)
	}
	t.Log(err)
}

func TestDialBadAddresses(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"no source", netip.AddrPort{}, targetV4},
		{"mixed families", netip.AddrPortFrom(clientV4, 0), targetV6},
		{"unspecified destination", netip.AddrPortFrom(clientV4, 0), netip.MustParseAddrPort("0.0.0.0:80")},
		{"destination port 0", netip.AddrPortFrom(clientV4, 0), netip.MustParseAddrPort("10.0.0.2:0")},
		{"multicast destination", netip.AddrPortFrom(clientV4, 0), netip.MustParseAddrPort("224.0.0.1:80")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := p.Client.DialTCP(context.Background(), tc.src, tc.dst)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if c != nil {
				t.Errorf("non-nil conn %v with error", c)
			}
			t.Log(err)
		})
	}
}

func TestFourTuples(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	other := netip.MustParseAddrPort("10.0.0.3:8080")
	echoServer(t, listen(t, p, targetV4))
	echoServer(t, listen(t, p, other))
	src := netip.AddrPortFrom(clientV4, 42000)

	// One client ip:port, two targets: distinct 4-tuples, both work.
	a := dial(t, p.Client, src, targetV4)
	defer a.Close()
	b := dial(t, p.Client, src, other)
	defer b.Close()
	for _, c := range []conn{a, b} {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// The same 4-tuple again while it is live: EADDRNOTAVAIL, as Linux
	// reports for a bound socket whose 4-tuple is taken.
	_, err := p.Client.DialTCP(context.Background(), src, targetV4)
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("dial of a live 4-tuple: %v, want EADDRNOTAVAIL", err)
	}
	// The shared client address once, plus each IPv4 target (see dial.go).
	if n := p.Client.Stats().AssignedAddresses; n != 3 {
		t.Errorf("%d addresses assigned, want 3", n)
	}
	a.Close()
	b.Close()
	if n := p.Client.Stats().AssignedAddresses; n != 0 {
		t.Errorf("%d addresses assigned after close, want 0", n)
	}
}

func TestDeadlines(t *testing.T) {
	checkGoroutines(t)
	p := nstest.NewPair(t, nstest.Options{})
	l := listen(t, p, targetV4)
	defer l.Close()
	go func() {
		// Accept and hold the connection silently.
		s, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, s)
			s.Close()
		}
	}()
	c := dial(t, p.Client, netip.AddrPortFrom(clientV4, 0), targetV4)
	defer c.Close()

	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v is not a net.Error timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("deadline fired after %v", d)
	}

	// Moving the deadline while a Read is blocked: the new one applies.
	c.SetReadDeadline(time.Now().Add(time.Hour))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked read after deadline moved earlier: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read did not see the new deadline")
	}

	// Clearing the deadline makes reads block again; Close ends them.
	c.SetReadDeadline(time.Time{})
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("read returned %v with no deadline and no data", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read blocked across Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked read")
	}

	// A write deadline in the past fails at once.
	d := dial(t, p.Client, netip.AddrPortFrom(clientV4, 0), targetV4)
	defer d.Close()
	d.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := d.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past deadline: %v", err)
	}
}

// A write that cannot complete (the peer stopped reading, the window is
// closed) ends with its deadline, reporting what it did write.
func TestWriteBlocksOnFlowControl(t *testing.T) {
	checkGoroutines(t)
	p := nstest.NewPair(t, nstest.Options{})
	l := listen(t, p, targetV4)
	defer l.Close()
	held := make(chan net.Conn, 1)
	go func() {
		s, err := l.Accept()
		if err == nil {
			held <- s // never read
		}
		close(held)
	}()
	c := dial(t, p.Client, netip.AddrPortFrom(clientV4, 0), targetV4)
	defer c.Close()
	s := <-held
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	buf := make([]byte, 64<<20) // before the deadline is armed: zeroing it takes time under -race
	c.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := c.Write(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into a full window: n=%d err=%v, want a deadline error", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Errorf("wrote %d bytes before the deadline", n)
	}
	t.Logf("%d bytes buffered before the window closed", n)
}

func TestStackClose(t *testing.T) {
	checkGoroutines(t)
	p := nstest.NewPair(t, nstest.Options{})
	echoServer(t, listen(t, p, targetV4))
	c := dial(t, p.Client, netip.AddrPortFrom(clientV4, 0), targetV4)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	p.Client.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, syscall.ECONNABORTED) {
			t.Fatalf("read across stack close: %v, want ECONNABORTED", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stack close did not wake a blocked read")
	}
	p.Client.Close() // idempotent
	_, err := p.Client.DialTCP(context.Background(), netip.AddrPortFrom(clientV4, 0), targetV4)
	if !errors.Is(err, netstack.ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("dial after close: %v, want ErrClosed", err)
	}
	if _, err := p.Client.ListenTCP(targetV4); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listen after close: %v, want ErrClosed", err)
	}
}

// Many sessions at once, each from its own client address, as a replay of a
// busy capture does: all succeed, and everything is gone after Close.
func TestManyConcurrentDials(t *testing.T) {
	checkGoroutines(t)
	const sessions = 500
	p := nstest.NewPair(t, nstest.Options{})
	echoServer(t, listen(t, p, targetV4))
	echoServer(t, listen(t, p, targetV6))

	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	start := make(chan struct{})
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var src, dst netip.AddrPort
			if i%2 == 0 {
				src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), uint16(10000+i))
				dst = targetV4
			} else {
				a := clientV6.As16()
				a[14], a[15] = byte(i>>8), byte(i)
				src = netip.AddrPortFrom(netip.AddrFrom16(a), uint16(10000+i))
				dst = targetV6
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := p.Client.DialTCP(ctx, src, dst)
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			defer c.Close()
			msg := fmt.Sprintf("session %d says hello", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			c.(conn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != msg {
				errs <- fmt.Errorf("session %d: echo %q, %v", i, got, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := p.Client.Stats()
	if st.ActiveOpens != sessions || st.FailedOpens != 0 {
		t.Errorf("stats: %+v", st)
	}
	if st.AssignedAddresses != 0 {
		t.Errorf("%d addresses assigned after all conns closed", st.AssignedAddresses)
	}
	t.Logf("client stats: %+v", st)
}

// synPacket builds an IPv4 TCP SYN from src to dst with valid checksums.
func synPacket(src, dst netip.AddrPort) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.Addr().As4()),
		DstAddr:     tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(ip.Payload())
	tcp.Encode(&header.TCPFields{
		SrcPort:    src.Port(),
		DstPort:    dst.Port(),
		SeqNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagSyn,
		WindowSize: 65535,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return pkt
}
