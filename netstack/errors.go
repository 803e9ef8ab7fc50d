package netstack

import (
	"errors"
	"net"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// ErrClosed is returned by DialTCP and ListenTCP after Close. It wraps
// net.ErrClosed so callers that already handle closed kernel sockets need no
// special case.
var ErrClosed = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "netstack: stack closed" }
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// ErrIPv6Loopback is returned by DialTCP for a destination of ::1. The kernel
// never routes ::1 out of a non-loopback device, so no packet through the TUN
// can reach it; failing early with this error beats a dial timeout.
var ErrIPv6Loopback = errors.New("ipv6 loopback ::1 cannot be reached through a tun device: " +
	"use 127.0.0.1 or a non-loopback ipv6 address of the target")

// errnoOf maps a gVisor error to the errno a Linux socket would report for
// the same condition. It is the only place where tcpip.Error is interpreted;
// everything above netstack sees syscall.Errno values (wrapped), so
// errors.Is(err, syscall.ECONNREFUSED) and friends work on both the netstack
// and the kernel-socket dialer.
//
// ok is false for nil and for error types this version of the table does not
// know (a gVisor upgrade that adds one); the caller then keeps gVisor's text.
func errnoOf(err tcpip.Error) (errno syscall.Errno, ok bool) {
	switch err.(type) {
	case nil:
		return 0, false
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED, true
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET, true
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT, true
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH, true
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH, true
	case *tcpip.ErrHostDown:
		return syscall.EHOSTDOWN, true
	case *tcpip.ErrNoNet:
		return syscall.ENONET, true
	case *tcpip.ErrConnectionAborted:
		// Our own SO_LINGER 0 close, or a reset while we were closing.
		return syscall.ECONNABORTED, true
	case *tcpip.ErrAborted:
		// Stack.Close aborted the endpoint (gVisor's Stack.Close). Linux
		// reports ECONNABORTED for a socket torn down under the caller.
		return syscall.ECONNABORTED, true
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE, true
	case *tcpip.ErrClosedForReceive:
		// Only reached outside Read, which turns it into io.EOF.
		return syscall.ESHUTDOWN, true
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN, true
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN, true
	case *tcpip.ErrAlreadyConnecting:
		return syscall.EALREADY, true
	case *tcpip.ErrConnectStarted:
		return syscall.EINPROGRESS, true
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE, true
	case *tcpip.ErrNoPortAvailable:
		// connect(2) without a free ephemeral port.
		return syscall.EADDRNOTAVAIL, true
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL, true
	case *tcpip.ErrWouldBlock:
		return syscall.EAGAIN, true
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS, true
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE, true
	case *tcpip.ErrNotPermitted:
		return syscall.EPERM, true
	case *tcpip.ErrNotSupported:
		return syscall.EOPNOTSUPP, true
	case *tcpip.ErrAddressFamilyNotSupported:
		return syscall.EAFNOSUPPORT, true
	case *tcpip.ErrDestinationRequired:
		return syscall.EDESTADDRREQ, true
	case *tcpip.ErrDuplicateAddress, *tcpip.ErrDuplicateNICID:
		return syscall.EEXIST, true
	case *tcpip.ErrBadAddress, *tcpip.ErrBadBuffer:
		return syscall.EFAULT, true
	case *tcpip.ErrBroadcastDisabled:
		return syscall.EACCES, true
	case *tcpip.ErrUnknownProtocolOption:
		return syscall.ENOPROTOOPT, true
	case *tcpip.ErrQueueSizeNotSupported:
		return syscall.ENOTTY, true
	case *tcpip.ErrNoSuchFile:
		return syscall.ENOENT, true
	case *tcpip.ErrEndpointBusy:
		return syscall.EBUSY, true
	case *tcpip.ErrUnknownNICID, *tcpip.ErrInvalidNICID, *tcpip.ErrUnknownDevice:
		return syscall.ENODEV, true
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue,
		*tcpip.ErrInvalidPortRange, *tcpip.ErrAlreadyBound, *tcpip.ErrMalformedHeader,
		*tcpip.ErrUnknownProtocol, *tcpip.ErrMissingRequiredFields,
		*tcpip.ErrMulticastInputCannotBeOutput:
		return syscall.EINVAL, true
	}
	return 0, false
}

// tcpipError keeps gVisor's text for an error errnoOf does not know.
type tcpipError struct{ err tcpip.Error }

func (e tcpipError) Error() string { return e.err.String() }

// convertError turns a tcpip.Error into a Go error that wraps the matching
// syscall.Errno inside an os.SyscallError named after syscall — the same
// shape the net package produces for kernel sockets, so messages read alike
// ("connect: connection refused") on both dialers.
func convertError(syscallName string, err tcpip.Error) error {
	if errno, ok := errnoOf(err); ok {
		return os.NewSyscallError(syscallName, errno)
	}
	return tcpipError{err}
}
