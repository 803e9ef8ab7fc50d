package netstack

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// LinkKind names a link endpoint implementation for a packet file
// descriptor (a TUN opened with IFF_TUN|IFF_NO_PI: one IP packet per read
// and write, no header).
type LinkKind string

const (
	// LinkFdbased is gVisor's fdbased endpoint: one readv per packet on a
	// reader goroutine that hands packets to processor goroutines, one
	// writev per packet inline in the sending TCP goroutine.
	LinkFdbased LinkKind = "fdbased"

	// LinkBatch is this package's endpoint: a reader goroutine that drains
	// the fd in one poller wake-up and injects packets inline, and a writer
	// goroutine that drains a queue filled by the TCP goroutines, so they
	// never wait for a system call. See NewBatchEndpoint.
	LinkBatch LinkKind = "batch"

	// DefaultLink is what NewTUNEndpoint uses, decided by
	// BenchmarkPrivilegedTUN (2-core VM shared with other work, TUN MTU
	// 65535, kernel servers in a private namespace, 3 s runs, two each):
	//
	//	                     kernel sockets   fdbased        batch
	//	sessions/s (c=64)    21.2-21.5 k      11.3-11.6 k    17.3-17.7 k
	//	CPU µs per session   52               131            106
	//	upload MB/s          3690-4400        2220-2380      3870-4140
	//	download MB/s        4220-4230        1530-1540      1910-1940
	//
	// batch does 1.5x fdbased's sessions/s for 0.8 of its CPU, 1.7x its
	// upload and 1.25x its download rate. Runs on this machine vary by up
	// to ±30 % with the load of other work; the ranking did not change.
	// With vnet headers (LinkOptions.VnetHdr, BenchmarkPrivilegedTUNGSO) an
	// MTU of 1500 moves 3.2 GB/s up and 1.5 GB/s down, against 0.5 and
	// 0.47 GB/s without.
	DefaultLink = LinkBatch
)

// LinkKinds lists the implementations NewLinkEndpoint accepts, for flags and
// error messages.
func LinkKinds() []LinkKind { return []LinkKind{LinkBatch, LinkFdbased} }

// NewTUNEndpoint returns the default link endpoint (DefaultLink) on a TUN
// file descriptor. See NewLinkEndpoint for the ownership rules.
func NewTUNEndpoint(fd int, mtu uint32) (stack.LinkEndpoint, error) {
	return NewLinkEndpoint(DefaultLink, fd, mtu)
}

// NewLinkEndpoint returns a link endpoint of the given kind on fd, a packet
// file descriptor: a TUN opened with IFF_TUN|IFF_NO_PI, or a SOCK_SEQPACKET /
// SOCK_DGRAM socket carrying raw IP packets (used by tests).
//
// Ownership: the endpoint works on its own duplicate of fd and closes that
// duplicate when it is closed (Stack.Close closes it). The caller keeps fd
// and may close it at any time after this returns; a TUN device lives while
// any descriptor for it is open, so it disappears once both are closed.
// Note that fd and the duplicate share the file status flags: fd is switched
// to non-blocking mode.
//
// The endpoint claims RX checksum offload (packets from the kernel are
// valid, so verifying them is wasted work) and never TX checksum offload
// (the kernel drops packets from a TUN whose checksums are not filled in).
func NewLinkEndpoint(kind LinkKind, fd int, mtu uint32) (stack.LinkEndpoint, error) {
	return NewLinkEndpointOpts(kind, fd, mtu, LinkOptions{})
}

// LinkOptions are the less common settings of a link endpoint.
type LinkOptions struct {
	// VnetHdr says that fd is a TUN opened with IFF_VNET_HDR (the default
	// 10-byte virtio_net_hdr) and TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|
	// TUN_F_TSO6): every packet carries the header. The endpoint then offers
	// gVisor host GSO: TCP hands over segments of up to 64 KiB whatever the
	// MTU, with partial checksums the kernel completes, and the kernel hands
	// over coalesced segments. Packet count, the cost on this path, then
	// stays low with a realistic MTU of 1500. LinkBatch only.
	VnetHdr bool
}

