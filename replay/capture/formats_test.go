package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// format writes frames of one link type into a capture file.
type format struct {
	name string
	prec time.Duration // timestamp resolution
	// ngLinkTypes: for pcapng, each frame goes to an interface of its own
	// link type; pcap has one link type.
	write func(lt layers.LinkType, frames []capture.Frame) []byte
}

func pcapFormat(name string, opt rt.PcapOptions, prec time.Duration) format {
	return format{name: name, prec: prec, write: func(lt layers.LinkType, frames []capture.Frame) []byte {
		opt.LinkType = lt
		return rt.Pcap(opt, frames)
	}}
}

func pcapngFormat(name string, bigEndian bool, tsresol uint8, prec time.Duration) format {
	return format{name: name, prec: prec, write: func(lt layers.LinkType, frames []capture.Frame) []byte {
		var b bytes.Buffer
		nw, err := rt.NewPcapngWriter(&b, bigEndian)
		if err != nil {
			panic(err)
		}
		// A decoy interface first, so that frame interface ids are not 0.
		nw.AddInterface(rt.LinkEthernet, 0, 6)
		id, _ := nw.AddInterface(lt, 0, tsresol)
		for _, f := range frames {
			if err := nw.WriteFrame(id, f); err != nil {
				panic(err)
			}
		}
		return b.Bytes()
	}}
}

var formats = []format{
	pcapFormat("pcap-us-le", rt.PcapOptions{}, time.Microsecond),
	pcapFormat("pcap-us-be", rt.PcapOptions{BigEndian: true}, time.Microsecond),
	pcapFormat("pcap-ns-le", rt.PcapOptions{Nano: true}, 0),
	pcapFormat("pcap-ns-be", rt.PcapOptions{Nano: true, BigEndian: true}, 0),
	pcapFormat("modified-pcap", rt.PcapOptions{Modified: true}, time.Microsecond),
	pcapFormat("modified-pcap-be", rt.PcapOptions{Modified: true, BigEndian: true}, time.Microsecond),
	pcapngFormat("pcapng-le-us", false, 6, time.Microsecond),
	pcapngFormat("pcapng-be-ns", true, 9, 0),
	pcapngFormat("pcapng-le-2^-20", false, 0x80|20, time.Microsecond),
	pcapngFormat("pcapng-le-ms", false, 3, time.Millisecond),
	{name: "gzip-pcap", prec: time.Microsecond, write: func(lt layers.LinkType, f []capture.Frame) []byte {
		return rt.Gzip(rt.Pcap(rt.PcapOptions{LinkType: lt}, f))
	}},
	{name: "zstd-pcapng", prec: 0, write: func(lt layers.LinkType, f []capture.Frame) []byte {
		return rt.Zstd(pcapngFormat("", false, 9, 0).write(lt, f))
	}},
	{name: "gzip-pcapng-be", prec: 0, write: func(lt layers.LinkType, f []capture.Frame) []byte {
		return rt.Gzip(pcapngFormat("", true, 9, 0).write(lt, f))
	}},
}

// TestRoundTrip writes the same conversation (IPv4 and IPv6) in every
// supported link type and container format and checks that the reader gives
// back exactly the packets the builder made.
func TestRoundTrip(t *testing.T) {
	linkTypes := []layers.LinkType{rt.LinkEthernet, rt.LinkSLL, rt.LinkSLL2, rt.LinkRaw, rt.LinkRaw12,
		rt.LinkRaw14, rt.LinkIPv4, rt.LinkIPv6, rt.LinkNull, rt.LinkLoop}
	convs := map[string][]capture.Packet{
		"ipv4": rt.SmallHTTP("192.0.2.1:40000", "198.51.100.7:80").Packets(),
		"ipv6": rt.SmallHTTP("[2001:db8:1::1]:40000", "[2001:db8:2::7]:443").Packets(),
	}
	for _, lt := range linkTypes {
		for fam, pkts := range convs {
			if lt == rt.LinkIPv4 && fam == "ipv6" || lt == rt.LinkIPv6 && fam == "ipv4" {
				continue
			}
			frames, err := rt.Frames(lt, pkts)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range formats {
				t.Run(capture.LinkTypeName(lt)+"/"+fam+"/"+f.name, func(t *testing.T) {
					got, st, err := readAll(t, f.write(lt, frames), "rt")
					if err != nil {
						t.Fatal(err)
					}
					if err := samePackets(pkts, got, f.prec); err != nil {
						t.Fatal(err)
					}
					if st.Frames != int64(len(pkts)) || st.TCP != int64(len(pkts)) || st.NonTCP+st.Malformed+st.Truncated != 0 {
						t.Errorf("stats %+v", st)
					}
					if len(st.LinkTypes) != 1 || st.LinkTypes[0].LinkType != lt || st.LinkTypes[0].Frames != int64(len(pkts)) {
						t.Errorf("link types %+v, want %d frames of %d", st.LinkTypes, len(pkts), lt)
					}
					if !st.First.Equal(got[0].Time) || !st.Last.Equal(got[len(got)-1].Time) {
						t.Errorf("first/last %v/%v, want %v/%v", st.First, st.Last, got[0].Time, got[len(got)-1].Time)
					}
				})
			}
		}
	}
}

