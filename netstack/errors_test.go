package netstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Every tcpip.Error type of the pinned gVisor maps to an errno, and the
// conditions replay acts on map to the errno Linux reports for them.
func TestErrnoOf(t *testing.T) {
	for _, tc := range []struct {
		err  tcpip.Error
		want syscall.Errno
	}{
		{&tcpip.ErrConnectionRefused{}, syscall.ECONNREFUSED},
		{&tcpip.ErrConnectionReset{}, syscall.ECONNRESET},
		{&tcpip.ErrTimeout{}, syscall.ETIMEDOUT},
		{&tcpip.ErrHostUnreachable{}, syscall.EHOSTUNREACH},
		{&tcpip.ErrNetworkUnreachable{}, syscall.ENETUNREACH},
		{&tcpip.ErrHostDown{}, syscall.EHOSTDOWN},
		{&tcpip.ErrNoNet{}, syscall.ENONET},
		{&tcpip.ErrConnectionAborted{}, syscall.ECONNABORTED},
		{&tcpip.ErrAborted{}, syscall.ECONNABORTED},
		{&tcpip.ErrClosedForSend{}, syscall.EPIPE},
		{&tcpip.ErrClosedForReceive{}, syscall.ESHUTDOWN},
		{&tcpip.ErrNotConnected{}, syscall.ENOTCONN},
		{&tcpip.ErrAlreadyConnected{}, syscall.EISCONN},
		{&tcpip.ErrAlreadyConnecting{}, syscall.EALREADY},
		{&tcpip.ErrConnectStarted{}, syscall.EINPROGRESS},
		{&tcpip.ErrPortInUse{}, syscall.EADDRINUSE},
		{&tcpip.ErrNoPortAvailable{}, syscall.EADDRNOTAVAIL},
		{&tcpip.ErrBadLocalAddress{}, syscall.EADDRNOTAVAIL},
		{&tcpip.ErrWouldBlock{}, syscall.EAGAIN},
		{&tcpip.ErrNoBufferSpace{}, syscall.ENOBUFS},
		{&tcpip.ErrMessageTooLong{}, syscall.EMSGSIZE},
		{&tcpip.ErrNotPermitted{}, syscall.EPERM},
		{&tcpip.ErrNotSupported{}, syscall.EOPNOTSUPP},
		{&tcpip.ErrAddressFamilyNotSupported{}, syscall.EAFNOSUPPORT},
		{&tcpip.ErrDestinationRequired{}, syscall.EDESTADDRREQ},
		{&tcpip.ErrDuplicateAddress{}, syscall.EEXIST},
		{&tcpip.ErrDuplicateNICID{}, syscall.EEXIST},
		{&tcpip.ErrBadAddress{}, syscall.EFAULT},
		{&tcpip.ErrBadBuffer{}, syscall.EFAULT},
		{&tcpip.ErrBroadcastDisabled{}, syscall.EACCES},
		{&tcpip.ErrUnknownProtocolOption{}, syscall.ENOPROTOOPT},
		{&tcpip.ErrQueueSizeNotSupported{}, syscall.ENOTTY},
		{&tcpip.ErrNoSuchFile{}, syscall.ENOENT},
		{&tcpip.ErrEndpointBusy{}, syscall.EBUSY},
		{&tcpip.ErrUnknownNICID{}, syscall.ENODEV},
		{&tcpip.ErrInvalidNICID{}, syscall.ENODEV},
		{&tcpip.ErrUnknownDevice{}, syscall.ENODEV},
		{&tcpip.ErrInvalidEndpointState{}, syscall.EINVAL},
		{&tcpip.ErrInvalidOptionValue{}, syscall.EINVAL},
		{&tcpip.ErrInvalidPortRange{}, syscall.EINVAL},
		{&tcpip.ErrAlreadyBound{}, syscall.EINVAL},
		{&tcpip.ErrMalformedHeader{}, syscall.EINVAL},
		{&tcpip.ErrUnknownProtocol{}, syscall.EINVAL},
		{&tcpip.ErrMissingRequiredFields{}, syscall.EINVAL},
		{&tcpip.ErrMulticastInputCannotBeOutput{}, syscall.EINVAL},
	} {
		t.Run(fmt.Sprintf("%T", tc.err), func(t *testing.T) {
			got, ok := errnoOf(tc.err)
			if !ok || got != tc.want {
				t.Fatalf("errnoOf(%s) = %v, %v; want %v", tc.err, got, ok, tc.want)
			}
			err := convertError("connect", tc.err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("convertError(%s) = %v does not match %v", tc.err, err, tc.want)
			}
			var se *os.SyscallError
			if !errors.As(err, &se) || se.Syscall != "connect" {
				t.Fatalf("convertError(%s) = %#v, want an *os.SyscallError for connect", tc.err, err)
			}
		})
	}
	if _, ok := errnoOf(nil); ok {
		t.Error("errnoOf(nil) reports an errno")
	}
}

func TestTranslateErrnoRoundTrip(t *testing.T) {
	// gVisor's own errno -> tcpip.Error table, read back through ours:
	// the errnos that survive the round trip unchanged are the ones a
	// kernel would report, so the two tables agree.
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ETIMEDOUT, syscall.ECONNABORTED,
		syscall.EADDRINUSE, syscall.EADDRNOTAVAIL, syscall.EPIPE, syscall.ENOTCONN,
		syscall.EISCONN, syscall.EALREADY, syscall.EINPROGRESS, syscall.EMSGSIZE, syscall.ENOBUFS,
	} {
		got, ok := errnoOf(tcpip.TranslateErrno(errno))
		if !ok || got != errno {
			t.Errorf("%v -> %s -> %v", errno, tcpip.TranslateErrno(errno), got)
		}
	}
}

func TestErrClosed(t *testing.T) {
	err := &net.OpError{Op: "dial", Net: "tcp", Err: ErrClosed}
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
		t.Fatalf("%v does not match net.ErrClosed and ErrClosed", err)
	}
}