// NewLinkEndpointOpts is NewLinkEndpoint with options.
func NewLinkEndpointOpts(kind LinkKind, fd int, mtu uint32, opts LinkOptions) (stack.LinkEndpoint, error) {
	if opts.VnetHdr && kind != LinkBatch {
		// fdbased offers host GSO only on sockets; on a TUN it would
		// misread the headers.
		return nil, fmt.Errorf("netstack: %s link: vnet headers need the %s link", kind, LinkBatch)
	}
	if mtu < 1280 || mtu > 65535 {
		// 1280 is IPv6's minimum link MTU; 65535 the largest IP packet.
		return nil, fmt.Errorf("netstack: link mtu %d outside [1280, 65535]", mtu)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netstack: duplicate fd %d: %w", fd, err)
	}
	var ep stack.LinkEndpoint
	switch kind {
	case LinkBatch:
		ep, err = newBatchEndpoint(dup, mtu, opts.VnetHdr)
	case LinkFdbased:
		ep, err = newFdbasedEndpoint(dup, mtu)
	default:
		unix.Close(dup)
		return nil, fmt.Errorf("netstack: unknown link kind %q (want one of %v)", kind, LinkKinds())
	}
	if err != nil {
		// The constructors closed dup.
		return nil, fmt.Errorf("netstack: %s link on fd %d: %w", kind, fd, err)
	}
	return ep, nil
}

// fdbasedEndpoint is gVisor's fdbased endpoint plus ownership of its fd
// duplicate, and the cleanup fdbased needs when it is never attached.
type fdbasedEndpoint struct {
	stack.LinkEndpoint
	fd int

	mu       sync.Mutex
	attached bool // Attach was called with a dispatcher at least once
	closed   bool
}

// newFdbasedEndpoint takes ownership of fd, also on error.
func newFdbasedEndpoint(fd int, mtu uint32) (stack.LinkEndpoint, error) {
	ep, err := fdbased.New(&fdbased.Options{
		FDs: []int{fd},
		MTU: mtu,
		// On a TUN there is no link header: raw IP packets.
		EthernetHeader: false,
		// See NewLinkEndpoint: RX on, TX never.
		RXChecksumOffload: true,
		TXChecksumOffload: false,
		// The only mode that works on a non-socket fd.
		PacketDispatchMode: fdbased.Readv,
		// With a single processor fdbased delivers packets inline in its
		// reader, which Attach(nil) waits for while the stack's lock is
		// held; delivering can need that lock (an RST for an unknown
		// connection looks up a route): a deadlock on a 1-CPU machine.
		// Two or more processors deliver on their own goroutines.
		ProcessorsPerChannel: max(2, runtime.GOMAXPROCS(0)),
	})
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &fdbasedEndpoint{LinkEndpoint: ep, fd: fd}, nil
}

func (e *fdbasedEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	if d != nil {
		e.attached = true
	}
	e.mu.Unlock()
	e.LinkEndpoint.Attach(d)
}

// Close implements stack.LinkEndpoint. The stack detaches (Attach(nil),
// which stops and waits for the reader) before closing, so the duplicate fd
// is no longer in use here.
func (e *fdbasedEndpoint) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	if !e.attached {
		// fdbased.New already started its packet processor goroutines;
		// they stop only when a dispatch loop ends. Run one and stop it.
		e.LinkEndpoint.Attach(nopDispatcher{})
		e.LinkEndpoint.Attach(nil)
	}
	e.LinkEndpoint.Close()
	unix.Close(e.fd)
	// fdbased keeps an eventfd per reader to stop it and never closes it:
	// one descriptor per endpoint leaks until the process exits.
}

// nopDispatcher discards packets; see fdbasedEndpoint.Close.
type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}
