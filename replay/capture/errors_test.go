package capture_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

func smallFrames(t testing.TB) []capture.Frame {
	f, err := rt.SmallHTTP("10.9.0.1:3000", "10.9.0.2:80").Frames(rt.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func smallPcap(t testing.TB) []byte {
	return rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, smallFrames(t))
}

func smallPcapng(t testing.TB) []byte {
	var b bytes.Buffer
	nw, _ := rt.NewPcapngWriter(&b, false)
	nw.AddInterface(rt.LinkEthernet, 0, 6)
	for _, f := range smallFrames(t) {
		nw.WriteFrame(0, f)
	}
	return b.Bytes()
}

// recordOffsets returns the byte offset of each record of a pcap file with
// 16-byte little-endian record headers.
func recordOffsets(b []byte) []int {
	var offs []int
	for off := 24; off+16 <= len(b); off += 16 + int(binary.LittleEndian.Uint32(b[off+8:])) {
		offs = append(offs, off)
	}
	return offs
}

func TestNotCapture(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty", nil, `open "in": empty file: not a pcap or pcapng capture`},
		{"tiny", []byte{0xd4, 0xc3}, `open "in": 2-byte file, too short for a capture header`},
		{"text", []byte("hello, this is a README\nwith two lines\n"), `open "in": text file: not a pcap`},
		{"json", []byte(`  {"packets": []}`), `open "in": text file (looks like JSON)`},
		{"tcpdump text", []byte("12:00:00.000000 IP 10.0.0.1.80 > 10.0.0.2.1234: Flags [S], seq 1\n"), `open "in": text file (looks like tcpdump's text output`},
		{"html", []byte("<!DOCTYPE html><html></html>"), `open "in": text file (looks like HTML)`},
		{"gzip of text", rt.Gzip([]byte("just some text\n")), `open "in": gzip-compressed, but not a capture inside: text file`},
		{"gzip of nothing", rt.Gzip(nil), `open "in": gzip-compressed, but empty inside`},
		{"zstd of binary", rt.Zstd([]byte{1, 2, 3, 4, 5, 6, 7, 8}), `open "in": zstd-compressed, but not a capture inside: unknown magic 0x01020304`},
		{"gzip twice", rt.Gzip(rt.Gzip(smallPcap(t))), `open "in": gzip-compressed, but not a capture inside: gzip-compressed twice`},
		{"bzip2", []byte("BZh91AY&SY\x00\x01"), `open "in": bzip2-compressed (decompress it first: bunzip2 -k)`},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), `open "in": xz-compressed`},
		{"elf", []byte("\x7fELF\x02\x01\x01\x00"), `open "in": an ELF executable`},
		{"snoop", []byte("snoop\x00\x00\x00\x00\x00\x00\x02"), `open "in": a snoop capture (convert it: editcap -F pcap in out.pcap)`},
		{"binary", []byte{0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3}, `open "in": unknown magic 0xdeadbeef`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := capture.NewSource(bytes.NewReader(tc.data), "in")
			wantKind(t, err, capture.ErrNotCapture, tc.msg)
		})
	}
	t.Run("stdin name", func(t *testing.T) {
		_, err := capture.NewSource(strings.NewReader("text"), "-")
		wantKind(t, err, capture.ErrNotCapture, "open stdin: text file")
	})
}

func TestUnsupportedLinkType(t *testing.T) {
	frames := smallFrames(t)
	data := rt.Pcap(rt.PcapOptions{LinkType: 105}, frames)
	got, _, err := readAll(t, data, "wifi.pcap")
	if len(got) != 0 {
		t.Errorf("%d packets from an unsupported link type", len(got))
	}
	wantKind(t, err, capture.ErrUnsupportedLinkType, `read "wifi.pcap": frame 1: unsupported link type 105 (IEEE802_11) (supported: 0 NULL, 1 ETHERNET`)

	// In pcapng the link type is per interface: frames before the first
	// frame on an unsupported interface are still delivered.
	var b bytes.Buffer
	nw, _ := rt.NewPcapngWriter(&b, false)
	nw.AddInterface(rt.LinkEthernet, 0, 6)
	nw.AddInterface(189, 0, 6) // USB_LINUX
	nw.WriteFrame(0, frames[0])
	nw.WriteFrame(0, frames[1])
	nw.WriteFrame(1, frames[2])
	got, _, err = readAll(t, b.Bytes(), "mixed.pcapng")
	if len(got) != 2 {
		t.Errorf("%d packets, want the 2 before the unsupported frame", len(got))
	}
	wantKind(t, err, capture.ErrUnsupportedLinkType, `read "mixed.pcapng": frame 3: unsupported link type 189 (USB_LINUX)`)
}

