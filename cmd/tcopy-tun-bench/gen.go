package main

import (
	"bufio"
	"bytes"
	"container/heap"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// Capture generation.
//
// Every workload's capture is built with replaytest's Conv (consistent
// sequence numbers, handshakes, closes) and written with its pcap writer,
// streaming: packets of the conversations that overlap in capture time are
// merged in time order through a small heap and written as soon as no
// conversation still to come can precede them. Memory follows the
// conversations open at one point of the capture, not its size, so the
// 1,000,000-session capture, the multi-GiB bulk capture and the 384 MiB
// upload cost a few MiB to write (TestGenerateStreams checks it).

// capSpec describes one generated capture.
type capSpec struct {
	Kind     string `json:"kind"` // short, keepalive, pipelined, bulk, upload
	Sessions int    `json:"sessions"`
	// Requests per session; Depth of the pipelined batches.
	Requests int `json:"requests_per_session"`
	Depth    int `json:"pipeline_depth,omitempty"`
	// Body is the response body size; Upload the request body (bulk,
	// upload).
	Body   int64 `json:"response_body_bytes"`
	Upload int64 `json:"request_body_bytes,omitempty"`
	// Clients is the number of distinct captured client addresses.
	Clients int `json:"captured_clients"`
	// Spacing is the captured time between session starts.
	Spacing time.Duration `json:"-"`
	// Think is the server's think time before each answer; ClientThink the
	// client's between keep-alive requests.
	Think, ClientThink time.Duration `json:"-"`
	// TLS: the sessions are spoken through TLS 1.3 (tlsgen.go), their
	// key log written beside the capture (keylogPath). short and
	// keepalive only.
	TLS bool `json:"tls,omitempty"`
}

// plain is the same capture without TLS.
func (s capSpec) plain() capSpec { s.TLS = false; return s }

// key identifies the capture for reuse across workloads of one run.
func (s capSpec) key() string { return fmt.Sprintf("%+v", s) }

// totalRequests is the number of HTTP requests in the capture.
func (s capSpec) totalRequests() int64 { return int64(s.Sessions) * int64(s.Requests) }

// capStats is what the generator wrote.
type capStats struct {
	Frames      int64 `json:"frames"`
	FileBytes   int64 `json:"file_bytes"`
	ClientBytes int64 `json:"client_bytes"`
	ServerBytes int64 `json:"server_bytes"`
	Requests    int64 `json:"requests"`
}

// benchServer is the captured server (the replay maps it to the target).
var benchServer = replaytest.DemoServer()

// captureStart is the capture time of the first packet.
var captureStart = replaytest.DemoStart()

// bulkMSS is the segment size of the bulk captures: what tcpdump records
// behind GRO/TSO on a fast host. The replay reassembles the stream, so only
// the capture's size depends on it.
const bulkMSS = 65000

// capturedClient returns the captured client endpoint of session i: one of
// clients addresses in 10.2.0.0/16, a port that differs on each reuse of
// the address.
func capturedClient(i, clients int) netip.AddrPort {
	clients = min(max(clients, 1), 65534)
	ci := i%clients + 1
	port := 10000 + (i/clients)%50000
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(ci >> 8), byte(ci)}), uint16(port))
}

// generate writes the capture of spec to path.
func generate(spec capSpec, path string) (capStats, error) {
	w, err := newCapWriter(path)
	if err != nil {
		return capStats{}, err
	}
	switch spec.Kind {
	case "short", "keepalive", "pipelined":
		var g *tlsGen
		if spec.TLS {
			if spec.Kind == "pipelined" {
				err = fmt.Errorf("no TLS for pipelined captures")
				break
			}
			if g, err = newTLSGen(filepath.Dir(path), keylogPath(path)); err != nil {
				break
			}
		}
		err = genHTTP(w, spec, g)
		if g != nil {
			if cerr := g.close(); err == nil {
				err = cerr
			}
		}
	case "bulk", "upload":
		// upload is a bulk session with a short answer: the same
		// generator, which streams the body segment by segment.
		err = genBulk(w, spec)
	default:
		err = fmt.Errorf("unknown capture kind %q", spec.Kind)
	}
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		os.Remove(keylogPath(path))
		return capStats{}, fmt.Errorf("generate %s capture %q: %w", spec.Kind, path, err)
	}
	return w.st, nil
}

