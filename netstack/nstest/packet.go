package nstest

import (
	"net/netip"
	"strings"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TCPFlags are the flags of a TCP segment.
type TCPFlags uint8

// The TCP flags ParseTCP reports.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
)

func (f TCPFlags) String() string {
	var b strings.Builder
	for i, name := range []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG"} {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(name)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// Segment is a parsed TCP segment, for hooks.
type Segment struct {
	Src, Dst   netip.AddrPort
	Flags      TCPFlags
	Seq, Ack   uint32
	PayloadLen int
}

// Has reports whether all of flags are set.
func (s Segment) Has(flags TCPFlags) bool { return s.Flags&flags == flags }

// ParseTCP parses an IPv4 or IPv6 packet carrying a TCP segment (no IPv6
// extension headers, no fragments: what gVisor sends). ok is false for
// anything else.
func ParseTCP(pkt []byte) (seg Segment, ok bool) {
	var src, dst netip.Addr
	var payload []byte
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || ip.TransportProtocol() != header.TCPProtocolNumber ||
			ip.FragmentOffset() != 0 || ip.More() {
			return Segment{}, false
		}
		src = netip.AddrFrom4(ip.SourceAddress().As4())
		dst = netip.AddrFrom4(ip.DestinationAddress().As4())
		payload = ip.Payload()
	case header.IPv6Version:
		ip := header.IPv6(pkt)
		// The stacks here send no extension headers: the next header is
		// the transport protocol itself.
		if !ip.IsValid(len(pkt)) || ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return Segment{}, false
		}
		src = netip.AddrFrom16(ip.SourceAddress().As16())
		dst = netip.AddrFrom16(ip.DestinationAddress().As16())
		payload = ip.Payload()
	default:
		return Segment{}, false
	}
	if len(payload) < header.TCPMinimumSize {
		return Segment{}, false
	}
	tcp := header.TCP(payload)
	off := int(tcp.DataOffset())
	if off < header.TCPMinimumSize || off > len(payload) {
		return Segment{}, false
	}
	return Segment{
		Src:        netip.AddrPortFrom(src, tcp.SourcePort()),
		Dst:        netip.AddrPortFrom(dst, tcp.DestinationPort()),
		Flags:      TCPFlags(tcp.Flags()),
		Seq:        tcp.SequenceNumber(),
		Ack:        tcp.AckNumber(),
		PayloadLen: len(payload) - off,
	}, true
}

// ICMPv4Unreachable builds the ICMP "destination unreachable" error (type 3,
// with code: 0 network, 1 host, 3 port unreachable) that a router at orig's
// destination would send back for orig, an IPv4 packet. Inject it in the
// opposite direction to orig's. ok is false if orig is not IPv4.
func ICMPv4Unreachable(orig []byte, code uint8) (pkt []byte, ok bool) {
	if header.IPVersion(orig) != header.IPv4Version {
		return nil, false
	}
	in := header.IPv4(orig)
	if !in.IsValid(len(orig)) {
		return nil, false
	}
	// RFC 792: the original IP header plus the first 8 bytes of its data.
	quote := orig[:min(len(orig), int(in.HeaderLength())+8)]
	pkt = make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(quote))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     in.DestinationAddress(),
		DstAddr:     in.SourceAddress(),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4DstUnreachable)
	icmp.SetCode(header.ICMPv4Code(code))
	copy(icmp[header.ICMPv4MinimumSize:], quote)
	icmp.SetChecksum(header.ICMPv4Checksum(icmp[:header.ICMPv4MinimumSize], checksum.Checksum(quote, 0)))
	return pkt, true
}