// TestDamaged: structural damage is a fatal error naming the frame, after
// the frames before it; the error sticks.
func TestDamaged(t *testing.T) {
	pcap := smallPcap(t)
	offs := recordOffsets(pcap)
	ng := smallPcapng(t)
	blocks := blockOffsets(ng) // SHB, IDB, then the EPBs
	shbLen, epb := blocks[1], blocks[2]
	ep := strconv.Itoa(epb)
	mod := func(b []byte, f func(c []byte)) []byte { c := bytes.Clone(b); f(c); return c }
	tests := []struct {
		name    string
		data    []byte
		packets int // delivered before the error
		msg     string
		open    bool // the error comes from Open
	}{
		{"pcap version 1", mod(pcap, func(c []byte) { c[4] = 1 }), 0, `open "f": file header: unsupported pcap version 1.4 (want 2.4): capture is damaged`, true},
		{"pcap bogus caplen", mod(pcap, func(c []byte) { binary.LittleEndian.PutUint32(c[offs[3]+8:], 0xE9FFAA0D) }), 3,
			`read "f": frame 4: record at byte ` + strconv.Itoa(offs[3]) + `: captured length 3925846541 exceeds the maximum 262144 (snap length 262144): bogus record length: capture is damaged`, false},
		{"pcapng trailer", mod(ng, func(c []byte) {
			total := int(binary.LittleEndian.Uint32(c[epb+4:]))
			binary.LittleEndian.PutUint32(c[epb+total-4:], uint32(total+4))
		}), 0,
			`read "f": frame 1: block at byte ` + ep + ` (type 0x6): length`, false},
		{"pcapng block length not aligned", mod(ng, func(c []byte) { c[epb+4]++ }), 0, `read "f": frame 1: block at byte ` + ep + ` (type 0x6): bogus block length`, false},
		{"pcapng huge block", mod(ng, func(c []byte) { binary.LittleEndian.PutUint32(c[epb+4:], 1<<30) }), 0, `bogus block length 1073741824`, false},
		{"pcapng undefined interface", mod(ng, func(c []byte) { c[epb+8] = 3 }), 0, `read "f": frame 1: packet block at byte ` + ep + `: interface 3 is not described (the section has 1)`, false},
		{"pcapng caplen overrun", mod(ng, func(c []byte) { binary.LittleEndian.PutUint32(c[epb+20:], 5000) }), 0, `enhanced packet block at byte ` + ep + `: captured length 5000 overruns`, false},
		{"pcapng option overrun", mod(ng, func(c []byte) { binary.LittleEndian.PutUint16(c[24+2:], 200) }), 0, `open "f": block at byte 0: option 4 of 200 bytes overruns the block: capture is damaged`, true},
		{"pcapng bad byte-order magic", mod(ng, func(c []byte) { c[8] = 0 }), 0, `open "f": section header at byte 0: bad byte-order magic`, true},
		{"pcapng version 2", mod(ng, func(c []byte) { c[12] = 2 }), 0, `open "f": section header at byte 0: unsupported pcapng version 2.0`, true},
		{"pcapng tsresol", mod(ng, func(c []byte) {
			// Turn the IDB's if_name option (code 2) into if_tsresol with
			// a length of 1 and value 10^-30.
			binary.LittleEndian.PutUint16(c[shbLen+16:], 9)
			binary.LittleEndian.PutUint16(c[shbLen+18:], 1)
			c[shbLen+20] = 30
		}), 0, `read "f": frame 1: interface description at byte ` + strconv.Itoa(shbLen) + `: if_tsresol 10^-30 is out of range`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := readAll(t, tc.data, "f")
			if tc.open {
				wantKind(t, err, capture.ErrDamaged, "")
			} else {
				wantKind(t, err, capture.ErrDamaged, `read "f": frame `)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if len(got) != tc.packets {
				t.Errorf("%d packets before the error, want %d", len(got), tc.packets)
			}
		})
	}

	t.Run("sticky", func(t *testing.T) {
		data := mod(pcap, func(c []byte) { binary.LittleEndian.PutUint32(c[offs[1]+8:], 1<<30) })
		src, err := capture.NewSource(bytes.NewReader(data), "f")
		if err != nil {
			t.Fatal(err)
		}
		r := capture.NewReader(src, "f")
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		_, err1 := r.Next()
		_, err2 := r.Next()
		if err1 == nil || err1 != err2 {
			t.Fatalf("errors %v then %v, want the same damage error twice", err1, err2)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})

	t.Run("zstd window too large", func(t *testing.T) {
		// A frame header claiming a 256 MiB window (descriptor 0x90).
		hostile := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x90, 0x01, 0x00, 0x00}
		_, err := capture.NewSource(bytes.NewReader(hostile), "big.zst")
		wantKind(t, err, capture.ErrDamaged, `open "big.zst": zstd-compressed data: `)
		if !strings.Contains(err.Error(), "zstd -d --long=31") {
			t.Errorf("error %q gives no hint", err)
		}
	})

	t.Run("corrupt gzip", func(t *testing.T) {
		gz := rt.Gzip(bytes.Repeat(pcap, 20))
		for i := 40; i < len(gz)-20; i += 7 {
			gz[i] ^= 0x5a
		}
		_, _, err := readAll(t, gz, "f.gz")
		wantKind(t, err, capture.ErrDamaged, "")
		if !strings.Contains(err.Error(), `"f.gz": `) || !strings.Contains(err.Error(), "flate: corrupt input") {
			t.Errorf("error %q does not name the file and the cause", err)
		}
	})
}