// genHTTP writes request/response sessions. Sessions start Spacing apart;
// each is complete before the next one is built, so everything before the
// next start can be written. With g, each session is spoken through TLS.
func genHTTP(w *capWriter, spec capSpec, g *tlsGen) error {
	depth := max(spec.Depth, 1)
	close := spec.Kind == "short"
	var req, resp []byte
	body := bytes.Repeat([]byte{bodyByte}, int(spec.Body))
	for i := range spec.Sessions {
		start := captureStart.Add(time.Duration(i) * spec.Spacing)
		c := replaytest.NewConvAddr(capturedClient(i, spec.Clients), benchServer, start)
		c.Step = 100 * time.Microsecond
		c.Handshake()
		if g != nil {
			// One request per turn (no pipelining), plaintext counted.
			reqs, resps := make([][]byte, spec.Requests), make([][]byte, spec.Requests)
			for j := range spec.Requests {
				last := close && j == spec.Requests-1
				reqs[j] = appendRequest(nil, "GET", spec.Body, i, j, 0, last)
				resps[j] = append(appendResponseHeader(nil, spec.Body, last), body...)
				w.st.ClientBytes += int64(len(reqs[j]))
				w.st.ServerBytes += int64(len(resps[j]))
				w.st.Requests++
			}
			if err := g.session(c, reqs, resps, spec.Think, spec.ClientThink, close); err != nil {
				return fmt.Errorf("TLS session %d: %w", i, err)
			}
			if close {
				c.CloseServer()
			} else {
				c.CloseClient()
			}
		} else {
			for j := 0; j < spec.Requests; j += depth {
				req, resp = req[:0], resp[:0]
				n := min(depth, spec.Requests-j)
				for k := range n {
					last := close && j+k == spec.Requests-1
					req = appendRequest(req, "GET", spec.Body, i, j+k, 0, last)
					resp = appendResponseHeader(resp, spec.Body, last)
					resp = append(resp, body...)
				}
				if j > 0 {
					c.Wait(spec.ClientThink)
				}
				c.SendBytes(req).Wait(spec.Think).ReplyBytes(resp)
				w.st.ClientBytes += int64(len(req))
				w.st.ServerBytes += int64(len(resp))
				w.st.Requests += int64(n)
				if !close {
					c.ClientAck()
				}
			}
			if close {
				c.CloseServer() // the server closes after a Connection: close answer
			} else {
				c.CloseClient()
			}
		}
		w.add(c.Packets())
		if err := w.flushBefore(start.Add(spec.Spacing)); err != nil {
			return err
		}
	}
	return nil
}

// bulkConv streams one bulk session: a POST of Upload bytes answered by
// Body bytes, both written in segments of bulkMSS with an ACK every second
// segment, then the client closes.
type bulkConv struct {
	conv     *replaytest.Conv
	id       int
	phase    int // 0 upload, 1 download, 2 done
	first    []byte
	left     int64 // body bytes left in this phase
	segs     int   // segments in this phase, for ACK pacing
	up, down int64
	scratch  []byte // one segment; Conv.Seg copies it
}

// renew continues the conversation in a fresh Conv (same sequence numbers
// and clock), so that the packets already written are not kept.
func (b *bulkConv) renew() {
	old := b.conv
	c := replaytest.NewConvAddr(old.Client, old.Server, old.Now()).ISN(old.ClientNext(), old.ServerNext())
	c.MSS, c.Step = old.MSS, old.Step
	b.conv = c
}

// step appends up to n segments of the current phase and returns the
// packets made since the last step.
func (b *bulkConv) step(n int, body []byte) []capture.Packet {
	c := b.conv
	fromClient := b.phase == 0
	for ; n > 0 && b.phase < 2; n-- {
		seg := append(b.scratch[:0], b.first...)
		b.first = nil
		k := min(int64(bulkMSS-len(seg)), b.left)
		seg = append(seg, body[:k]...)
		b.left -= k
		c.Seg(fromClient, capture.ACK|capture.PSH, seg)
		b.scratch = seg
		b.segs++
		if b.segs%2 == 0 || b.left == 0 {
			if fromClient {
				c.ServerAck()
			} else {
				c.ClientAck()
			}
		}
		if b.left == 0 {
			if b.phase == 0 {
				var h [160]byte
				b.first = appendResponseHeader(h[:0], b.down, false)
				b.left, b.segs, b.phase, fromClient = b.down, 0, 1, false
			} else {
				c.CloseClient()
				b.phase = 2
			}
		}
	}
	pkts := c.Packets()
	b.renew()
	return pkts
}

