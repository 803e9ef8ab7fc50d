package capture_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// flushWriter is a stream writer: Flush pushes what was written so far.
type flushWriter interface {
	io.Writer
	Flush() error
}

type nopFlush struct{ io.Writer }

func (nopFlush) Flush() error { return nil }

// TestStreaming feeds a capture through a pipe one record at a time and
// writes the next record only after the reader has returned the previous
// packet: a reader that waited for more input (or the end) would deadlock,
// which the timeout turns into a failure. The first record is written one
// byte at a time to exercise partial reads.
func TestStreaming(t *testing.T) {
	frames := smallFrames(t)
	pkts := rt.SmallHTTP("10.9.0.1:3000", "10.9.0.2:80").Packets()
	wrappers := []struct {
		name string
		wrap func(w io.Writer) (flushWriter, func() error)
	}{
		{"plain", func(w io.Writer) (flushWriter, func() error) { return nopFlush{w}, func() error { return nil } }},
		{"gzip", func(w io.Writer) (flushWriter, func() error) { z := gzip.NewWriter(w); return z, z.Close }},
		{"zstd", func(w io.Writer) (flushWriter, func() error) {
			z, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
			if err != nil {
				panic(err)
			}
			return z, z.Close
		}},
	}
	for _, w := range wrappers {
		t.Run(w.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			got := make(chan int, len(frames))
			writerDone := make(chan error, 1)
			go func() {
				zw, closeZ := w.wrap(pw)
				err := func() error {
					hdr := rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, nil)
					if _, err := zw.Write(hdr); err != nil {
						return err
					}
					if err := zw.Flush(); err != nil {
						return err
					}
					for i, f := range frames {
						rec := rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, []capture.Frame{f})[24:]
						if i == 0 {
							for j := range rec {
								if _, err := zw.Write(rec[j : j+1]); err != nil {
									return err
								}
								if err := zw.Flush(); err != nil {
									return err
								}
							}
						} else {
							if _, err := zw.Write(rec); err != nil {
								return err
							}
							if err := zw.Flush(); err != nil {
								return err
							}
						}
						select {
						case n := <-got:
							if n != i+1 {
								return errors.New("reader out of step")
							}
						case <-time.After(10 * time.Second):
							return errors.New("the reader did not return a packet whose record was complete")
						}
					}
					return closeZ()
				}()
				pw.CloseWithError(err)
				writerDone <- err
			}()
			src, err := capture.NewSource(pr, "-")
			if err != nil {
				t.Fatal(err)
			}
			r := capture.NewReader(src, "-")
			defer r.Close()
			for i := range frames {
				p, err := r.Next()
				if err != nil {
					pr.CloseWithError(err)
					t.Fatalf("packet %d: %v (writer: %v)", i+1, err, <-writerDone)
				}
				if p.N != i+1 || p.Seq != pkts[i].Seq || !bytes.Equal(p.Payload, pkts[i].Payload) {
					t.Fatalf("packet %d differs: %+v", i+1, p)
				}
				got <- i + 1
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the last packet: %v, want io.EOF", err)
			}
			if err := <-writerDone; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOpenStdin: Open("-") reads os.Stdin as a stream and does not close it.
func TestOpenStdin(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	saved := os.Stdin
	os.Stdin = rd
	defer func() { os.Stdin = saved }()
	data := smallPcapng(t)
	go func() {
		// Half now, half later: Open must not wait for the end.
		wr.Write(data[:len(data)/2])
		time.Sleep(50 * time.Millisecond)
		wr.Write(data[len(data)/2:])
		wr.Close()
	}()
	src, err := capture.Open("-")
	if err != nil {
		t.Fatal(err)
	}
	got, st, err := drain(src, "-")
	if err != nil || len(got) != 10 || st.Warning != nil {
		t.Fatalf("%d packets, %v, warning %v", len(got), err, st.Warning)
	}
	// Closing the source left stdin open.
	if _, err := rd.Stat(); err != nil {
		t.Fatalf("stdin was closed: %v", err)
	}
}

// TestStreamCutShort: a stream that stops mid-record (tcpdump killed)
// gives every complete packet, then a truncation warning naming stdin.
func TestStreamCutShort(t *testing.T) {
	data := smallPcap(t)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(data[:len(data)-20])
		pw.Close()
	}()
	src, err := capture.NewSource(pr, "-")
	if err != nil {
		t.Fatal(err)
	}
	got, st, err := drain(src, "-")
	if err != nil || len(got) != 9 {
		t.Fatalf("%d packets, %v", len(got), err)
	}
	wantKind(t, st.Warning, capture.ErrTruncated, "read stdin: frame 10: file ends")
}
