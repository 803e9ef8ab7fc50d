package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialTCP opens a TCP connection from src to dst through the stack's NIC and
// returns a *Conn. It implements replay.Dialer.
//
// src must carry an address (the client identity to replay from); port 0
// picks an ephemeral port. src and dst must be of the same family
// (IPv4-mapped IPv6 addresses count as IPv4). A dst of ::1 is refused with
// ErrIPv6Loopback: no packet through a TUN can reach it.
//
// Cancelling ctx aborts the dial. Errors are *net.OpError values wrapping a
// syscall.Errno: ECONNREFUSED (RST to our SYN), ETIMEDOUT (no answer within
// Options.ConnectTimeout or gVisor's SYN backoff, or ctx's deadline — then the error also matches
// context.DeadlineExceeded), EHOSTUNREACH or ENETUNREACH (ICMP),
// EADDRNOTAVAIL (the 4-tuple is taken, e.g. still in TIME_WAIT here — Linux's
// errno for a bound socket in that case); context.Canceled on cancellation;
// ErrClosed after Close.
//
// DialTCP may be called concurrently. The caller owns and closes the conn.
func (st *Stack) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	c, err := st.dial(ctx, src, dst)
	if err != nil {
		return nil, err // not a typed nil *Conn inside a net.Conn
	}
	return c, nil
}

func (st *Stack) dial(ctx context.Context, src, dst netip.AddrPort) (*Conn, error) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	var source *net.TCPAddr // with the ephemeral port, once bound
	fail := func(err error) error {
		e := &net.OpError{Op: "dial", Net: "tcp", Err: err}
		if dst.IsValid() {
			e.Addr = net.TCPAddrFromAddrPort(dst)
		}
		switch {
		case source != nil:
			e.Source = source
		case src.Addr().IsValid():
			e.Source = net.TCPAddrFromAddrPort(src)
		}
		return e
	}
	if err := checkDialAddrs(src, dst); err != nil {
		return nil, fail(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(contextError(err))
	}

	c, err := st.startConnect(src, dst)
	if err != nil {
		return nil, fail(err)
	}
	if a, terr := c.ep.GetLocalAddress(); terr == nil {
		source = fullToTCPAddr(a)
	}
	var timeout <-chan time.Time
	if st.connectTimeout > 0 {
		t := time.NewTimer(st.connectTimeout)
		defer t.Stop()
		timeout = t.C
	}
	for {
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fail(contextError(ctx.Err()))
		case <-timeout:
			c.Close()
			return nil, fail(os.NewSyscallError("connect", syscall.ETIMEDOUT))
		case <-c.writeCh:
		}
		// The handshake's outcome is signalled as "writable" (established)
		// or "hung up/error" (refused, timed out, unreachable, aborted).
		// Anything else is an early or unrelated wake-up: keep waiting.
		switch tcp.EndpointState(c.ep.State()) {
		case tcp.StateConnecting, tcp.StateSynSent, tcp.StateSynRecv:
			continue
		}
		if terr := c.ep.LastError(); terr != nil {
			c.Close()
			return nil, fail(convertError("connect", terr))
		}
		c.setAddrs()
		return c, nil
	}
}

// startConnect creates, binds and connects an endpoint. It holds st.mu for
// reading until the connect has started, so Close either sees the endpoint
// registered (and aborts it, waking the dialer) or refuses the dial.
func (st *Stack) startConnect(src, dst netip.AddrPort) (*Conn, error) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.closed {
		return nil, ErrClosed
	}
	// The source address becomes one of the NIC's (see acquireAddr). So
	// does an IPv4 destination: gVisor's IPv4 receive path looks up every
	// packet's *source* address in the NIC's address table (to drop
	// packets from a subnet broadcast address), and a miss scans the whole
	// table — one entry per session in flight or in TIME_WAIT, for every
	// packet. With the target assigned, that lookup is exact too. (IPv6
	// has no such check.) HandleLocal is off, so packets to the target
	// still leave through the link.
	release := [2]netip.Addr{src.Addr()}
	if dst.Addr().Is4() && dst.Addr() != src.Addr() {
		release[1] = dst.Addr()
	}
	for i, a := range release {
		if !a.IsValid() {
			continue
		}
		if err := st.acquireAddr(a); err != nil {
			for _, b := range release[:i] {
				st.releaseAddr(b)
			}
			return nil, err
		}
	}
	wq := new(waiter.Queue)
	ep, terr := st.s.NewEndpoint(tcp.ProtocolNumber, protocolOf(dst.Addr()), wq)
	if terr != nil {
		for _, a := range release {
			if a.IsValid() {
				st.releaseAddr(a)
			}
		}
		return nil, convertError("socket", terr)
	}
	// From here on c.Close releases the endpoint and the addresses.
	c := newConn(st, ep, wq, release)
	// SO_REUSEADDR semantics: two sessions may share a client ip:port as
	// long as their 4-tuples differ (one capture replayed to two targets);
	// an identical live 4-tuple still fails in Connect (EADDRNOTAVAIL).
	ep.SocketOptions().SetReuseAddress(true)
	// Bind to the NIC as well as the address: route lookups for a loopback
	// destination (127.0.0.1) need an explicit NIC, since gVisor does not
	// route loopback through the route table.
	local := tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(src.Addr()), Port: src.Port()}
	if terr := ep.Bind(local); terr != nil {
		c.Close()
		return nil, convertError("bind", terr)
	}
	remote := tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(dst.Addr()), Port: dst.Port()}
	switch terr := ep.Connect(remote); terr.(type) {
	case *tcpip.ErrConnectStarted:
	case nil:
		// Not expected from gVisor's TCP (connect is always
		// asynchronous), but harmless: the state check sees it
		// established. Make sure the wait loop wakes up.
		select {
		case c.writeCh <- struct{}{}:
		default:
		}
	default:
		c.Close()
		return nil, convertError("connect", terr)
	}
	return c, nil
}

func checkDialAddrs(src, dst netip.AddrPort) error {
	switch {
	case !src.Addr().IsValid():
		// The kernel-socket dialer may be handed a zero source; this one
		// exists to replay client identities and cannot invent one.
		return errors.New("netstack: dial needs a source address")
	case !dst.Addr().IsValid() || dst.Addr().IsUnspecified():
		return fmt.Errorf("netstack: invalid destination %s", dst)
	case dst.Port() == 0:
		return fmt.Errorf("netstack: destination %s has port 0", dst)
	case src.Addr().Is4() != dst.Addr().Is4():
		return fmt.Errorf("netstack: source %s and destination %s: %w", src.Addr(), dst.Addr(), syscall.EAFNOSUPPORT)
	case dst.Addr() == netip.IPv6Loopback():
		return ErrIPv6Loopback
	case dst.Addr().IsMulticast() || src.Addr().IsMulticast() || src.Addr().IsUnspecified():
		return fmt.Errorf("netstack: cannot dial from %s to %s", src.Addr(), dst.Addr())
	}
	return nil
}

// contextError wraps a context error for a dial. A deadline also reads as
// ETIMEDOUT, so a caller's dial timeout and the stack's own SYN timeout are
// one class of failure (errors.Is works for both sentinels).
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return dialTimeout{err}
	}
	return err
}

type dialTimeout struct{ err error }

func (e dialTimeout) Error() string   { return e.err.Error() }
func (e dialTimeout) Unwrap() []error { return []error{e.err, syscall.ETIMEDOUT} }
func (e dialTimeout) Timeout() bool   { return true }
