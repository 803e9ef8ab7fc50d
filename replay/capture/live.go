package capture

import (
	"errors"
	"fmt"
	"slices"
)

// Live capture limits and defaults (see LiveOptions).
const (
	// DefaultSnapLen keeps whole frames, including the 64 KiB segments
	// that GSO and GRO hand to packet sockets (the frames are seen before
	// segmentation on send and after coalescing on receive).
	DefaultSnapLen = 262144
	// MinSnapLen leaves room for the link, IP and TCP headers with options.
	MinSnapLen = 128
	// MaxSnapLen is the largest snap length accepted (BIG TCP super
	// packets reach 512 KiB).
	MaxSnapLen = 1 << 20
	// DefaultLiveBuffer is the socket receive buffer of a live capture: it
	// absorbs bursts while the replay is busy. Memory is only used while
	// frames are waiting.
	DefaultLiveBuffer = 32 << 20
	// MaxLivePorts bounds LiveOptions.Ports, so that the kernel filter
	// stays within the reach of classic BPF's 8-bit jumps.
	MaxLivePorts = 64
)

var (
	// ErrNoInterface: OpenLive was given a name that is not a network
	// interface of the caller's network namespace.
	ErrNoInterface = errors.New("no such network interface")
	// ErrLiveUnsupported: live capture is not available on this system
	// (it needs Linux AF_PACKET sockets).
	ErrLiveUnsupported = errors.New("live capture needs Linux (AF_PACKET sockets)")
)

// LiveOptions configure OpenLive. The zero value captures every TCP segment
// on the interface, whole, in non-promiscuous mode.
type LiveOptions struct {
	// SnapLen is the most bytes kept of each frame (Frame.Len still says
	// how long it was). 0 means DefaultSnapLen; otherwise it must be
	// between MinSnapLen and MaxSnapLen.
	SnapLen int
	// Ports, when not empty, keeps only TCP segments whose source or
	// destination port is one of them (at most MaxLivePorts, none 0).
	// Empty keeps every TCP segment. Frames without TCP are never kept.
	Ports []uint16
	// Promiscuous also captures frames addressed to other hosts (mirror
	// ports, hubs). The kernel leaves promiscuous mode when the Source is
	// closed, even if the process dies. Not available with "any".
	Promiscuous bool
	// BufferSize is the socket receive buffer in bytes: how much the
	// kernel queues while ReadFrame is not called before it drops frames
	// (DropCounter counts them). 0 means DefaultLiveBuffer. Above
	// net.core.rmem_max it needs CAP_NET_ADMIN, else the kernel caps it.
	BufferSize int
}

// DropCounter is implemented by the live Source. Drops returns how many
// frames that passed the filter the kernel has dropped since the Source was
// opened because they did not fit in the receive buffer (the reader fell
// behind). Those frames are lost to the capture, so their sessions may be
// replayed with holes or not at all: the command reports the count.
//
// Drops may be called from any goroutine, also while ReadFrame is blocked,
// and after Close (it then returns the count at Close).
type DropCounter interface {
	Drops() (uint64, error)
}

// OpenLive opens a live capture of network interface iface (of the
// caller's network namespace) through a Linux AF_PACKET socket; "any"
// captures all interfaces at once. Frames come out as the kernel delivers
// them, both directions (sent and received), filtered by opts.
//
// Link types: Ethernet and loopback interfaces yield Ethernet frames (1);
// interfaces without a link header (TUN, WireGuard, raw-IP modems) yield
// raw IP (101); "any" and every other interface type are read in the
// kernel's cooked mode and yield LINUX_SLL (113) frames, as tcpdump does.
// On a loopback interface each packet is delivered once (the kernel shows
// it twice, as sent and as received; the sent copy is dropped).
//
// The filter runs in the kernel (classic BPF): frames other than TCP, and
// TCP to or from other ports, never reach the process. It cannot see the
// ports of non-first IP fragments or of IPv6 packets with extension
// headers, so it lets TCP fragments and IPv6 packets with hop-by-hop,
// routing or destination options through; the Decoder and the session
// layer judge those. TCP inside MPLS or PPPoE is not captured live.
//
// Frame.Time is the kernel's receive (or send) time in nanoseconds, taken
// when the frame reached the packet socket (SO_TIMESTAMPNS), not the NIC's
// hardware time. Frame.Len is the length on the wire (reported by the
// kernel alongside the packet); VLAN tags that the NIC stripped are put
// back into Ethernet frames.
//
// End and concurrency: a live capture has no end of its own. Close, which
// may be called from another goroutine while ReadFrame waits, ends it:
// the waiting ReadFrame (and every later one) returns io.EOF. Apart from
// Close and Drops, the Source is used by one goroutine at a time. If the
// interface goes down or disappears, ReadFrame returns an error. The Source
// implements DropCounter.
//
// Capturing the replay's own TUN device, or an interface that the
// replayed traffic crosses on the selected ports, feeds the replay its own
// packets: the command must refuse that.
//
// Opening needs CAP_NET_RAW (the error wraps os.ErrPermission without
// it); OpenLive returns ErrNoInterface (wrapped in an *Error) for an
// unknown interface and ErrLiveUnsupported on systems other than Linux.
func OpenLive(iface string, opts LiveOptions) (Source, error) {
	o, err := opts.normalize(iface)
	if err != nil {
		return nil, &Error{Op: "open live", Name: iface, Err: err}
	}
	return openLive(iface, o)
}

// normalize checks the options and fills in the defaults; the ports come
// back sorted and without duplicates.
func (o LiveOptions) normalize(iface string) (LiveOptions, error) {
	switch {
	case iface == "":
		return o, errors.New("interface name is empty")
	case len(iface) >= 16: // IFNAMSIZ, with the terminating NUL
		return o, fmt.Errorf("interface name is %d bytes long, longer than the 15 Linux allows", len(iface))
	}
	switch {
	case o.SnapLen == 0:
		o.SnapLen = DefaultSnapLen
	case o.SnapLen < MinSnapLen || o.SnapLen > MaxSnapLen:
		return o, fmt.Errorf("snap length %d out of range %d..%d (0 means %d)", o.SnapLen, MinSnapLen, MaxSnapLen, DefaultSnapLen)
	}
	switch {
	case o.BufferSize == 0:
		o.BufferSize = DefaultLiveBuffer
	case o.BufferSize < 0:
		return o, fmt.Errorf("buffer size %d is negative (0 means %d)", o.BufferSize, DefaultLiveBuffer)
	}
	if len(o.Ports) > 0 {
		ports := slices.Clone(o.Ports)
		slices.Sort(ports)
		ports = slices.Compact(ports)
		if ports[0] == 0 {
			return o, errors.New("port 0 in the port filter")
		}
		if len(ports) > MaxLivePorts {
			return o, fmt.Errorf("%d ports in the port filter, at most %d", len(ports), MaxLivePorts)
		}
		o.Ports = ports
	}
	if o.Promiscuous && iface == "any" {
		return o, errors.New(`promiscuous mode needs a named interface, not "any"`)
	}
	return o, nil
}
