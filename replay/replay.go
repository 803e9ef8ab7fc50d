package replay

import (
	"context"
	"net"
	"net/netip"
)

// Dialer opens a TCP connection from src to dst.
//
// DialTCP may be called concurrently. src may be the zero AddrPort where the
// implementation cannot choose the source (kernel sockets). The returned
// conn is owned by the caller, who closes it. Errors wrap syscall errno
// values where one applies, so errors.Is(err, syscall.ECONNREFUSED),
// syscall.ECONNRESET and syscall.ETIMEDOUT work.
//
// Conns should also implement CloseWrite() error (send FIN, keep reading);
// an implementation that can send an RST implements Abort() error.
type Dialer interface {
	DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error)
}
