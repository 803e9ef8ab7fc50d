package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Kind says what Decode found in a frame.
type Kind uint8

const (
	// KindTCP: a TCP segment; the Packet is filled in.
	KindTCP Kind = iota
	// KindNotTCP: no TCP in the frame (ARP, UDP, ICMP, another link
	// protocol, ...). Not an error.
	KindNotTCP
	// KindFragment: an IP fragment of a TCP datagram, held until the
	// datagram is complete.
	KindFragment
	// KindTruncated: the snap length cut the frame before the fixed TCP
	// header was complete, so there is no segment to report.
	KindTruncated
	// KindMalformed: the frame cannot be decoded; the error says why.
	KindMalformed
	// KindUnsupported: the frame's link type is not supported; the error
	// is a *LinkTypeError.
	KindUnsupported
)

func (k Kind) String() string {
	switch k {
	case KindTCP:
		return "tcp"
	case KindNotTCP:
		return "not-tcp"
	case KindFragment:
		return "fragment"
	case KindTruncated:
		return "truncated"
	case KindMalformed:
		return "malformed"
	case KindUnsupported:
		return "unsupported"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Decoder turns frames into TCP segments: it parses the link layer, IPv4 or
// IPv6 (with extension headers) and TCP directly from the bytes, and
// reassembles IP fragments. Decoding a frame that is not a fragment does not
// allocate.
//
// Checksums are not verified: captures taken on the sending host carry the
// unfinished checksums of offloading NICs, and the kernel that received the
// packets has already judged them.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	frag defragmenter
}

// NewDecoder returns a Decoder with empty fragment state.
func NewDecoder() *Decoder { return &Decoder{} }

// FragStats returns the fragment counters so far.
func (d *Decoder) FragStats() FragStats { return d.frag.stats }

// Flush gives up the datagrams still waiting for fragments (counted as
// dropped). Call it at the end of a capture.
func (d *Decoder) Flush() { d.frag.release(); d.frag.flush() }

// Decode decodes frame f. For KindTCP it fills p; p.Payload then points into
// f.Data or into the Decoder's reassembly buffer, valid until the next call
// to Decode (and as long as f.Data is). For KindMalformed and KindUnsupported
// it returns an error wrapping ErrMalformed or ErrUnsupportedLinkType (the
// error does not name the frame: the caller knows it).
func (d *Decoder) Decode(f *Frame, p *Packet) (Kind, error) {
	d.frag.release()
	b := f.Data
	cut := f.Len > len(b)
	switch f.LinkType {
	case linkEthernet:
		return d.ethernet(f, p, b, cut)
	case linkSLL:
		if len(b) < 16 {
			return short("linux cooked header", len(b), 16, cut)
		}
		return d.ethertype(f, p, be16(b[14:]), b[16:], cut)
	case linkSLL2:
		if len(b) < 20 {
			return short("linux cooked v2 header", len(b), 20, cut)
		}
		return d.ethertype(f, p, be16(b), b[20:], cut)
	case linkRaw, linkRaw12, linkRaw14:
		return d.ip(f, p, b, cut)
	case linkIPv4:
		return d.ipv4(f, p, b, cut)
	case linkIPv6:
		return d.ipv6(f, p, b, cut)
	case linkNull, linkLoop:
		if len(b) < 4 {
			return short("loopback header", len(b), 4, cut)
		}
		// The address family is in the writer's byte order for NULL and
		// in network order for LOOP; real files get this wrong both ways.
		// AF values are small, so the order that gives a small number wins.
		af := binary.LittleEndian.Uint32(b)
		if af&0xffff0000 != 0 {
			af = binary.BigEndian.Uint32(b)
		}
		switch af {
		case 2: // AF_INET everywhere
			return d.ipv4(f, p, b[4:], cut)
		case 10, 23, 24, 28, 30: // AF_INET6: Linux, Windows, NetBSD/OpenBSD, FreeBSD, Darwin
			return d.ipv6(f, p, b[4:], cut)
		}
		return KindNotTCP, nil
	case linkPPP, linkPPPHDLC:
		return d.ppp(f, p, b, cut)
	case linkPPPEther:
		if len(b) < 6 {
			return short("pppoe header", len(b), 6, cut)
		}
		return d.ppp(f, p, b[6:], cut)
	case linkCHDLC:
		if len(b) < 4 {
			return short("cisco hdlc header", len(b), 4, cut)
		}
		return d.ethertype(f, p, be16(b[2:]), b[4:], cut)
	case linkNFLOG:
		return d.nflog(f, p, b, cut)
	case linkMPacket:
		return d.mpacket(f, p, b, cut)
	}
	return KindUnsupported, &LinkTypeError{LinkType: f.LinkType}
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// short reports a header that does not fit in the frame: a snap-length
// truncation if the frame was cut, else a malformed frame.
func short(what string, have, need int, cut bool) (Kind, error) {
	if cut {
		return KindTruncated, nil
	}
	return KindMalformed, fmt.Errorf("%s: %d bytes, need %d: %w", what, have, need, ErrMalformed)
}

func malformed(format string, args ...any) (Kind, error) {
	return KindMalformed, fmt.Errorf(format+": %w", append(args, ErrMalformed)...)
}

func (d *Decoder) ethernet(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 14 {
		return short("ethernet header", len(b), 14, cut)
	}
	return d.ethertype(f, p, be16(b[12:]), b[14:], cut)
}

// ethertype dispatches on an EtherType (or 802.3 length), peeling VLAN
// tags, LLC/SNAP, MPLS and PPPoE on the way.
func (d *Decoder) ethertype(f *Frame, p *Packet, et uint16, b []byte, cut bool) (Kind, error) {
	for depth := 0; depth < 8; depth++ {
		switch et {
		case 0x0800:
			return d.ipv4(f, p, b, cut)
		case 0x86DD:
			return d.ipv6(f, p, b, cut)
		case 0x8100, 0x88A8, 0x9100, 0x9200, 0x9300: // 802.1Q, 802.1ad (QinQ), legacy QinQ
			if len(b) < 4 {
				return short("vlan tag", len(b), 4, cut)
			}
			et = be16(b[2:])
			b = b[4:]
		case 0x8847, 0x8848: // MPLS unicast, multicast
			return d.mpls(f, p, b, cut)
		case 0x8864: // PPPoE session
			if len(b) < 6 {
				return short("pppoe header", len(b), 6, cut)
			}
			return d.ppp(f, p, b[6:], cut)
		default:
			if et > 1500 {
				return KindNotTCP, nil
			}
			// IEEE 802.3: a length, then LLC. Only SNAP with an
			// EtherType carries IP.
			if len(b) < 3 {
				return short("llc header", len(b), 3, cut)
			}
			if b[0] != 0xAA || b[1] != 0xAA || b[2] != 0x03 {
				return KindNotTCP, nil
			}
			if len(b) < 8 {
				return short("snap header", len(b), 8, cut)
			}
			et = be16(b[6:])
			b = b[8:]
		}
	}
	return malformed("more than 8 nested link headers")
}

func (d *Decoder) mpls(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	for i := 0; ; i++ {
		if i == 16 {
			return malformed("mpls: more than 16 labels")
		}
		if len(b) < 4 {
			return short("mpls label", len(b), 4, cut)
		}
		bottom := b[2]&1 != 0
		b = b[4:]
		if bottom {
			break
		}
	}
	// No protocol field after the stack: guess from the IP version nibble,
	// as every MPLS dissector does. Pseudowires (Ethernet inside) are
	// skipped.
	if len(b) == 0 {
		return short("mpls payload", 0, 1, cut)
	}
	switch b[0] >> 4 {
	case 4:
		return d.ipv4(f, p, b, cut)
	case 6:
		return d.ipv6(f, p, b, cut)
	}
	return KindNotTCP, nil
}

func (d *Decoder) ppp(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) >= 2 && b[0] == 0xff && b[1] == 0x03 { // HDLC address and control
		b = b[2:]
	}
	if len(b) < 1 {
		return short("ppp header", len(b), 2, cut)
	}
	var proto uint16
	if b[0]&1 != 0 { // protocol field compression: one byte
		proto = uint16(b[0])
		b = b[1:]
	} else {
		if len(b) < 2 {
			return short("ppp header", len(b), 2, cut)
		}
		proto = be16(b)
		b = b[2:]
	}
	switch proto {
	case 0x0021:
		return d.ipv4(f, p, b, cut)
	case 0x0057:
		return d.ipv6(f, p, b, cut)
	}
	return KindNotTCP, nil
}

// nflog decodes LINKTYPE_NFLOG: a 4-byte header (family, version, resource
// id), then TLVs whose length and type are in the capturing host's byte
// order; type 9 (NFULA_PAYLOAD) holds the IP packet.
func (d *Decoder) nflog(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 4 {
		return short("nflog header", len(b), 4, cut)
	}
	family := b[0]
	b = b[4:]
	var order binary.ByteOrder = binary.LittleEndian
	if len(b) >= 4 {
		// Big-endian only if little-endian makes no sense and big-endian
		// does; if neither, the little-endian reading names the damage.
		le, be := int(binary.LittleEndian.Uint16(b)), int(binary.BigEndian.Uint16(b))
		if (le < 4 || le > len(b)) && be >= 4 && be <= len(b) {
			order = binary.BigEndian
		}
	}
	for len(b) >= 4 {
		l := int(order.Uint16(b))
		typ := order.Uint16(b[2:]) & 0x7fff // top bit: NLA_F_NESTED
		if l < 4 {
			return malformed("nflog tlv: length %d < 4", l)
		}
		if l > len(b) {
			if typ == 9 && cut {
				l = len(b) // the payload itself was cut by the snap length
			} else {
				return short("nflog tlv", len(b), l, cut)
			}
		}
		if typ == 9 {
			v := b[4:l]
			switch family {
			case 2:
				return d.ipv4(f, p, v, cut)
			case 10:
				return d.ipv6(f, p, v, cut)
			}
			return d.ip(f, p, v, cut)
		}
		adv := (l + 3) &^ 3
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return KindNotTCP, nil
}

// mpacket decodes LINKTYPE_ETHERNET_MPACKET (IEEE 802.3br): preamble, then
// an SMD byte. Express frames and the start fragments of preemptable frames
// are Ethernet; verify/respond and continuation fragments hold no headers.
func (d *Decoder) mpacket(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 8 {
		return short("mpacket preamble", len(b), 8, cut)
	}
	switch b[7] {
	case 0xD5, 0xE6, 0x4C, 0x7F, 0xB3: // SMD-E, SMD-S0..S3
		return d.ethernet(f, p, b[8:], cut)
	}
	return KindNotTCP, nil
}

// ip dispatches raw IP on the version nibble.
func (d *Decoder) ip(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 1 {
		return short("ip header", 0, 20, cut)
	}
	switch b[0] >> 4 {
	case 4:
		return d.ipv4(f, p, b, cut)
	case 6:
		return d.ipv6(f, p, b, cut)
	}
	return malformed("raw ip: version %d", b[0]>>4)
}

func (d *Decoder) ipv4(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 20 {
		return short("ipv4 header", len(b), 20, cut)
	}
	if v := b[0] >> 4; v != 4 {
		return malformed("ipv4 header: version %d", v)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return malformed("ipv4 header: header length %d < 20", ihl)
	}
	if len(b) < ihl {
		return short("ipv4 header with options", len(b), ihl, cut)
	}
	total := int(be16(b[2:]))
	missing := 0
	switch {
	case total == 0:
		// Segmentation offload on the capturing host leaves the length
		// to the NIC: the frame is what there is.
		if cut {
			missing = f.Len - len(f.Data)
		}
	case total < ihl:
		return malformed("ipv4 header: total length %d < header length %d", total, ihl)
	case total <= len(b):
		b = b[:total] // drop link-layer padding and trailers
	default:
		// Bytes the IP header announces but the capture lacks: lost to
		// the snap length.
		missing = total - len(b)
	}
	proto := b[9]
	if proto != 6 {
		return KindNotTCP, nil
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	if fo := be16(b[6:]); fo&0x3fff != 0 { // more-fragments flag or an offset
		if missing > 0 {
			// A fragment cut by the snap length cannot complete its
			// datagram.
			return KindTruncated, nil
		}
		k := fragKey{src: src, dst: dst, id: uint32(be16(b[4:])), proto: proto}
		payload, _, complete, err := d.frag.add(k, f.Time, int(fo&0x1fff)*8, fo&0x2000 != 0, b[ihl:], proto, true)
		if err != nil {
			return malformed("ipv4 %s", err)
		}
		if !complete {
			return KindFragment, nil
		}
		return d.tcp(f, p, src, dst, payload, 0)
	}
	return d.tcp(f, p, src, dst, b[ihl:], missing)
}

func (d *Decoder) ipv6(f *Frame, p *Packet, b []byte, cut bool) (Kind, error) {
	if len(b) < 40 {
		return short("ipv6 header", len(b), 40, cut)
	}
	if v := b[0] >> 4; v != 6 {
		return malformed("ipv6 header: version %d", v)
	}
	plen := int(be16(b[4:]))
	nh := b[6]
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	rest := b[40:]
	missing := 0
	switch {
	case plen == 0:
		// A jumbogram, or segmentation offload: the frame is what there is.
		if cut {
			missing = f.Len - len(f.Data)
		}
	case plen <= len(rest):
		rest = rest[:plen]
	default:
		missing = plen - len(rest)
	}
	return d.ipv6Next(f, p, src, dst, nh, rest, missing, true)
}

// ipv6Next walks IPv6 extension headers from next-header nh over b (missing
// bytes announced but not captured follow b) to TCP.
func (d *Decoder) ipv6Next(f *Frame, p *Packet, src, dst netip.Addr, nh uint8, b []byte, missing int, fragOK bool) (Kind, error) {
	for i := 0; i < 16; i++ {
		switch nh {
		case 6:
			return d.tcp(f, p, src, dst, b, missing)
		case 0, 43, 60, 135, 139, 140: // hop-by-hop, routing, destination, mobility, HIP, shim6
			if len(b) < 8 {
				return short("ipv6 extension header", len(b), 8, missing > 0)
			}
			l := (int(b[1]) + 1) * 8
			if l > len(b) {
				return short("ipv6 extension header", len(b), l, missing > 0)
			}
			nh = b[0]
			b = b[l:]
		case 51: // authentication header: length in 4-byte units, minus 2
			if len(b) < 8 {
				return short("ipv6 authentication header", len(b), 8, missing > 0)
			}
			l := (int(b[1]) + 2) * 4
			if l > len(b) {
				return short("ipv6 authentication header", len(b), l, missing > 0)
			}
			nh = b[0]
			b = b[l:]
		case 44:
			if len(b) < 8 {
				return short("ipv6 fragment header", len(b), 8, missing > 0)
			}
			next := b[0]
			ofs := be16(b[2:])
			id := be32(b[4:])
			off, more := int(ofs>>3)*8, ofs&1 != 0
			b = b[8:]
			if off == 0 && !more {
				// An atomic fragment (RFC 6946): a whole datagram.
				nh = next
				continue
			}
			if !fragOK {
				return malformed("ipv6: fragment header inside a reassembled fragment")
			}
			if off == 0 && !maybeTCP6(next) {
				return KindNotTCP, nil
			}
			if missing > 0 {
				return KindTruncated, nil
			}
			k := fragKey{src: src, dst: dst, id: id}
			payload, proto, complete, err := d.frag.add(k, f.Time, off, more, b, next, off == 0)
			if err != nil {
				return malformed("ipv6 %s", err)
			}
			if !complete {
				return KindFragment, nil
			}
			return d.ipv6Next(f, p, src, dst, proto, payload, 0, false)
		default: // 59 no next header, 50 ESP, UDP, ICMPv6, ...
			return KindNotTCP, nil
		}
	}
	return malformed("ipv6: more than 16 extension headers")
}

// maybeTCP6 reports whether a fragmented IPv6 datagram whose first header
// after the fragment header is nh may carry TCP (worth reassembling).
func maybeTCP6(nh uint8) bool {
	switch nh {
	case 6, 0, 43, 60, 51, 135:
		return true
	}
	return false
}

// tcp decodes the TCP header in b. missing is the number of segment bytes
// announced by IP that the capture lacks; they follow b.
func (d *Decoder) tcp(f *Frame, p *Packet, src, dst netip.Addr, b []byte, missing int) (Kind, error) {
	if len(b) < 20 {
		if missing > 0 {
			return KindTruncated, nil
		}
		return malformed("tcp header: %d bytes, need 20", len(b))
	}
	off := int(b[12]>>4) * 4
	if off < 20 {
		return malformed("tcp header: data offset %d < 5", b[12]>>4)
	}
	seglen := len(b) + missing
	if off > seglen {
		return malformed("tcp header: data offset %d bytes > %d-byte segment", off, seglen)
	}
	var payload []byte
	if off <= len(b) {
		payload = b[off:]
	} else {
		// Options cut by the snap length: the header is usable, the whole
		// payload is missing.
		payload = b[len(b):]
		missing = seglen - off
	}
	p.N = f.N
	p.Time = f.Time
	p.Src = netip.AddrPortFrom(src, be16(b))
	p.Dst = netip.AddrPortFrom(dst, be16(b[2:]))
	p.Seq = be32(b[4:])
	p.Ack = be32(b[8:])
	p.Flags = Flags(b[13] & 0x3f) // FIN..URG have the same bit positions as Flags
	p.Window = be16(b[14:])
	p.Payload = payload
	p.Missing = missing
	return KindTCP, nil
}
