package replay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// SocketDialer dials with the kernel's own sockets (--via socket): no
// privileges, no TUN, and no client-address fidelity, since the kernel picks
// the source address and port. It is the baseline the netstack path is
// measured against, so it sets what that path sets: TCP_NODELAY, and an RST
// for Abort.
type SocketDialer struct {
	// BindSource binds the socket to the mapped client address. That only
	// works where the address is local to the host (or with --keep-client-ip
	// on the capture's own host); by default the kernel chooses.
	BindSource bool
}

// DialTCP dials dst. Errors are *net.OpError values wrapping the errno
// (ECONNREFUSED, ETIMEDOUT, ...); a canceled ctx gives the context's error.
// The returned conn is a *SocketConn.
func (d *SocketDialer) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	var nd net.Dialer
	if d.BindSource && src.IsValid() {
		nd.LocalAddr = net.TCPAddrFromAddrPort(src)
	}
	c, err := nd.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, dialError(ctx, src, dst, err)
	}
	tc := c.(*net.TCPConn)
	// Go sets TCP_NODELAY on new connections already; setting it again
	// states the contract: each chunk leaves as soon as it is written, as
	// on the netstack path.
	if err := tc.SetNoDelay(true); err != nil {
		tc.Close()
		return nil, fmt.Errorf("dial %s: set TCP_NODELAY: %w", dst, err)
	}
	return &SocketConn{tc}, nil
}

// dialError makes sure a dial error wraps an errno where one applies: a
// deadline becomes ETIMEDOUT.
func dialError(ctx context.Context, src, dst netip.AddrPort, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return err
	}
	if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: &timeoutErr{err}}
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// timeoutErr keeps the original error's text and adds ETIMEDOUT.
type timeoutErr struct{ err error }

func (e *timeoutErr) Error() string   { return e.err.Error() }
func (e *timeoutErr) Unwrap() []error { return []error{e.err, syscall.ETIMEDOUT} }
func (e *timeoutErr) Timeout() bool   { return true }

// SocketConn is a kernel TCP connection with Abort.
type SocketConn struct {
	*net.TCPConn
}

// Abort closes the connection with an RST (SO_LINGER 0) instead of a FIN.
func (c *SocketConn) Abort() error {
	c.TCPConn.SetLinger(0) // fails only on a closed conn; Close reports that
	return c.TCPConn.Close()
}
