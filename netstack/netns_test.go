package netstack_test

// A minimal private-network-namespace helper for the privileged tests and
// benchmarks (tun/tuntest has the shared, fuller one; netstack must not
// depend on tun). The namespace is anonymous: it is created with unshare(2)
// on a locked OS thread that is thrown away afterwards, and it disappears by
// itself when the last descriptor into it (TUN fd, sockets, nsFD) is closed —
// even if the test binary is killed. Nothing in the root namespace changes.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const privilegedEnv = "TCOPY_TUN_PRIVILEGED_TESTS"

// skipUnprivileged skips (or, with TCOPY_TUN_PRIVILEGED_TESTS=1, fails) a
// test whose capability probe failed.
func skipUnprivileged(t testing.TB, err error) {
	t.Helper()
	msg := fmt.Sprintf("needs CAP_SYS_ADMIN and CAP_NET_ADMIN (network namespace, /dev/net/tun): %v; "+
		"run the tests as root, or with CAP_SYS_ADMIN and CAP_NET_ADMIN (a VM or a privileged container)", err)
	if os.Getenv(privilegedEnv) == "1" {
		t.Fatalf("%s (%s=1: privileged tests must run)", msg, privilegedEnv)
	}
	t.Skip(msg)
}

// Addresses inside the test namespace.
var (
	nsTargetV4 = netip.MustParseAddr("10.77.0.1")  // on dummy0 (or lo)
	nsTargetV6 = netip.MustParseAddr("fd00:77::1") // on dummy0 (or lo)
	clientNet4 = netip.MustParsePrefix("198.18.0.0/15")
	clientNet6 = netip.MustParsePrefix("2001:2::/48")
)

// loopEnv is a network namespace wired the way tcopy-tun wires the host: a
// TUN (MTU, txqueuelen 10000, up, the client ranges routed into it,
// route_localnet=1 and rp_filter=0 on it) and targets on a dummy interface
// and on loopback.
type loopEnv struct {
	tunFD int // caller-side TUN descriptor (IFF_TUN|IFF_NO_PI)
	nsFD  int // the namespace, for inNS
}

// TUNSETOFFLOAD flags (linux/if_tun.h; not in x/sys/unix).
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// newLoopEnv builds the namespace; t.Cleanup tears it down.
func newLoopEnv(t testing.TB, mtu int) *loopEnv {
	return newLoopEnvVnet(t, mtu, false)
}

// newLoopEnvVnet is newLoopEnv with, if vnet, a TUN opened with
// IFF_VNET_HDR and checksum and TSO offloads on (netstack.LinkOptions).
func newLoopEnvVnet(t testing.TB, mtu int, vnet bool) *loopEnv {
	t.Helper()
	env := &loopEnv{tunFD: -1, nsFD: -1}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends
		// the thread, and with it this thread's view of the namespace.
		runtime.LockOSThread()
		errc <- env.setup(mtu, vnet)
	}()
	err := <-errc
	t.Cleanup(func() {
		if env.tunFD >= 0 {
			unix.Close(env.tunFD)
		}
		if env.nsFD >= 0 {
			unix.Close(env.nsFD)
		}
	})
	var probe *probeError
	if errors.As(err, &probe) {
		skipUnprivileged(t, err)
	}
	if err != nil {
		t.Fatalf("test namespace: %v", err)
	}
	return env
}

// probeError marks a failure of the privilege probe (skip, not fail).
type probeError struct{ err error }

func (e *probeError) Error() string { return e.err.Error() }
func (e *probeError) Unwrap() error { return e.err }

const tunName = "tcopytest0"

