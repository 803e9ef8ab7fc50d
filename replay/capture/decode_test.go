package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

var t0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// seg is a data segment used by the decoder tests.
func seg(src, dst string, payload string) capture.Packet {
	return capture.Packet{
		Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Seq: 1000, Ack: 2000, Flags: capture.ACK | capture.PSH, Window: 512,
		Payload: []byte(payload), Time: t0, N: 1,
	}
}

var (
	seg4 = seg("10.0.0.1:1234", "10.0.0.2:80", "GET / HTTP/1.1\r\n\r\n")
	seg6 = seg("[fd00::1]:1234", "[fd00::2]:80", "GET / HTTP/1.1\r\n\r\n")
	ip4  = rt.IPPacket(&seg4, 7)
	ip6  = rt.IPPacket(&seg6, 0)
	// udp4 is ip4 relabelled as UDP (protocol 17); checksums do not matter.
	udp4 = func() []byte { b := bytes.Clone(ip4); b[9] = 17; return b }()
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
func u16(v uint16) []byte        { return binary.BigEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte       { return binary.LittleEndian.AppendUint32(nil, v) }
func be32(v uint32) []byte       { return binary.BigEndian.AppendUint32(nil, v) }

var macs = bytes.Repeat([]byte{2}, 12)

// ipv6WithExt inserts hop-by-hop and destination options headers (8 bytes
// each) in front of TCP.
func ipv6WithExt(ip []byte) []byte {
	b := bytes.Clone(ip[:40])
	b[6] = 0 // hop-by-hop
	binary.BigEndian.PutUint16(b[4:], binary.BigEndian.Uint16(ip[4:])+16)
	hbh := []byte{60, 0, 1, 4, 0, 0, 0, 0} // next: dest opts; PadN
	dst := []byte{6, 0, 1, 4, 0, 0, 0, 0}  // next: TCP
	return cat(b, hbh, dst, ip[40:])
}

// ipv6Atomic inserts an atomic fragment header (offset 0, M=0).
func ipv6Atomic(ip []byte) []byte {
	b := bytes.Clone(ip[:40])
	b[6] = 44
	binary.BigEndian.PutUint16(b[4:], binary.BigEndian.Uint16(ip[4:])+8)
	return cat(b, []byte{6, 0, 0, 0, 0, 0, 0, 9}, ip[40:])
}

func ipv6Next(ip []byte, nh byte) []byte { b := bytes.Clone(ip); b[6] = nh; return b }

func nflogFrame(order binary.ByteOrder, family byte, ip []byte) []byte {
	tlv := func(typ uint16, v []byte) []byte {
		h := make([]byte, 4)
		order.PutUint16(h, uint16(4+len(v)))
		order.PutUint16(h[2:], typ)
		b := cat(h, v)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	return cat([]byte{family, 0, 0, 0}, tlv(1, []byte{0x08, 0x00, 3, 0}), tlv(10, []byte("prefix\x00")), tlv(9, ip))
}

// TestDecodeLinkTypes covers the link layers and IP variants one frame at a
// time.
func TestDecodeLinkTypes(t *testing.T) {
	tests := []struct {
		name string
		lt   layers.LinkType
		data []byte
		want capture.Kind
		v6   bool
	}{
		{"ethernet", 1, cat(macs, u16(0x0800), ip4), capture.KindTCP, false},
		{"ethernet ipv6", 1, cat(macs, u16(0x86dd), ip6), capture.KindTCP, true},
		{"vlan", 1, cat(macs, u16(0x8100), u16(5), u16(0x0800), ip4), capture.KindTCP, false},
		{"qinq 88a8", 1, cat(macs, u16(0x88a8), u16(5), u16(0x8100), u16(6), u16(0x86dd), ip6), capture.KindTCP, true},
		{"qinq 9100", 1, cat(macs, u16(0x9100), u16(5), u16(0x8100), u16(6), u16(0x0800), ip4), capture.KindTCP, false},
		{"802.3 llc snap", 1, cat(macs, u16(uint16(8+len(ip4))), []byte{0xaa, 0xaa, 3, 0, 0, 0}, u16(0x0800), ip4), capture.KindTCP, false},
		{"802.3 llc stp", 1, cat(macs, u16(38), []byte{0x42, 0x42, 3}, make([]byte, 35)), capture.KindNotTCP, false},
		{"arp", 1, cat(macs, u16(0x0806), make([]byte, 28)), capture.KindNotTCP, false},
		{"mpls", 1, cat(macs, u16(0x8847), []byte{0, 1, 0, 64, 0, 2, 1, 64}, ip4), capture.KindTCP, false},
		{"mpls pseudowire", 1, cat(macs, u16(0x8847), []byte{0, 1, 1, 64}, macs, u16(0x0800), ip4), capture.KindNotTCP, false},
		{"pppoe", 1, cat(macs, u16(0x8864), []byte{0x11, 0, 0, 1}, u16(uint16(2+len(ip6))), u16(0x0057), ip6), capture.KindTCP, true},
		{"udp", 1, cat(macs, u16(0x0800), udp4), capture.KindNotTCP, false},
		{"sll", 113, cat(make([]byte, 14), u16(0x0800), ip4), capture.KindTCP, false},
		{"sll vlan", 113, cat(make([]byte, 14), u16(0x8100), u16(7), u16(0x86dd), ip6), capture.KindTCP, true},
		{"sll arp", 113, cat(make([]byte, 14), u16(0x0806), make([]byte, 28)), capture.KindNotTCP, false},
		{"sll2", 276, cat(u16(0x86dd), make([]byte, 18), ip6), capture.KindTCP, true},
		{"raw 101 v4", 101, ip4, capture.KindTCP, false},
		{"raw 101 v6", 101, ip6, capture.KindTCP, true},
		{"raw 12", 12, ip6, capture.KindTCP, true},
		{"raw 14", 14, ip4, capture.KindTCP, false},
		{"ipv4 228", 228, ip4, capture.KindTCP, false},
		{"ipv6 229", 229, ip6, capture.KindTCP, true},
		{"null le af2", 0, cat(le32(2), ip4), capture.KindTCP, false},
		{"null be af2", 0, cat(be32(2), ip4), capture.KindTCP, false},
		{"null af10 linux", 0, cat(le32(10), ip6), capture.KindTCP, true},
		{"null af24 netbsd", 0, cat(le32(24), ip6), capture.KindTCP, true},
		{"null af28 freebsd", 0, cat(be32(28), ip6), capture.KindTCP, true},
		{"null af30 darwin", 0, cat(le32(30), ip6), capture.KindTCP, true},
		{"null af7 other", 0, cat(le32(7), ip4), capture.KindNotTCP, false},
		{"loop be af24", 108, cat(be32(24), ip6), capture.KindTCP, true},
		{"ppp", 9, cat([]byte{0xff, 3}, u16(0x0021), ip4), capture.KindTCP, false},
		{"ppp compressed", 9, cat([]byte{0x21}, ip4), capture.KindTCP, false},
		{"ppp lcp", 9, cat([]byte{0xff, 3}, u16(0xc021), make([]byte, 8)), capture.KindNotTCP, false},
		{"ppp hdlc", 50, cat([]byte{0xff, 3}, u16(0x0057), ip6), capture.KindTCP, true},
		{"ppp ether", 51, cat([]byte{0x11, 0, 0, 1, 0, 0}, u16(0x0021), ip4), capture.KindTCP, false},
		{"cisco hdlc", 104, cat([]byte{0x0f, 0}, u16(0x0800), ip4), capture.KindTCP, false},
		{"nflog le", 239, nflogFrame(binary.LittleEndian, 2, ip4), capture.KindTCP, false},
		{"nflog be v6", 239, nflogFrame(binary.BigEndian, 10, ip6), capture.KindTCP, true},
		{"nflog no payload", 239, []byte{2, 0, 0, 0, 8, 0, 1, 0, 8, 0, 0, 0}, capture.KindNotTCP, false},
		{"mpacket express", 274, cat(bytes.Repeat([]byte{0x55}, 7), []byte{0xd5}, macs, u16(0x0800), ip4, make([]byte, 4)), capture.KindTCP, false},
		{"mpacket start", 274, cat(bytes.Repeat([]byte{0x55}, 7), []byte{0xe6}, macs, u16(0x0800), ip4), capture.KindTCP, false},
		{"mpacket continuation", 274, cat(bytes.Repeat([]byte{0x55}, 6), []byte{0x61, 0x52}, make([]byte, 40)), capture.KindNotTCP, false},
		{"ipv6 extension headers", 101, ipv6WithExt(ip6), capture.KindTCP, true},
		{"ipv6 atomic fragment", 101, ipv6Atomic(ip6), capture.KindTCP, true},
		{"ipv6 esp", 101, ipv6Next(ip6, 50), capture.KindNotTCP, true},
		{"ipv6 no next header", 101, ipv6Next(ip6, 59), capture.KindNotTCP, true},
		{"ipv6 icmp", 101, ipv6Next(ip6, 58), capture.KindNotTCP, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := capture.NewDecoder()
			var p capture.Packet
			f := capture.Frame{N: 3, Time: t0, LinkType: tc.lt, Data: tc.data, Len: len(tc.data)}
			kind, err := d.Decode(&f, &p)
			if err != nil || kind != tc.want {
				t.Fatalf("Decode = %v, %v; want %v", kind, err, tc.want)
			}
			if kind != capture.KindTCP {
				return
			}
			want := seg4
			if tc.v6 {
				want = seg6
			}
			want.N = 3
			if err := samePackets([]capture.Packet{want}, []capture.Packet{p}, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecodeUnsupportedLinkType(t *testing.T) {
	d := capture.NewDecoder()
	var p capture.Packet
	f := capture.Frame{N: 1, LinkType: 105, Data: ip4, Len: len(ip4)}
	kind, err := d.Decode(&f, &p)
	if kind != capture.KindUnsupported {
		t.Fatalf("kind %v", kind)
	}
	wantKind(t, err, capture.ErrUnsupportedLinkType, "unsupported link type 105 (IEEE802_11)")
	var lte *capture.LinkTypeError
	if !errors.As(err, &lte) || lte.LinkType != 105 {
		t.Fatalf("error %v is not a *LinkTypeError for 105", err)
	}
	if capture.SupportedLinkType(105) || !capture.SupportedLinkType(276) {
		t.Error("SupportedLinkType disagrees with the decoder")
	}
}

// TestDecodeMalformed: frames whose headers contradict themselves are
// malformed, with a message that says what was wrong; frames cut by the
// snap length inside a header are truncated instead.
func TestDecodeMalformed(t *testing.T) {
	mod := func(b []byte, off int, v byte) []byte { c := bytes.Clone(b); c[off] = v; return c }
	tests := []struct {
		name string
		lt   layers.LinkType
		data []byte
		len  int // wire length; 0 = len(data)
		want capture.Kind
		msg  string
	}{
		{"short ethernet", 1, macs[:10], 0, capture.KindMalformed, "ethernet header: 10 bytes, need 14: malformed packet"},
		{"short ethernet cut", 1, macs[:10], 60, capture.KindTruncated, ""},
		{"ipv4 header length", 101, mod(ip4, 0, 0x44), 0, capture.KindMalformed, "ipv4 header: header length 16 < 20"},
		{"ipv4 total length", 101, mod(mod(ip4, 2, 0), 3, 10), 0, capture.KindMalformed, "ipv4 header: total length 10 < header length 20"},
		{"ipv4 version in 228", 228, ip6, 0, capture.KindMalformed, "ipv4 header: version 6"},
		{"raw version", 101, mod(ip4, 0, 0x55), 0, capture.KindMalformed, "raw ip: version 5"},
		{"short ipv6", 101, ip6[:30], 0, capture.KindMalformed, "ipv6 header: 30 bytes, need 40"},
		{"tcp data offset", 101, mod(ip4, 20+12, 0x40), 0, capture.KindMalformed, "tcp header: data offset 4 < 5"},
		{"tcp data offset past segment", 101, mod(ip4, 20+12, 0xf0), 0, capture.KindMalformed, "tcp header: data offset 60 bytes > 38-byte segment"},
		{"short tcp", 101, cat(mod(mod(ip4[:20], 2, 0), 3, 30), ip4[20:30]), 0, capture.KindMalformed, "tcp header: 10 bytes, need 20"},
		{"tcp header cut by snaplen", 101, ip4[:30], len(ip4), capture.KindTruncated, ""},
		{"ipv6 ext header cut", 101, ipv6WithExt(ip6)[:44], len(ipv6WithExt(ip6)), capture.KindTruncated, ""},
		{"nflog bad tlv", 239, []byte{2, 0, 0, 0, 2, 0, 9, 0}, 0, capture.KindMalformed, "nflog tlv: length 2 < 4"},
		{"vlan loop", 1, cat(macs, bytes.Repeat(cat(u16(0x8100), u16(1)), 9), u16(0x8100), make([]byte, 40)), 0, capture.KindMalformed, "more than 8 nested link headers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := capture.NewDecoder()
			var p capture.Packet
			l := tc.len
			if l == 0 {
				l = len(tc.data)
			}
			f := capture.Frame{N: 1, LinkType: tc.lt, Data: tc.data, Len: l}
			kind, err := d.Decode(&f, &p)
			if kind != tc.want {
				t.Fatalf("Decode = %v, %v; want %v", kind, err, tc.want)
			}
			if tc.want == capture.KindMalformed {
				wantKind(t, err, capture.ErrMalformed, "")
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q does not say %q", err, tc.msg)
				}
			} else if err != nil {
				t.Errorf("unexpected error %v", err)
			}
		})
	}
}

// TestDecodeLengths: link padding is dropped using the IP length, and bytes
// the IP header announces beyond the capture are reported as Missing.
func TestDecodeLengths(t *testing.T) {
	syn := capture.Packet{Src: seg4.Src, Dst: seg4.Dst, Seq: 5, Flags: capture.SYN, Window: 1}
	synIP := rt.IPPacket(&syn, 1) // 44 bytes: padded to the Ethernet minimum
	padded := cat(macs, u16(0x0800), synIP, bytes.Repeat([]byte{0xee}, 60-14-len(synIP)), []byte{1, 2, 3, 4})
	big := seg("10.0.0.1:1", "10.0.0.2:2", strings.Repeat("x", 1000))
	bigIP := rt.IPPacket(&big, 1)
	big6 := seg("[fd00::1]:1", "[fd00::2]:2", strings.Repeat("y", 1000))
	big6IP := rt.IPPacket(&big6, 1)
	tsoIP := bytes.Clone(bigIP)
	tsoIP[2], tsoIP[3] = 0, 0 // total length left to the NIC

	tests := []struct {
		name        string
		data        []byte
		wireLen     int
		payload     int
		missing     int
		wantPayload byte
	}{
		{"ethernet padding and fcs", padded, len(padded), 0, 0, 0},
		{"snaplen cut ipv4", cat(macs, u16(0x0800), bigIP[:200]), 14 + len(bigIP), 200 - 40, 1000 - 160, 'x'},
		{"snaplen cut ipv6", cat(macs, u16(0x86dd), big6IP[:200]), 14 + len(big6IP), 200 - 60, 1000 - 140, 'y'},
		// Some tools write the cut length as the wire length too: the IP
		// header still tells.
		{"cut with equal lengths", cat(macs, u16(0x0800), bigIP[:200]), 214, 160, 840, 'x'},
		{"tcp options cut", cat(macs, u16(0x0800), rt.IPPacket(&syn, 1)[:42]), 14 + 44, 0, 0, 0},
		{"tso zero length", cat(macs, u16(0x0800), tsoIP), 14 + len(tsoIP), 1000, 0, 'x'},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := capture.NewDecoder()
			var p capture.Packet
			f := capture.Frame{N: 1, LinkType: 1, Data: tc.data, Len: tc.wireLen}
			kind, err := d.Decode(&f, &p)
			if kind != capture.KindTCP || err != nil {
				t.Fatalf("Decode = %v, %v", kind, err)
			}
			if len(p.Payload) != tc.payload || p.Missing != tc.missing {
				t.Fatalf("payload %d missing %d, want %d %d", len(p.Payload), p.Missing, tc.payload, tc.missing)
			}
			if len(p.Payload) > 0 && (p.Payload[0] != tc.wantPayload || p.Payload[len(p.Payload)-1] != tc.wantPayload) {
				t.Fatalf("payload %q...", p.Payload[:8])
			}
		})
	}
}

// TestReaderCountsAndSkips: malformed and non-TCP frames inside an intact
// file are counted and skipped; the first malformed one is kept as an
// example naming its frame.
func TestReaderCountsAndSkips(t *testing.T) {
	bad := bytes.Clone(ip4)
	bad[20+12] = 0x40
	frames := []capture.Frame{
		{Time: t0, Data: ip4},
		{Time: t0.Add(time.Second), Data: bad},
		{Time: t0.Add(2 * time.Second), Data: udp4},
		{Time: t0.Add(3 * time.Second), Data: bad[:25], Len: 30},
		{Time: t0.Add(4 * time.Second), Data: ip6},
		{Time: t0.Add(5 * time.Second), Data: bad},
	}
	for i := range frames {
		frames[i].Len = max(frames[i].Len, len(frames[i].Data))
	}
	got, st, err := readAll(t, rt.Pcap(rt.PcapOptions{LinkType: rt.LinkRaw, Nano: true}, frames), "mixed.pcap")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].N != 1 || got[1].N != 5 {
		t.Fatalf("got %d packets %+v", len(got), got)
	}
	want := capture.Stats{Frames: 6, TCP: 2, NonTCP: 1, Malformed: 2, Truncated: 1, TruncatedHeaders: 1}
	if st.Frames != want.Frames || st.TCP != want.TCP || st.NonTCP != want.NonTCP || st.Malformed != want.Malformed ||
		st.Truncated != want.Truncated || st.TruncatedHeaders != want.TruncatedHeaders {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	wantKind(t, st.FirstMalformed, capture.ErrMalformed, `read "mixed.pcap": frame 2: tcp header: data offset 4 < 5: malformed packet`)
	if !st.First.Equal(t0) || !st.Last.Equal(t0.Add(5*time.Second)) {
		t.Errorf("first/last %v %v", st.First, st.Last)
	}
	if st.Bytes != int64(2*len(ip4)+2*len(bad)+25+len(ip6)) {
		t.Errorf("bytes %d", st.Bytes)
	}
}

// TestDecodeNoAllocs: the per-frame path allocates nothing.
func TestDecodeNoAllocs(t *testing.T) {
	frames, err := rt.SmallHTTP("10.0.0.1:1000", "10.0.0.2:80").Frames(rt.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	d := capture.NewDecoder()
	var p capture.Packet
	allocs := testing.AllocsPerRun(100, func() {
		for i := range frames {
			if k, err := d.Decode(&frames[i], &p); k != capture.KindTCP || err != nil {
				t.Fatal(k, err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per %d frames, want 0", allocs, len(frames))
	}
}
