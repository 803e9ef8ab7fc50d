package main

import (
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkTargetShortSessions measures the bench's target alone on
// loopback, one Connection: close request per connection, so that a table
// whose sessions/s approach this number is known to be target-bound.
func BenchmarkTargetShortSessions(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(ln, 0)
	defer s.close()
	req := appendRequest(nil, "GET", 256, 0, 0, 0, true)
	want := len(appendResponseHeader(nil, 256, true)) + 256
	buf := make([]byte, 4096)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Write(req)
		n := 0
		for {
			k, err := c.Read(buf)
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
		if n != want {
			b.Fatalf("answer of %d bytes, want %d", n, want)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
}

// BenchmarkGenerateShort measures capture generation (Conv, merge, pcap
// writer): the million-session capture costs about a million times this.
func BenchmarkGenerateShort(b *testing.B) {
	spec := workloads(true)[0].Capture
	path := filepath.Join(b.TempDir(), "short.pcap")
	b.ResetTimer()
	var frames int64
	for range b.N {
		st, err := generate(spec, path)
		if err != nil {
			b.Fatal(err)
		}
		frames += st.Frames
	}
	b.ReportMetric(float64(int64(b.N)*int64(spec.Sessions))/b.Elapsed().Seconds(), "sessions/s")
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
}