// blockOffsets returns the byte offset of each block of a little-endian
// pcapng file.
func blockOffsets(b []byte) []int {
	var offs []int
	for off := 0; off+12 <= len(b); off += int(binary.LittleEndian.Uint32(b[off+4:])) {
		offs = append(offs, off)
	}
	return offs
}

// bigPcap is a capture of a 400 kB transfer: compressors split it into
// several blocks.
func bigPcap(t testing.TB) []byte {
	// Incompressible, so that half of the compressed stream holds whole
	// compressed blocks.
	data := make([]byte, 400<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f, err := rt.NewConv("10.9.0.1:3000", "10.9.0.2:80", t0).Handshake().SendBytes(data).CloseClient().Frames(rt.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	return rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, f)
}

// TestTruncated: a capture cut short anywhere in its last record gives all
// complete frames, then the Source reports ErrTruncated and the Reader turns
// it into a warning and io.EOF.
func TestTruncated(t *testing.T) {
	pcap := smallPcap(t)
	offs := recordOffsets(pcap)
	last := offs[len(offs)-1]
	ng := smallPcapng(t)
	nb := blockOffsets(ng)
	lastLen := strconv.Itoa(int(binary.LittleEndian.Uint32(pcap[last+8:])))
	big := bigPcap(t)
	tests := []struct {
		name    string
		data    []byte
		packets int // -1: some
		msg     string
	}{
		{"pcap header", pcap[:10], 0, `open "f": file header: 10 of 24 bytes: capture is truncated`},
		{"record header", pcap[:last+5], len(offs) - 1, `read "f": frame 10: file ends 5 bytes into the 16-byte record header at byte ` + strconv.Itoa(last) + `: capture is truncated`},
		{"record data", pcap[:last+16+3], len(offs) - 1, `read "f": frame 10: file ends 3 bytes into the ` + lastLen + ` bytes of the record at byte ` + strconv.Itoa(last)},
		{"pcapng block", ng[:len(ng)-7], 9, `read "f": frame 10: file ends`},
		{"pcapng block header", ng[:nb[len(nb)-1]+2], 9, `read "f": frame 10: file ends 2 bytes into the block header at byte ` + strconv.Itoa(nb[len(nb)-1])},
		{"pcapng shb", ng[:20], 0, `open "f": file ends 20 bytes into the ` + strconv.Itoa(nb[1]) + `-byte block at byte 0: capture is truncated`},
		{"gzip stream", rt.Gzip(big)[:len(rt.Gzip(big))/2], -1, `read "f": frame `},
		{"zstd stream", rt.Zstd(big)[:len(rt.Zstd(big))/2], -1, `read "f": frame `},
		{"zstd before the first block", rt.Zstd(pcap)[:40], 0, `open "f": zstd-compressed data cut short after 0 bytes: capture is truncated`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := capture.NewSource(bytes.NewReader(tc.data), "f")
			if tc.packets == 0 && err != nil {
				wantKind(t, err, capture.ErrTruncated, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, st, err := drain(src, "f")
			if err != nil {
				t.Fatalf("Next: %v (want io.EOF and a warning)", err)
			}
			wantKind(t, st.Warning, capture.ErrTruncated, tc.msg)
			if tc.packets >= 0 && len(got) != tc.packets {
				t.Errorf("%d packets, want %d", len(got), tc.packets)
			}
			if tc.packets < 0 && len(got) == 0 {
				t.Errorf("no packets before the cut")
			}
		})
	}

	t.Run("source", func(t *testing.T) {
		src, err := capture.NewSource(bytes.NewReader(pcap[:last+20]), "f")
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		n := 0
		for {
			_, err := src.ReadFrame()
			if err != nil {
				if !errors.Is(err, capture.ErrTruncated) || errors.Is(err, io.EOF) {
					t.Fatalf("ReadFrame: %v, want ErrTruncated", err)
				}
				break
			}
			n++
		}
		if n != len(offs)-1 {
			t.Fatalf("%d frames, want %d", n, len(offs)-1)
		}
	})
}