// setup runs on a locked thread.
func (env *loopEnv) setup(mtu int, vnet bool) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return &probeError{fmt.Errorf("unshare network namespace: %w", err)}
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace: %w", err)
	}
	env.nsFD = fd

	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}

	// Targets live on a dummy interface; a kernel built without the dummy
	// driver gets them on lo instead, which the kernel treats the same
	// (a local address is local whatever interface carries it).
	var targets netlink.Link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dummy0"}}
	if err := netlink.LinkAdd(targets); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("add dummy0: %w", err)
		}
		targets = lo
	}
	for _, p := range []string{"10.77.0.1/24", "fd00:77::1/64"} {
		a, err := netlink.ParseAddr(p)
		if err != nil {
			return err
		}
		a.Flags = unix.IFA_F_NODAD // usable at once, not tentative
		if err := netlink.AddrAdd(targets, a); err != nil {
			return fmt.Errorf("%s address %s: %w", targets.Attrs().Name, p, err)
		}
	}
	if err := netlink.LinkSetUp(targets); err != nil {
		return fmt.Errorf("%s up: %w", targets.Attrs().Name, err)
	}
	// An IPv6 address without DAD is bindable at once, but the kernel
	// installs its local route from a work queue: until then a SYN to it
	// that arrives from the TUN is answered "no route" (ICMPv6), and the
	// dial fails with "network is unreachable" (seen on a loaded machine).
	if err := waitLocalRoute(nsTargetV6, 5*time.Second); err != nil {
		return err
	}

	tfd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &probeError{fmt.Errorf("open /dev/net/tun: %w", err)}
	}
	env.tunFD = tfd
	ifr, err := unix.NewIfreq(tunName)
	if err != nil {
		return err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(tfd, unix.TUNSETIFF, ifr); err != nil {
		return &probeError{fmt.Errorf("TUNSETIFF %s: %w", tunName, err)}
	}
	if vnet {
		if err := unix.IoctlSetInt(tfd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
			return fmt.Errorf("TUNSETOFFLOAD %s: %w", tunName, err)
		}
	}
	tun, err := netlink.LinkByName(tunName)
	if err != nil {
		return fmt.Errorf("%s: %w", tunName, err)
	}
	if err := netlink.LinkSetMTU(tun, mtu); err != nil {
		return fmt.Errorf("%s mtu %d: %w", tunName, mtu, err)
	}
	// DESIGN.md: at the default 500 the kernel drops on the way into the
	// TUN and SYN retransmits push p99 to a second.
	if err := netlink.LinkSetTxQLen(tun, 10000); err != nil {
		return fmt.Errorf("%s txqueuelen: %w", tunName, err)
	}
	if err := netlink.LinkSetUp(tun); err != nil {
		return fmt.Errorf("%s up: %w", tunName, err)
	}
	for _, p := range []netip.Prefix{clientNet4, clientNet6} {
		dst := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: tun.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route %s dev %s: %w", p, tunName, err)
		}
	}
	// A loopback target answers 127.0.0.1 -> 198.18.x.y: the kernel routes
	// that out of the TUN only with route_localnet, and accepts the
	// incoming 198.18.x.y -> 127.0.0.1 on it likewise.
	for _, s := range []struct{ path, value string }{
		{"/proc/sys/net/ipv4/conf/" + tunName + "/route_localnet", "1"},
		{"/proc/sys/net/ipv4/conf/" + tunName + "/rp_filter", "0"},
		{"/proc/sys/net/ipv4/conf/all/rp_filter", "0"},
	} {
		if err := os.WriteFile(s.path, []byte(s.value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", s.path, err)
		}
	}
	return nil
}

// waitLocalRoute waits until the kernel routes a to itself (a local route).
func waitLocalRoute(a netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		rs, err := netlink.RouteGet(a.AsSlice())
		if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel has no local route for %s after %v (%v, %v)", a, limit, rs, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inNS runs fn on a fresh OS thread inside the namespace (sockets created
// by fn belong to it) and waits for it. The thread is discarded afterwards.
func (env *loopEnv) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see newLoopEnv
		if err := unix.Setns(env.nsFD, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// kernelServer is a target on a kernel socket in the namespace. It records
// the client addresses it accepted, so tests check the server side too.
type kernelServer struct {
	addr netip.AddrPort
	l    net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	clients map[netip.Addr]int
	bytes   int64
	open    map[net.Conn]struct{}
}

// serve is the per-connection behaviour of a kernelServer.
type serve func(c net.Conn) (int64, error)

func echo(c net.Conn) (int64, error) { return io.Copy(c, c) }

func discard(c net.Conn) (int64, error) { return io.Copy(io.Discard, c) }

// startServer listens on addr (port 0: any) inside the namespace.
func (env *loopEnv) startServer(t testing.TB, addr netip.AddrPort, handle serve) *kernelServer {
	t.Helper()
	s := &kernelServer{clients: make(map[netip.Addr]int), open: make(map[net.Conn]struct{})}
	err := env.inNS(func() error {
		l, err := net.Listen("tcp", addr.String())
		s.l = l
		return err
	})
	if err != nil {
		t.Fatalf("kernel server on %s: %v", addr, err)
	}
	s.addr = s.l.Addr().(*net.TCPAddr).AddrPort()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.l.Accept()
			if err != nil {
				return
			}
			ra := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			s.mu.Lock()
			s.clients[ra]++
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				n, _ := handle(c)
				s.mu.Lock()
				s.bytes += n
				delete(s.open, c)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		s.l.Close()
		// A client that vanished without a FIN or RST (a stack closed
		// with the connection open) would leave a handler blocked.
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *kernelServer) sawClient(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[a]
}
