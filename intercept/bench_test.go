package intercept

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// keepAlive builds a keep-alive session's server stream: n HTTP answers of
// about 1.1 KiB (a 1 KiB body), one captured segment each, as the session
// builder hands them over. date sets the Date header of every answer.
func keepAlive(n int, date string) (segs [][]byte, stream []byte) {
	body := strings.Repeat("0123456789abcdef", 64)
	for i := range n {
		a := fmt.Sprintf("HTTP/1.1 200 OK\r\nDate: %s\r\nServer: nginx/1.24.0\r\nContent-Type: text/plain\r\n"+
			"X-Request: %04d\r\nContent-Length: %d\r\n\r\n%s", date, i, len(body), body)
		segs = append(segs, []byte(a))
		stream = append(stream, a...)
	}
	return segs, stream
}

// BenchmarkKeepAliveSession is one replayed keep-alive session as at
// --speed max: 50 HTTP answers of about 1.1 KiB; the session builder reads
// ahead, so the whole captured server stream arrives first (one Captured
// call per answer, in the replay's own buffers), then the target's answer
// in 32 KiB reads through a reused buffer, then Done. "identical": the
// target answers byte for byte; "volatile": every answer has another Date.
func BenchmarkKeepAliveSession(b *testing.B) {
	const answers = 50
	capd, stream := keepAlive(answers, "Mon, 02 Mar 2026 10:00:00 GMT")
	s := &session.Session{Server: capSession(0, "", 0).Server, Start: t0, End: session.EndClientFIN,
		ServerData: stream, ServerBytes: int64(len(stream))}
	head, tail := s.Head(), s.Tail()
	_, later := keepAlive(answers, "Wed, 04 Mar 2026 05:06:07 GMT")
	for _, bc := range []struct {
		name   string
		answer []byte
		want   Match
	}{
		{"identical", stream, Identical},
		{"volatile", later, Volatile},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := New(Options{MaxRows: -1})
			info := &replay.SessionInfo{Head: head}
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				o := r.Begin(info)
				off := int64(0)
				for _, p := range capd {
					o.Captured(off, p)
					off += int64(len(p))
				}
				for a := bc.answer; len(a) > 0; {
					n := copy(buf, a)
					o.Received(buf[:n])
					a = a[n:]
				}
				o.Done(&replay.Result{Dialed: true, End: session.EndClientFIN, Tail: tail, Chunks: answers,
					BytesReceived: int64(len(bc.answer))})
			}
			b.StopTimer()
			tot := r.Report(nil).Totals
			if n := [...]int64{Identical: tot.Match.Identical, Volatile: tot.Match.Volatile}[bc.want]; n != tot.Sessions {
				b.Fatalf("%d of %d sessions %s: %+v", n, tot.Sessions, bc.want, tot.Match)
			}
		})
	}
}

// BenchmarkPcapWriterPacket is what --write-pcap costs the data path per
// packet (Packet: copy and queue), and, separately, the writer goroutine's
// cost per packet into a file buffer that discards (ns/op covers both
// when the writer keeps up; the data path's part is "datapath-ns/pkt").
// 100 B is an ACK or a small request; 64 KiB a bulk segment with host GSO.
func BenchmarkPcapWriterPacket(b *testing.B) {
	c, tg := netip.MustParseAddrPort("198.18.0.1:1000"), netip.MustParseAddrPort("10.9.0.1:80")
	for _, size := range []int{100, 64<<10 - 100} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			p := tcpPacket(c, tg, fACK, strings.Repeat("x", size-40))
			parts := [][]byte{p[:52], p[52:]}
			w, err := NewPcapWriter(io.Discard, PcapOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			var inPacket time.Duration
			for i := 0; b.Loop(); i++ {
				t := time.Now()
				w.Packet(i%2 == 0, parts)
				inPacket += time.Since(t)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			st := w.Stats()
			b.ReportMetric(float64(inPacket.Nanoseconds())/float64(b.N), "datapath-ns/pkt")
			b.ReportMetric(float64(st.Dropped)/float64(b.N), "dropped/pkt")
		})
	}
}
