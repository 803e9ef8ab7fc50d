package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Tap sees the packets that cross a tapped link endpoint (NewTapEndpoint):
// what the stack sends and what it receives, as whole IP packets, the way
// the stack sees them (with host GSO, sent segments may be up to 64 KiB
// with a partial checksum the kernel completes).
type Tap interface {
	// Packet is called once per packet. out is true for a packet the
	// stack sends (towards the target), false for one it receives. parts
	// are the packet's bytes in order, valid only during the call: the
	// tap copies what it keeps. Packet runs on the data path (the link's
	// reader and the stack's sending goroutines), concurrently, and must
	// not block: a tap that cannot keep up drops and counts.
	Packet(out bool, parts [][]byte)
}

// tapEndpoint is a link endpoint that hands a view of every packet to a Tap
// on its way between the stack and the lower endpoint. It adds nothing
// else: capabilities, GSO, MTU, attaching and closing are the lower
// endpoint's.
type tapEndpoint struct {
	nested.Endpoint
	tap Tap
}

var (
	_ stack.LinkEndpoint      = (*tapEndpoint)(nil)
	_ stack.GSOEndpoint       = (*tapEndpoint)(nil)
	_ stack.NetworkDispatcher = (*tapEndpoint)(nil)
)

// NewTapEndpoint wraps lower so that tap sees every packet it sends and
// receives (gVisor's sniffer, without its synchronous writes). Ownership is
// lower's: the returned endpoint takes lower over, and closing it closes
// lower. Without a tap, use lower itself: an untapped path costs nothing.
func NewTapEndpoint(lower stack.LinkEndpoint, tap Tap) stack.LinkEndpoint {
	e := &tapEndpoint{tap: tap}
	e.Endpoint.Init(lower, e)
	return e
}

// DeliverNetworkPacket implements stack.NetworkDispatcher: a packet from the
// lower endpoint, on its way into the stack. On a TUN, nothing of it is
// parsed yet: its data is the whole IP packet.
func (e *tapEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	e.tap.Packet(false, packetParts(pkt))
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkWriter: packets from the stack, each
// with its headers, before the lower endpoint queues them. A packet the
// lower endpoint then drops (a full queue) is in the tap all the same, as
// on a real interface where the capture point is before the qdisc.
func (e *tapEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for _, pkt := range pkts.AsSlice() {
		e.tap.Packet(true, packetParts(pkt))
	}
	return e.Endpoint.WritePackets(pkts)
}

// counters passes on the lower endpoint's own counters (Stack.Stats).
func (e *tapEndpoint) counters() (txDropped, txErrors uint64) {
	if lc, ok := e.Child().(linkCounters); ok {
		return lc.counters()
	}
	return 0, 0
}

// packetParts returns pkt's bytes, headers and payload, without the space
// reserved in front of them. There is no link header on this path (a TUN);
// a virtio_net_hdr is the batch endpoint's own and not in the packet.
func packetParts(pkt *stack.PacketBuffer) [][]byte {
	return pkt.AsSlices()
}
