package session_test

import (
	"bytes"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// benchLoad is the capture package's benchmark load: an HTTP keep-alive
// capture of 2000 sessions of 5 requests with 600-byte answers, about 42k
// packets and 8 MB, many sessions open at once.
func benchLoad() rt.HTTPLoad {
	return rt.HTTPLoad{Sessions: 2000, Requests: 5, BodySize: 600, Clients: 50}
}

// BenchmarkDecodeAndBuild measures the whole path from capture bytes to
// sessions: pcap reading, link/IP/TCP decoding, reassembly and session
// building, with the sessions' chunks and server data kept (and dropped by
// the callback). MB/s counts capture bytes.
func BenchmarkDecodeAndBuild(b *testing.B) {
	data := benchLoad().Pcap()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var pkts, sessions int64
	for b.Loop() {
		src, err := capture.NewSource(bytes.NewReader(data), "bench")
		if err != nil {
			b.Fatal(err)
		}
		r := capture.NewReader(src, "bench")
		st, err := session.Build(r, session.Config{}, func(*session.Session) {})
		if err != nil {
			b.Fatal(err)
		}
		pkts += int64(st.Packets)
		sessions += int64(st.Sessions)
	}
	b.ReportMetric(float64(pkts)/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(float64(sessions)/b.Elapsed().Seconds(), "sessions/s")
}

// BenchmarkBuild measures reassembly and session building alone, on
// packets decoded beforehand.
func BenchmarkBuild(b *testing.B) {
	pkts := benchLoad().Packets()
	var bytes int64
	for i := range pkts {
		bytes += int64(len(pkts[i].Payload))
	}
	b.SetBytes(bytes) // payload bytes
	b.ReportAllocs()
	var n, sessions int64
	for b.Loop() {
		bl := session.NewBuilder(session.Config{}, session.Collect(func(*session.Session) { sessions++ }))
		for i := range pkts {
			bl.Add(&pkts[i])
		}
		bl.Close()
		n += int64(len(pkts))
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(float64(sessions)/b.Elapsed().Seconds(), "sessions/s")
}
