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

// PollConn is a conn that can be read and written without blocking. The
// replay then runs each session on one goroutine that reads whenever it
// waits, instead of a second goroutine blocked in Read: one goroutine
// hand-off less for every answer (the userspace TCP stack has already
// handed the segment from its own goroutine to the conn). netstack.Conn
// implements it; kernel sockets do not, and keep a reader goroutine.
type PollConn interface {
	net.Conn
	// ReadNow reads what has arrived, without waiting: 0, nil when nothing
	// has; io.EOF after the peer's FIN.
	ReadNow(b []byte) (int, error)
	// WriteNow writes what the send buffer takes, without waiting: it may
	// take less than b (0, nil when full).
	WriteNow(b []byte) (int, error)
	// ReadReady and WriteReady receive a token when the conn may have
	// become readable (or hung up) and writable (or hung up). A token may
	// be stale; none is lost.
	ReadReady() <-chan struct{}
	WriteReady() <-chan struct{}
}
