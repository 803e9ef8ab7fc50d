package capture_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// benchLoad is an HTTP keep-alive capture: 2000 sessions of 5 requests with
// 600-byte responses, about 40k packets and 8 MB.
func benchLoad(b *testing.B) []byte {
	b.Helper()
	return rt.HTTPLoad{Sessions: 2000, Requests: 5, BodySize: 600, Clients: 50}.Pcap()
}

func benchRead(b *testing.B, data []byte) {
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var pkts int64
	for b.Loop() {
		src, err := capture.NewSource(bytes.NewReader(data), "bench")
		if err != nil {
			b.Fatal(err)
		}
		r := capture.NewReader(src, "bench")
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			pkts++
		}
	}
	b.ReportMetric(float64(pkts)/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(float64(pkts)/float64(b.N), "pkts/op")
}

// BenchmarkReader measures Open + decode of a pcap held in memory: the
// source, link/IP/TCP decoding and the Reader's accounting.
func BenchmarkReader(b *testing.B) {
	benchRead(b, benchLoad(b))
}

// BenchmarkReaderGzip is BenchmarkReader on the gzip-compressed capture
// (MB/s counts compressed bytes).
func BenchmarkReaderGzip(b *testing.B) {
	benchRead(b, rt.Gzip(benchLoad(b)))
}

// BenchmarkReaderZstd is BenchmarkReader on the zstd-compressed capture.
func BenchmarkReaderZstd(b *testing.B) {
	benchRead(b, rt.Zstd(benchLoad(b)))
}

// BenchmarkDecode measures the decoder alone on Ethernet frames.
func BenchmarkDecode(b *testing.B) {
	frames, err := rt.Frames(rt.LinkEthernet, rt.HTTPLoad{Sessions: 100, Requests: 5, BodySize: 600, Clients: 10}.Packets())
	if err != nil {
		b.Fatal(err)
	}
	d := capture.NewDecoder()
	var p capture.Packet
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range frames {
			if _, err := d.Decode(&frames[i], &p); err != nil {
				b.Fatal(err)
			}
		}
		n += len(frames)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
}
