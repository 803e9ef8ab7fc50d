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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcopy-tun/tcopy-tun/netstack"
	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
)

// benchConcurrency is the number of sessions in flight (DESIGN.md measured
// the endpoints at concurrency >= 64).
const benchConcurrency = 64

// requestSize is a small request/response, like a short HTTP exchange.
const requestSize = 128

// nextClient hands out client addresses for the whole test binary, so no
// 4-tuple repeats between benchmark runs while the target may still hold it.
var nextClient atomic.Uint32

func clientAddr(v6 bool) netip.Addr {
	n := nextClient.Add(1)
	if v6 {
		a := clientNet6.Addr().As16()
		a[12], a[13], a[14], a[15] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		return netip.AddrFrom16(a)
	}
	// 198.18.0.0/15: 17 bits of host part, skipping .0.
	n = n%(1<<17-2) + 1
	return netip.AddrFrom4([4]byte{198, 18 + byte(n>>16), byte(n >> 8), byte(n)})
}

// session is one short session: connect, send a request, half-close, read
// the whole answer, close.
func session(dial func() (net.Conn, error), req []byte, buf []byte) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		return err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return err
		}
	}
	n := 0
	for {
		m, err := c.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != len(req) {
		return fmt.Errorf("answer of %d bytes, want %d", n, len(req))
	}
	return nil
}

