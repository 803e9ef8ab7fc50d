package replaytest

import (
	"bytes"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// GeneratedCapture is one file of the module's testdata/ directory that
// this package generates.
type GeneratedCapture struct {
	Path string // relative to testdata/
	Data []byte
	// TCP is the number of TCP segments a reader must decode from it (for
	// a truncated file: before the cut).
	TCP int
}

// SmallHTTP is the one-request HTTP conversation used by the format
// samples: handshake, a GET, a 2-segment response (MSS 600), client close.
// 10 packets.
func SmallHTTP(client, server string) *Conv {
	c := NewConv(client, server, time.Date(2024, 5, 2, 9, 30, 0, 123456789, time.UTC))
	c.MSS = 600
	req := DemoRequest{Method: "GET", Path: "/sample"}
	body := bytes.Repeat([]byte("0123456789abcdef"), 60)
	resp := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 960\r\n\r\n" + string(body)
	return c.Handshake().Send(req.Raw()).Wait(time.Millisecond).Reply(resp).ClientAck().Wait(5 * time.Millisecond).CloseClient()
}

func mustFrames(lt layers.LinkType, pkts []capture.Packet) []capture.Frame {
	f, err := Frames(lt, pkts)
	if err != nil {
		panic(err)
	}
	return f
}

// truncUS drops sub-microsecond precision (for microsecond formats).
func truncUS(pkts []capture.Packet) []capture.Packet {
	for i := range pkts {
		pkts[i].Time = pkts[i].Time.Truncate(time.Microsecond)
	}
	return pkts
}

// GeneratedCaptures returns the generated testdata files. testdata/README.md
// describes each.
func GeneratedCaptures() []GeneratedCapture {
	v4 := SmallHTTP("192.168.1.20:51000", "192.168.1.1:80").Packets()
	v6 := SmallHTTP("[2001:db8::20]:51001", "[2001:db8::1]:80").Packets()
	var out []GeneratedCapture
	add := func(path string, data []byte, tcp int) {
		out = append(out, GeneratedCapture{Path: path, Data: data, TCP: tcp})
	}

	add("demo-http.pcap", DemoPcap(), len(DemoPackets()))

	add("capture/sll-nano-be.pcap", Pcap(PcapOptions{LinkType: LinkSLL, Nano: true, BigEndian: true}, mustFrames(LinkSLL, v4)), len(v4))
	add("capture/sll2.pcap", Pcap(PcapOptions{LinkType: LinkSLL2}, mustFrames(LinkSLL2, v4)), len(v4))
	add("capture/null-ipv6.pcap", Pcap(PcapOptions{LinkType: LinkNull}, mustFrames(LinkNull, v6)), len(v6))
	add("capture/modified.pcap", Pcap(PcapOptions{LinkType: LinkEthernet, Modified: true}, mustFrames(LinkEthernet, v4)), len(v4))

	// QinQ: every frame with an 802.1ad outer and an 802.1Q inner tag.
	var qinq []capture.Frame
	for i := range v4 {
		d := EncapVLAN(IPPacket(&v4[i], uint16(i+1)), 100, 200)
		qinq = append(qinq, capture.Frame{N: i + 1, Time: v4[i].Time, LinkType: LinkEthernet, Data: d, Len: len(d)})
	}
	add("capture/qinq.pcap", Pcap(PcapOptions{LinkType: LinkEthernet}, qinq), len(v4))

	// Fragments: raw IP; segments with payload are split into 256-byte
	// IPv4 fragments and 512-byte IPv6 fragments, the v6 ones in reverse.
	var frag []capture.Frame
	n := 0
	addFrag := func(p *capture.Packet, ip []byte) {
		n++
		frag = append(frag, capture.Frame{N: n, Time: p.Time, LinkType: LinkRaw, Data: ip, Len: len(ip)})
	}
	for i := range v4 {
		ip := IPPacket(&v4[i], uint16(1000+i))
		if len(v4[i].Payload) == 0 {
			addFrag(&v4[i], ip)
			continue
		}
		for _, f := range FragmentIPv4(ip, 256) {
			addFrag(&v4[i], f)
		}
	}
	for i := range v6 {
		ip := IPPacket(&v6[i], 0)
		if len(v6[i].Payload) == 0 {
			addFrag(&v6[i], ip)
			continue
		}
		fs := FragmentIPv6(ip, 512, uint32(0x10000+i))
		for j := len(fs) - 1; j >= 0; j-- {
			addFrag(&v6[i], fs[j])
		}
	}
	add("capture/fragments-raw.pcap", Pcap(PcapOptions{LinkType: LinkRaw}, frag), len(v4)+len(v6))

	// Snap length 80 cuts the payload of every data segment.
	add("capture/snaplen-80.pcap", Pcap(PcapOptions{LinkType: LinkEthernet, Snaplen: 80}, mustFrames(LinkEthernet, v4)), len(v4))

	// Cut short 10 bytes into the last record's data.
	whole := Pcap(PcapOptions{LinkType: LinkEthernet}, mustFrames(LinkEthernet, v4))
	last := mustFrames(LinkEthernet, v4[len(v4)-1:])[0]
	add("capture/truncated-tail.pcap", whole[:len(whole)-len(last.Data)+10], len(v4)-1)

	// pcapng: section 1 (little-endian) with Ethernet µs and raw ns
	// interfaces, the v4 conversation alternating between them, then a
	// name-resolution block; section 2 (big-endian) with SLL2 at 2^-20 s
	// and NULL, the v6 conversation alternating.
	var ng bytes.Buffer
	nw, _ := NewPcapngWriter(&ng, false)
	eth, _ := nw.AddInterface(LinkEthernet, 0, 6)
	raw, _ := nw.AddInterface(LinkRaw, 0, 9)
	ethF := mustFrames(LinkEthernet, truncUS(SmallHTTP("192.168.1.20:51000", "192.168.1.1:80").Packets()))
	rawF := mustFrames(LinkRaw, v4)
	for i := range v4 {
		if i%2 == 0 {
			nw.WriteFrame(eth, ethF[i])
		} else {
			nw.WriteFrame(raw, rawF[i])
		}
	}
	nw.WriteBlock(4, []byte{0, 0, 0, 0}) // empty name resolution block
	nw.NewSection(true)
	sll2, _ := nw.AddInterface(LinkSLL2, 0, 0x80|20)
	null, _ := nw.AddInterface(LinkNull, 0, 6)
	sll2F := mustFrames(LinkSLL2, v6)
	nullF := mustFrames(LinkNull, v6)
	for i := range v6 {
		if i%2 == 0 {
			nw.WriteFrame(sll2, sll2F[i])
		} else {
			nw.WriteFrame(null, nullF[i])
		}
	}
	add("capture/multi-section.pcapng", ng.Bytes(), len(v4)+len(v6))

	add("capture/http.pcap.gz", Gzip(whole), len(v4))
	add("capture/multi-section.pcapng.zst", Zstd(ng.Bytes()), len(v4)+len(v6))
	return out
}
