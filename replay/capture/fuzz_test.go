package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// FuzzReader feeds arbitrary bytes to NewSource and the Reader and checks
// invariants: no panic, termination, every frame accounted for, plausible
// packets, and errors that are one line and carry a sentinel.
func FuzzReader(f *testing.F) {
	for _, g := range rt.GeneratedCaptures() {
		if len(g.Data) < 64<<10 {
			f.Add(g.Data)
		}
	}
	// Small real captures covering the formats and link types, when
	// ../shared/pcaps/real is present.
	for _, name := range []string{
		"zeek/http/get.pcap", "zeek/http-qinq-0.pcap", "zeek/snap-tcp.pcap", "zeek/nflog-http.pcap",
		"zeek/redis/start-with-server.pcapng", "zeek/ipv4/fragmented-4.pcap",
		"suricata-verify/defrag-ipv6-tcp/frag-ip-tcp.pcap", "suricata-verify/decode-sll2-01/input.pcap",
		"tcpdump/tcp-handshake-nano.pcap", "pcapplusplus/nanosecs_big_endian.pcap", "deepflow/nats/nats-nrpc1.pcap",
		"gopacket/be/test202.pcapng", "libpcap/shb-option-too-long.pcapng", "zeek/tcp/truncated-header.pcap",
		"zeek/ipv6-http-atomic-frag.pcap", "pcapplusplus/many_interfaces-1.pcapng",
	} {
		if b, err := os.ReadFile(filepath.Join(realDir, name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("\x0a\x0d\x0d\x0a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := capture.NewSource(bytes.NewReader(data), "fuzz")
		if err != nil {
			checkErr(t, err, capture.ErrNotCapture, capture.ErrDamaged, capture.ErrTruncated)
			return
		}
		r := capture.NewReader(src, "fuzz")
		defer r.Close()
		compressed := len(data) > 0 && (data[0] == 0x1f || data[0] == 0x28)
		var n int64
		lastN := 0
		unsupported := false
		for {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				checkErr(t, err, capture.ErrDamaged, capture.ErrUnsupportedLinkType)
				unsupported = errors.Is(err, capture.ErrUnsupportedLinkType)
				var ce *capture.Error
				if !errors.As(err, &ce) || ce.Name != "fuzz" || ce.Frame < 1 {
					t.Fatalf("error %v does not name the capture and frame", err)
				}
				if _, err2 := r.Next(); err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				break
			}
			n++
			if !p.Src.Addr().IsValid() || !p.Dst.Addr().IsValid() || p.Src.Addr().Is4() != p.Dst.Addr().Is4() {
				t.Fatalf("packet %d: addresses %v > %v", p.N, p.Src, p.Dst)
			}
			if p.Missing < 0 || !compressed && len(p.Payload) > len(data) || p.Flags&^0x3f != 0 {
				t.Fatalf("packet %d: payload %d missing %d flags %#x", p.N, len(p.Payload), p.Missing, p.Flags)
			}
			if p.N < lastN || p.N < 1 {
				t.Fatalf("frame numbers go %d then %d", lastN, p.N)
			}
			lastN = p.N
			if !compressed && n > int64(len(data)) {
				t.Fatalf("%d packets from %d bytes", n, len(data))
			}
		}
		st := r.Stats()
		if st.TCP != n {
			t.Fatalf("stats say %d tcp, Next returned %d", st.TCP, n)
		}
		// Every frame read is accounted for, except a last one with an
		// unsupported link type, which stops the reader.
		acc := st.TCP + st.NonTCP + st.Frag.Fragments - st.Frag.Reassembled + st.TruncatedHeaders + st.Malformed
		if unsupported {
			acc++
		}
		if acc != st.Frames {
			t.Fatalf("frames %d, accounted %d (%+v)", st.Frames, acc, st)
		}
		// Uncompressed, the captured bytes come from the input.
		if !compressed && st.Bytes > int64(len(data)) {
			t.Fatalf("%d captured bytes from %d input bytes", st.Bytes, len(data))
		}
		var sum int64
		for _, lt := range st.LinkTypes {
			sum += lt.Frames
		}
		if sum != st.Frames {
			t.Fatalf("link type counts add to %d, frames %d", sum, st.Frames)
		}
		if st.Malformed > 0 {
			checkErr(t, st.FirstMalformed, capture.ErrMalformed)
		}
		if st.Warning != nil {
			checkErr(t, st.Warning, capture.ErrTruncated)
		}
	})
}

func checkErr(t *testing.T, err error, kinds ...error) {
	t.Helper()
	ok := false
	for _, k := range kinds {
		ok = ok || errors.Is(err, k)
	}
	if !ok {
		t.Fatalf("error %q matches none of %v", err, kinds)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

// FuzzDecode feeds arbitrary frames of every supported link type to one
// Decoder (so fragment state carries over between inputs of a run) and
// checks that segments come from the frame's bytes or a reassembly.
func FuzzDecode(f *testing.F) {
	for _, g := range []struct {
		lt   uint16
		data []byte
	}{{1, cat(macs, u16(0x0800), ip4)}, {101, ip6}, {101, ipv6WithExt(ip6)}, {239, nflogFrame(binary.LittleEndian, 2, ip4)},
		{0, cat(le32(30), ip6)}, {274, cat(bytes.Repeat([]byte{0x55}, 7), []byte{0xd5}, macs, u16(0x0800), ip4)}} {
		f.Add(g.lt, g.data, uint16(0))
	}
	for _, fr := range rt.FragmentIPv4(rt.IPPacket(&seg4, 9), 8) {
		f.Add(uint16(228), fr, uint16(0))
	}
	d := capture.NewDecoder()
	f.Fuzz(func(t *testing.T, lt uint16, data []byte, extra uint16) {
		var p capture.Packet
		fr := capture.Frame{N: 1, Time: t0, LinkType: layers.LinkType(lt), Data: data, Len: len(data) + int(extra)}
		kind, err := d.Decode(&fr, &p)
		switch kind {
		case capture.KindTCP:
			if err != nil || p.Missing < 0 || len(p.Payload) > 65535 || !p.Src.IsValid() {
				t.Fatalf("tcp with err %v, missing %d, payload %d, src %v", err, p.Missing, len(p.Payload), p.Src)
			}
		case capture.KindMalformed:
			checkErr(t, err, capture.ErrMalformed)
		case capture.KindUnsupported:
			checkErr(t, err, capture.ErrUnsupportedLinkType)
			if capture.SupportedLinkType(layers.LinkType(lt)) {
				t.Fatalf("link type %d is supported but Decode says %v", lt, err)
			}
		default:
			if err != nil {
				t.Fatalf("%v with error %v", kind, err)
			}
		}
	})
}
