package replaytest

import (
	"encoding/binary"
	"fmt"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// Link types the encoders write (LINKTYPE_* numbers).
const (
	LinkNull     layers.LinkType = 0   // BSD loopback, address family in little-endian
	LinkEthernet layers.LinkType = 1   // Ethernet II
	LinkRaw12    layers.LinkType = 12  // DLT_RAW as numbered on most BSDs
	LinkRaw14    layers.LinkType = 14  // DLT_RAW as numbered on OpenBSD
	LinkRaw      layers.LinkType = 101 // LINKTYPE_RAW
	LinkLoop     layers.LinkType = 108 // OpenBSD loopback, address family big-endian
	LinkSLL      layers.LinkType = 113 // Linux cooked v1
	LinkIPv4     layers.LinkType = 228
	LinkIPv6     layers.LinkType = 229
	LinkSLL2     layers.LinkType = 276 // Linux cooked v2
)

// IPPacket encodes p as an IPv4 or IPv6 packet (by its addresses) carrying
// a TCP segment with correct checksums. SYN segments carry an MSS option.
// id is the IPv4 identification (ignored for IPv6). p.N and p.Missing are
// ignored.
func IPPacket(p *capture.Packet, id uint16) []byte {
	thl := 20
	if p.Flags&capture.SYN != 0 {
		thl = 24
	}
	tcpLen := thl + len(p.Payload)
	v4 := p.Src.Addr().Is4()
	ihl := 40
	if v4 {
		ihl = 20
	}
	b := make([]byte, ihl+tcpLen)
	t := b[ihl:]
	binary.BigEndian.PutUint16(t[0:], p.Src.Port())
	binary.BigEndian.PutUint16(t[2:], p.Dst.Port())
	binary.BigEndian.PutUint32(t[4:], p.Seq)
	binary.BigEndian.PutUint32(t[8:], p.Ack)
	t[12] = byte(thl/4) << 4
	t[13] = byte(p.Flags)
	binary.BigEndian.PutUint16(t[14:], p.Window)
	if thl == 24 {
		t[20], t[21] = 2, 4 // MSS option
		binary.BigEndian.PutUint16(t[22:], 1460)
	}
	copy(t[thl:], p.Payload)

	src, dst := p.Src.Addr().AsSlice(), p.Dst.Addr().AsSlice()
	var sum uint32
	sum = sumBytes(sum, src)
	sum = sumBytes(sum, dst)
	sum += 6 + uint32(tcpLen)
	sum = sumBytes(sum, t)
	binary.BigEndian.PutUint16(t[16:], fold(sum))

	if v4 {
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], id)
		b[6] = 0x40 // don't fragment
		b[8] = 64
		b[9] = 6
		copy(b[12:16], src)
		copy(b[16:20], dst)
		binary.BigEndian.PutUint16(b[10:], fold(sumBytes(0, b[:20])))
	} else {
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(tcpLen))
		b[6] = 6
		b[7] = 64
		copy(b[8:24], src)
		copy(b[24:40], dst)
	}
	return b
}

func sumBytes(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Encap puts an IP packet into a frame of link type lt (one of the Link*
// constants). Ethernet frames get locally administered MAC addresses.
func Encap(lt layers.LinkType, ip []byte) ([]byte, error) {
	v6 := len(ip) > 0 && ip[0]>>4 == 6
	et := uint16(0x0800)
	if v6 {
		et = 0x86DD
	}
	var h []byte
	switch lt {
	case LinkEthernet:
		h = make([]byte, 14)
		copy(h, []byte{0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01})
		binary.BigEndian.PutUint16(h[12:], et)
	case LinkSLL:
		h = make([]byte, 16)
		binary.BigEndian.PutUint16(h[0:], 0) // packet sent to us
		binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
		binary.BigEndian.PutUint16(h[4:], 6)
		copy(h[6:], []byte{0x02, 0, 0, 0, 0, 0x01})
		binary.BigEndian.PutUint16(h[14:], et)
	case LinkSLL2:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], et)
		binary.BigEndian.PutUint32(h[4:], 2) // interface index
		binary.BigEndian.PutUint16(h[8:], 1) // ARPHRD_ETHER
		h[10] = 0                            // packet type: to us
		h[11] = 6
		copy(h[12:], []byte{0x02, 0, 0, 0, 0, 0x01})
	case LinkRaw, LinkRaw12, LinkRaw14:
	case LinkIPv4:
		if v6 {
			return nil, fmt.Errorf("encap: ipv6 packet in link type 228 (IPV4)")
		}
	case LinkIPv6:
		if !v6 {
			return nil, fmt.Errorf("encap: ipv4 packet in link type 229 (IPV6)")
		}
	case LinkNull, LinkLoop:
		h = make([]byte, 4)
		af := uint32(2)
		if v6 {
			af = 30 // Darwin's AF_INET6, the most common in NULL captures
		}
		if lt == LinkNull {
			binary.LittleEndian.PutUint32(h, af)
		} else {
			binary.BigEndian.PutUint32(h, af)
		}
	default:
		return nil, fmt.Errorf("encap: link type %d not supported by replaytest", lt)
	}
	return append(h, ip...), nil
}