// runSessions runs b.N sessions on workers goroutines (started by start,
// which may pin them somewhere) and reports sessions/s and CPU per session.
func runSessions(b *testing.B, start func(workers int, work func() error) error, dial func() (net.Conn, error)) {
	var left atomic.Int64
	left.Store(int64(b.N))
	cpu0 := cpuTime()
	b.ResetTimer()
	err := start(benchConcurrency, func() error {
		req := bytes.Repeat([]byte{'q'}, requestSize)
		buf := make([]byte, 2*requestSize)
		for left.Add(-1) >= 0 {
			if err := session(dial, req, buf); err != nil {
				return err
			}
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/session")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// goWorkers runs n workers on ordinary goroutines and returns the first
// error.
func goWorkers(n int, work func() error) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- work()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func netstackDialer(d dialer, dst netip.AddrPort) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return d.DialTCP(ctx, netip.AddrPortFrom(clientAddr(dst.Addr().Is6()), 0), dst)
	}
}

// BenchmarkNstestDial measures short sessions (dial, 128-byte request and
// echo, close) over the in-memory pair: the cost of gVisor on both ends
// without any system call, the ceiling for the engine's own tests.
func BenchmarkNstestDial(b *testing.B) {
	p := nstest.NewPair(b, nstest.Options{})
	l, err := p.Listen(targetV4)
	if err != nil {
		b.Fatal(err)
	}
	echoServer(b, l)
	b.ReportAllocs()
	runSessions(b, goWorkers, netstackDialer(p.Client, targetV4))
}

// BenchmarkPrivilegedTUN runs the same workloads through kernel sockets (the
// baseline), gVisor's fdbased endpoint and this package's batch endpoint on
// a real TUN (MTU 65535) in a private namespace, in one run:
//
//   - sessions: short sessions at concurrency 64 against a kernel echo
//     server (sessions/s, process CPU per session);
//   - upload / download: one connection moving data to a kernel sink or
//     from a kernel source (MB/s).
func BenchmarkPrivilegedTUN(b *testing.B) {
	benchLoop(b, 65535, false, []benchPath{
		{name: "kernel"},
		{name: string(netstack.LinkFdbased), kind: netstack.LinkFdbased},
		{name: string(netstack.LinkBatch), kind: netstack.LinkBatch},
	})
}

// BenchmarkPrivilegedTUNGSO is the same for the batch endpoint with vnet
// headers (host GSO) at MTU 1500 and 65535, and without them at MTU 1500
// (BenchmarkPrivilegedTUN has the plain 65535 case). The kernel baseline
// does not cross the TUN, so it is the one above.
func BenchmarkPrivilegedTUNGSO(b *testing.B) {
	for _, c := range []struct {
		name string
		mtu  int
		vnet bool
	}{
		{"mtu1500/plain", 1500, false},
		{"mtu1500/vnet", 1500, true},
		{"mtu65535/vnet", 65535, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchLoop(b, c.mtu, c.vnet, []benchPath{{name: "batch", kind: netstack.LinkBatch, opts: netstack.LinkOptions{VnetHdr: c.vnet}}})
		})
	}
}

// benchPath is one way to the kernel servers: kernel sockets (kind "") or a
// netstack on the TUN with a link endpoint of the given kind.
type benchPath struct {
	name string
	kind netstack.LinkKind
	opts netstack.LinkOptions
}

func benchLoop(b *testing.B, mtu int, vnet bool, paths []benchPath) {
	env := newLoopEnvVnet(b, mtu, vnet)
	// The kernel-socket baseline closes actively (TIME_WAIT on its side):
	// let it reuse its ports and use all of them, inside this namespace.
	if err := env.inNS(func() error {
		for _, s := range []struct{ path, value string }{
			{"/proc/sys/net/ipv4/tcp_tw_reuse", "1"},
			{"/proc/sys/net/ipv4/ip_local_port_range", "1024 65535"},
		} {
			if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	echoSrv := env.startServer(b, netip.AddrPortFrom(nsTargetV4, 0), echo)
	sink := env.startServer(b, netip.AddrPortFrom(nsTargetV4, 0), discard)
	source := env.startServer(b, netip.AddrPortFrom(nsTargetV4, 0), stream)

	// withPath gives a benchmark a dialer and a worker starter for a path.
	withPath := func(b *testing.B, p benchPath, dst netip.AddrPort, fn func(start func(int, func() error) error, dial func() (net.Conn, error))) {
		if p.kind == "" {
			dial, stop := env.kernelDialer(b, dst)
			defer stop()
			fn(goWorkers, dial)
			return
		}
		ep, err := netstack.NewLinkEndpointOpts(p.kind, env.tunFD, uint32(mtu), p.opts)
		if err != nil {
			b.Fatal(err)
		}
		st, err := netstack.New(ep, netstack.Options{Logf: b.Logf})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		fn(goWorkers, netstackDialer(st, dst))
		if s := st.Stats(); s.Retransmits > 0 || s.TxDroppedNoBufferSpace > 0 {
			b.Logf("%s: %d sessions: %d retransmits (%d timeouts), %d link drops", p.name, s.ActiveOpens, s.Retransmits, s.Timeouts, s.TxDroppedNoBufferSpace)
		}
	}

	for _, p := range paths {
		b.Run("sessions/"+p.name, func(b *testing.B) {
			b.ReportAllocs()
			withPath(b, p, echoSrv.addr, func(start func(int, func() error) error, dial func() (net.Conn, error)) {
				runSessions(b, start, dial)
			})
		})
	}
	const chunk = 1 << 20
	for _, dir := range []struct {
		name string
		dst  netip.AddrPort
		move func(c net.Conn, buf []byte) error
	}{
		{"upload", sink.addr, func(c net.Conn, buf []byte) error { _, err := c.Write(buf); return err }},
		{"download", source.addr, func(c net.Conn, buf []byte) error { _, err := io.ReadFull(c, buf); return err }},
	} {
		for _, p := range paths {
			b.Run(dir.name+"/"+p.name, func(b *testing.B) {
				withPath(b, p, dir.dst, func(start func(int, func() error) error, dial func() (net.Conn, error)) {
					b.SetBytes(chunk)
					err := start(1, func() error {
						c, err := dial()
						if err != nil {
							return err
						}
						defer c.Close()
						buf := make([]byte, chunk)
						b.ResetTimer()
						for range b.N {
							if err := dir.move(c, buf); err != nil {
								return err
							}
						}
						b.StopTimer()
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
				})
			})
		}
	}
}

// stream writes to c until the peer goes away.
func stream(c net.Conn) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := c.Write(buf)
		n += int64(m)
		if err != nil {
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
				return n, nil
			}
			return n, err
		}
	}
}

// kernelDialer returns a dialer of kernel sockets inside the namespace for
// the baseline. A socket belongs to the namespace of the thread that creates
// it, so one OS thread locked into the namespace creates sockets ahead of
// demand and ordinary goroutines connect and use them, as with net.Dial.
// Compared with net.Dial that costs a few extra system calls per session
// (dup, close, getsockopt, a second poller registration): the baseline is,
// if anything, slightly pessimistic.
func (env *loopEnv) kernelDialer(b *testing.B, dst netip.AddrPort) (dial func() (net.Conn, error), stop func()) {
	socks := make(chan int, 256)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread() // never unlocked: the thread is discarded
		if err := unix.Setns(env.nsFD, unix.CLONE_NEWNET); err != nil {
			b.Errorf("setns: %v", err)
			close(socks)
			return
		}
		defer close(socks)
		for {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Errorf("socket: %v", err)
				return
			}
			select {
			case socks <- fd:
			case <-done:
				unix.Close(fd)
				return
			}
		}
	}()
	sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	dial = func() (net.Conn, error) {
		fd, ok := <-socks
		if !ok {
			return nil, errors.New("socket factory stopped")
		}
		// Register with the poller before connecting, so the
		// completion's writability event cannot be missed.
		f := os.NewFile(uintptr(fd), "kernel-baseline")
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return nil, err
		}
		var soErr error
		connecting := false
		werr := rc.Write(func(fd uintptr) bool {
			if !connecting {
				connecting = true
				err := unix.Connect(int(fd), sa)
				if err == unix.EINPROGRESS {
					return false // wait for writability: the outcome
				}
				soErr = err
				return true
			}
			v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && v != 0 {
				err = syscall.Errno(v)
			}
			soErr = err
			return true
		})
		if werr != nil {
			return nil, werr
		}
		if soErr != nil {
			return nil, os.NewSyscallError("connect", soErr)
		}
		return net.FileConn(f)
	}
	stop = func() {
		close(done)
		for fd := range socks {
			unix.Close(fd)
		}
		wg.Wait()
	}
	return dial, stop
}