// genBulk writes Sessions bulk sessions that start Spacing apart and run
// side by side, round-robin, merged by time.
func genBulk(w *capWriter, spec capSpec) error {
	body := bytes.Repeat([]byte{bodyByte}, bulkMSS)
	var convs []*bulkConv
	for i := range spec.Sessions {
		c := replaytest.NewConvAddr(capturedClient(i, spec.Clients), benchServer, captureStart.Add(time.Duration(i)*spec.Spacing))
		c.MSS, c.Step = bulkMSS, 20*time.Microsecond
		c.Handshake()
		req := appendRequest(nil, "POST", spec.Body, i, 0, spec.Upload, false)
		b := &bulkConv{conv: c, id: i, first: req, left: spec.Upload, up: spec.Upload, down: spec.Body}
		w.st.ClientBytes += int64(len(req)) + spec.Upload
		var h [160]byte
		w.st.ServerBytes += int64(len(appendResponseHeader(h[:0], spec.Body, false))) + spec.Body
		w.st.Requests++
		convs = append(convs, b)
	}
	for {
		active := 0
		var horizon time.Time
		for _, b := range convs {
			if b.phase == 2 {
				continue
			}
			w.add(b.step(64, body))
			if b.phase < 2 {
				active++
				if t := b.conv.Now(); horizon.IsZero() || t.Before(horizon) {
					horizon = t
				}
			}
		}
		if active == 0 {
			return nil
		}
		// No packet still to come is earlier than the slowest session's
		// clock.
		if err := w.flushBefore(horizon); err != nil {
			return err
		}
	}
}

// capWriter merges packets into time order and writes them as Ethernet
// frames to a pcap file with nanosecond timestamps.
type capWriter struct {
	f    *os.File
	bw   *bufio.Writer
	pw   *replaytest.PcapWriter
	q    pktHeap
	seq  uint64 // arrival order: equal times keep it
	ipID uint16
	st   capStats
}

func newCapWriter(path string) (*capWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	pw, err := replaytest.NewPcapWriter(bw, replaytest.PcapOptions{LinkType: replaytest.LinkEthernet, Nano: true})
	if err != nil {
		f.Close()
		return nil, err
	}
	return &capWriter{f: f, bw: bw, pw: pw}, nil
}

// add queues packets (of any conversation, in any order).
func (w *capWriter) add(pkts []capture.Packet) {
	for i := range pkts {
		heap.Push(&w.q, queued{p: pkts[i], seq: w.seq})
		w.seq++
	}
}

// flushBefore writes the queued packets earlier than t; the zero t writes
// all.
func (w *capWriter) flushBefore(t time.Time) error {
	for w.q.Len() > 0 && (t.IsZero() || w.q[0].p.Time.Before(t)) {
		q := heap.Pop(&w.q).(queued)
		w.ipID++
		frame, err := replaytest.Encap(replaytest.LinkEthernet, replaytest.IPPacket(&q.p, w.ipID))
		if err != nil {
			return err
		}
		if err := w.pw.WriteFrame(capture.Frame{Time: q.p.Time, Data: frame, Len: len(frame)}); err != nil {
			return err
		}
		w.st.Frames++
		w.st.FileBytes += 16 + int64(len(frame))
	}
	return nil
}

func (w *capWriter) close() error {
	err := w.flushBefore(time.Time{})
	if ferr := w.bw.Flush(); err == nil {
		err = ferr
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.st.FileBytes += 24
	return err
}

type queued struct {
	p   capture.Packet
	seq uint64
}

type pktHeap []queued

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if !h[i].p.Time.Equal(h[j].p.Time) {
		return h[i].p.Time.Before(h[j].p.Time)
	}
	return h[i].seq < h[j].seq
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = queued{}
	*h = old[:len(old)-1]
	return x
}