// EncapVLAN puts an IP packet into an Ethernet frame with the given VLAN
// tags, outermost first (two tags make QinQ: 802.1ad outside, 802.1Q in).
func EncapVLAN(ip []byte, vlans ...uint16) []byte {
	f, _ := Encap(LinkEthernet, ip)
	et := binary.BigEndian.Uint16(f[12:])
	out := append([]byte(nil), f[:12]...)
	for i, v := range vlans {
		tpid := uint16(0x8100)
		if i < len(vlans)-1 {
			tpid = 0x88A8
		}
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = binary.BigEndian.AppendUint16(out, v&0x0fff)
	}
	out = binary.BigEndian.AppendUint16(out, et)
	return append(out, f[14:]...)
}

// Frames encodes packets as frames of link type lt, numbered as the
// packets are (N) and timestamped with their times. Len is the full length.
func Frames(lt layers.LinkType, pkts []capture.Packet) ([]capture.Frame, error) {
	out := make([]capture.Frame, 0, len(pkts))
	for i := range pkts {
		d, err := Encap(lt, IPPacket(&pkts[i], uint16(i+1)))
		if err != nil {
			return nil, err
		}
		n := pkts[i].N
		if n == 0 {
			n = i + 1
		}
		out = append(out, capture.Frame{N: n, Time: pkts[i].Time, LinkType: lt, Data: d, Len: len(d)})
	}
	return out, nil
}

// Frames encodes the conversation's packets as frames of link type lt.
func (c *Conv) Frames(lt layers.LinkType) ([]capture.Frame, error) {
	return Frames(lt, c.Packets())
}

// FragmentIPv4 splits an IPv4 packet into fragments carrying at most size
// payload bytes each (size is rounded down to a multiple of 8). The
// don't-fragment flag is cleared.
func FragmentIPv4(pkt []byte, size int) [][]byte {
	ihl := int(pkt[0]&0x0f) * 4
	hdr := pkt[:ihl]
	payload := pkt[ihl:binary.BigEndian.Uint16(pkt[2:])]
	size &^= 7
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := make([]byte, ihl+end-off)
		copy(f, hdr)
		copy(f[ihl:], payload[off:end])
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		fo := uint16(off / 8)
		if end < len(payload) {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], fo)
		f[10], f[11] = 0, 0
		binary.BigEndian.PutUint16(f[10:], fold(sumBytes(0, f[:ihl])))
		out = append(out, f)
	}
	return out
}

// FragmentIPv6 splits an IPv6 packet without extension headers into
// fragments with a fragment header (identification id) carrying at most
// size payload bytes each (rounded down to a multiple of 8).
func FragmentIPv6(pkt []byte, size int, id uint32) [][]byte {
	next := pkt[6]
	payload := pkt[40 : 40+int(binary.BigEndian.Uint16(pkt[4:]))]
	size &^= 7
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := make([]byte, 48+end-off)
		copy(f, pkt[:40])
		f[6] = 44
		binary.BigEndian.PutUint16(f[4:], uint16(8+end-off))
		fh := f[40:48]
		fh[0] = next
		fo := uint16(off/8) << 3
		if end < len(payload) {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(f[48:], payload[off:end])
		out = append(out, f)
	}
	return out
}