// TestGeneratedTestdata reads every generated file in testdata/ and checks
// its segment count, and its content where the generator's packets are known.
func TestGeneratedTestdata(t *testing.T) {
	v4 := rt.SmallHTTP("192.168.1.20:51000", "192.168.1.1:80").Packets()
	v6 := rt.SmallHTTP("[2001:db8::20]:51001", "[2001:db8::1]:80").Packets()
	for _, g := range rt.GeneratedCaptures() {
		t.Run(g.Path, func(t *testing.T) {
			path := filepath.Join("../../testdata", filepath.FromSlash(g.Path))
			src, err := capture.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			got, st, err := drain(src, path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != g.TCP || st.Malformed != 0 {
				t.Fatalf("%d segments, %d malformed; want %d, 0", len(got), st.Malformed, g.TCP)
			}
			switch g.Path {
			case "demo-http.pcap":
				if err := samePackets(rt.DemoPackets(), got, 0); err != nil {
					t.Error(err)
				}
			case "capture/sll-nano-be.pcap", "capture/sll2.pcap", "capture/modified.pcap", "capture/qinq.pcap", "capture/http.pcap.gz":
				if err := samePackets(v4, got, time.Microsecond); err != nil {
					t.Error(err)
				}
			case "capture/null-ipv6.pcap":
				if err := samePackets(v6, got, time.Microsecond); err != nil {
					t.Error(err)
				}
			case "capture/multi-section.pcapng", "capture/multi-section.pcapng.zst":
				if err := samePackets(append(append([]capture.Packet(nil), v4...), renumber(v6, len(v4))...), got, time.Microsecond); err != nil {
					t.Error(err)
				}
				want := []capture.LinkTypeCount{{LinkType: 0, Frames: 5}, {LinkType: 1, Frames: 5}, {LinkType: 101, Frames: 5}, {LinkType: 276, Frames: 5}}
				if len(st.LinkTypes) != len(want) {
					t.Fatalf("link types %+v, want %+v", st.LinkTypes, want)
				}
				for i := range want {
					if st.LinkTypes[i] != want[i] {
						t.Errorf("link types %+v, want %+v", st.LinkTypes, want)
					}
				}
			case "capture/fragments-raw.pcap":
				// Frame numbers and times are those of the completing
				// fragment; compare the rest.
				want := append(append([]capture.Packet(nil), v4...), v6...)
				for i := range got {
					got[i].N, got[i].Time = want[i].N, want[i].Time
				}
				if err := samePackets(want, got, 0); err != nil {
					t.Error(err)
				}
				// IPv4: the 620- and 446-byte segments make 3+2 fragments;
				// the request fits in one unfragmented packet. IPv6: the
				// 620-byte segment makes 2 fragments; the shorter ones
				// are atomic fragments (offset 0, no more), not counted.
				if st.Frag.Reassembled != 3 || st.Frag.Dropped != 0 || st.Frag.Fragments != 7 {
					t.Errorf("fragment stats %+v, want 7 fragments making 3 datagrams", st.Frag)
				}
			case "capture/snaplen-80.pcap":
				want := append([]capture.Packet(nil), v4...)
				cut := 0
				for i := range want {
					// 80 bytes = 14 Ethernet + 20 IP + 20 TCP + 26 payload.
					if n := len(want[i].Payload); n > 26 {
						want[i].Missing = n - 26
						want[i].Payload = want[i].Payload[:26]
						cut++
					}
				}
				if err := samePackets(want, got, time.Microsecond); err != nil {
					t.Error(err)
				}
				if st.Truncated != int64(cut) || st.TruncatedHeaders != 0 {
					t.Errorf("truncated %d/%d, want %d/0", st.Truncated, st.TruncatedHeaders, cut)
				}
			case "capture/truncated-tail.pcap":
				wantKind(t, st.Warning, capture.ErrTruncated, `read "`+path+`": frame 10: file ends 10 bytes into`)
				if err := samePackets(v4[:9], got, time.Microsecond); err != nil {
					t.Error(err)
				}
			default:
				t.Errorf("no content check for %s", g.Path)
			}
			if g.Path != "capture/truncated-tail.pcap" && st.Warning != nil {
				t.Errorf("warning %v", st.Warning)
			}
		})
	}
}

func renumber(pkts []capture.Packet, base int) []capture.Packet {
	out := append([]capture.Packet(nil), pkts...)
	for i := range out {
		out[i].N += base
	}
	return out
}

// TestOpenErrors checks that Open reports a missing file as the os error.
func TestOpenMissingFile(t *testing.T) {
	_, err := capture.Open(filepath.Join(t.TempDir(), "nope.pcap"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

// TestPcapngBlocks: simple and obsolete packet blocks, if_tsoffset, and
// blocks without frames (statistics, custom, unknown) that must be skipped.
func TestPcapngBlocks(t *testing.T) {
	pkts := rt.SmallHTTP("10.9.0.1:3000", "10.9.0.2:80").Packets()[:3]
	for i := range pkts {
		pkts[i].Time = pkts[i].Time.Truncate(time.Microsecond)
	}
	frames, _ := rt.Frames(rt.LinkRaw, pkts)
	le := binary.LittleEndian
	var b bytes.Buffer
	nw, _ := rt.NewPcapngWriter(&b, false)
	// Interface 0 with if_tsoffset = 1000 s: built by hand.
	idb := []byte{101, 0, 0, 0, 0, 0, 0, 0}
	idb = append(idb, 14, 0, 8, 0)
	idb = le.AppendUint64(idb, 1000)
	idb = append(idb, 0, 0, 0, 0)
	nw.WriteBlock(1, idb)
	// Simple packet block (no timestamp, interface 0) between two
	// timestamped ones.
	writeEPB := func(f capture.Frame) {
		ts := uint64(f.Time.UnixMicro()) - 1000e6
		epb := le.AppendUint32(nil, 0)
		epb = le.AppendUint32(epb, uint32(ts>>32))
		epb = le.AppendUint32(epb, uint32(ts))
		epb = le.AppendUint32(epb, uint32(len(f.Data)))
		epb = le.AppendUint32(epb, uint32(len(f.Data)))
		nw.WriteBlock(6, append(epb, f.Data...))
	}
	writeEPB(frames[0])
	spb := le.AppendUint32(nil, uint32(len(frames[1].Data)))
	nw.WriteBlock(3, append(spb, frames[1].Data...))
	nw.WriteBlock(5, make([]byte, 12))                     // interface statistics
	nw.WriteBlock(0x40000BAD, []byte{1, 2, 3, 4, 5, 6, 7}) // custom block
	nw.WriteBlock(0x0000FEED, nil)                         // unknown
	// Obsolete packet block (type 2): 16-bit interface id, drops count.
	ts := uint64(frames[2].Time.UnixMicro()) - 1000e6
	opb := le.AppendUint16(nil, 0)
	opb = le.AppendUint16(opb, 0)
	opb = le.AppendUint32(opb, uint32(ts>>32))
	opb = le.AppendUint32(opb, uint32(ts))
	opb = le.AppendUint32(opb, uint32(len(frames[2].Data)))
	opb = le.AppendUint32(opb, uint32(len(frames[2].Data)))
	nw.WriteBlock(2, append(opb, frames[2].Data...))

	got, st, err := readAll(t, b.Bytes(), "blocks.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || st.Frames != 3 {
		t.Fatalf("%d packets from %d frames", len(got), st.Frames)
	}
	want := append([]capture.Packet(nil), pkts...)
	want[1].Time = pkts[0].Time // no timestamp in an SPB: the previous frame's
	if err := samePackets(want, got, time.Microsecond); err != nil {
		t.Fatal(err)
	}
}
