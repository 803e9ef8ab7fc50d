package intercept

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// tcpPacket builds an IP packet (v4 or v6 by the addresses) with a TCP
// header carrying flags and payload. Checksums are left zero: the writer
// does not look at them.
func tcpPacket(src, dst netip.AddrPort, flags byte, payload string) []byte {
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = 5 << 4
	tcp[13] = flags
	copy(tcp[20:], payload)
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(tcp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(ip, tcp...)
	}
	ip := make([]byte, 40, 40+len(tcp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
	ip[6], ip[7] = 6, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(ip, tcp...)
}

const (
	fSYN = 0x02
	fACK = 0x10
	fPSH = 0x08
)

// readPcap reads back what a PcapWriter wrote.
type readPacket struct {
	data     []byte
	out      bool
	comments []string
}

func readPcap(t *testing.T, b []byte) ([]readPacket, pcapgo.NgInterface) {
	t.Helper()
	r, err := pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("read pcapng: %v", err)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Errorf("link type %v, want raw IP", r.LinkType())
	}
	var pkts []readPacket
	for {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read packet %d: %v", len(pkts)+1, err)
		}
		if ci.CaptureLength != len(data) || ci.Length != len(data) {
			t.Errorf("packet %d: capture info %+v for %d bytes", len(pkts)+1, ci, len(data))
		}
		p := readPacket{data: append([]byte(nil), data...), comments: opts.Comments}
		if opts.Flags == nil {
			t.Errorf("packet %d: no direction flags", len(pkts)+1)
		} else {
			p.out = opts.Flags.Direction == pcapgo.NgEpbFlagDirectionOutbound
			if !p.out && opts.Flags.Direction != pcapgo.NgEpbFlagDirectionInbound {
				t.Errorf("packet %d: direction %v", len(pkts)+1, opts.Flags.Direction)
			}
		}
		pkts = append(pkts, p)
	}
	intf, err := r.Interface(0)
	if err != nil {
		t.Fatal(err)
	}
	return pkts, intf
}

func info(id uint64, client, target string) *replay.SessionInfo {
	return &replay.SessionInfo{
		Head:   &session.Head{ID: id, Client: netip.MustParseAddrPort("10.0.0.1:40000"), Server: netip.MustParseAddrPort("10.1.0.1:80")},
		Pass:   1,
		Copy:   2,
		Client: netip.MustParseAddrPort(client),
		Target: netip.MustParseAddrPort(target),
	}
}

// A connection's SYN carries its session's comment, once; every packet is
// written whole with its direction; split packets are joined.
func TestPcapWriterCommentsAndDirections(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf, PcapOptions{Interface: "tcopy9"})
	if err != nil {
		t.Fatal(err)
	}
	inner := &countingObserver{}
	obs := w.Observe(inner)
	c4, t4 := netip.MustParseAddrPort("198.18.0.7:40000"), netip.MustParseAddrPort("127.0.0.1:8080")
	c6, t6 := netip.MustParseAddrPort("[2001:2::7]:41000"), netip.MustParseAddrPort("[fd00::1]:8080")
	s4 := obs.Begin(info(17, c4.String(), t4.String()))
	s6 := obs.Begin(info(18, c6.String(), t6.String()))
	noSYN := obs.Begin(info(19, "198.18.0.9:1", t4.String())) // dial failed before sending

	syn4 := tcpPacket(c4, t4, fSYN, "")
	sent := [][]byte{
		syn4,
		syn4, // a retransmitted SYN: no second comment
		tcpPacket(t4, c4, fSYN|fACK, ""),
		tcpPacket(c4, t4, fACK|fPSH, "GET / HTTP/1.1\r\n\r\n"),
		tcpPacket(c6, t6, fSYN, ""),
		tcpPacket(t6, c6, fSYN|fACK, ""),
	}
	outs := []bool{true, true, false, true, true, false}
	for i, p := range sent {
		// The stack hands packets over in pieces (headers, payload).
		w.Packet(outs[i], [][]byte{p[:10], p[10:]})
	}
	s4.Received([]byte("x"))
	for _, so := range []replay.SessionObserver{s4, s6, noSYN} {
		so.Done(&replay.Result{})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if inner.begun != 3 || inner.done != 3 || inner.received != 1 {
		t.Errorf("the wrapped observer saw %d begins, %d receives, %d dones; want 3, 1, 3", inner.begun, inner.received, inner.done)
	}
	if len(w.notes) != 0 {
		t.Errorf("%d comments left behind after every session was done", len(w.notes))
	}

	pkts, intf := readPcap(t, buf.Bytes())
	if intf.Name != "tcopy9" {
		t.Errorf("interface name %q", intf.Name)
	}
	if len(pkts) != len(sent) {
		t.Fatalf("read %d packets, want %d", len(pkts), len(sent))
	}
	want4 := "tcopy-tun session start_id=17 pass=1 copy=2 captured_client=10.0.0.1:40000 server=10.1.0.1:80 target=127.0.0.1:8080"
	want6 := "tcopy-tun session start_id=18 pass=1 copy=2 captured_client=10.0.0.1:40000 server=10.1.0.1:80 target=[fd00::1]:8080"
	for i, p := range pkts {
		if !bytes.Equal(p.data, sent[i]) {
			t.Errorf("packet %d: bytes differ", i+1)
		}
		if p.out != outs[i] {
			t.Errorf("packet %d: outbound %v, want %v", i+1, p.out, outs[i])
		}
		var want []string
		switch i {
		case 0:
			want = []string{want4}
		case 4:
			want = []string{want6}
		}
		if strings.Join(p.comments, "|") != strings.Join(want, "|") {
			t.Errorf("packet %d: comments %q, want %q", i+1, p.comments, want)
		}
	}
	st := w.Stats()
	if st.Packets != uint64(len(sent)) || st.Comments != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	if intf.Statistics.PacketsReceived != uint64(len(sent)) || intf.Statistics.PacketsDropped != 0 {
		t.Errorf("interface statistics %+v, want %d packets, 0 dropped", intf.Statistics, len(sent))
	}
}

type countingObserver struct {
	mu                    sync.Mutex
	begun, received, done int
}

func (c *countingObserver) Begin(*replay.SessionInfo) replay.SessionObserver {
	c.mu.Lock()
	c.begun++
	c.mu.Unlock()
	return c
}
func (c *countingObserver) Captured(int64, []byte) {}
func (c *countingObserver) Received([]byte)        { c.received++ }
func (c *countingObserver) Done(*replay.Result)    { c.done++ }

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	started chan struct{}
	once    sync.Once
	buf     bytes.Buffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return b.buf.Write(p)
}

// A writer that cannot keep up never blocks the data path: what does not fit
// the queue's byte bound is dropped and counted, in the stats and in the
// file's interface statistics, and the rest is written in order.
func TestPcapWriterDropsWhenBehind(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{}), started: make(chan struct{})}
	close(bw.release) // the header goes through
	w0, err := NewPcapWriter(bw, PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w0.Close()
	header := bw.buf.Len()

	bw = &blockingWriter{release: make(chan struct{}), started: make(chan struct{})}
	// The header is written by NewPcapWriter itself; let it pass, then
	// block the first flush of packets by holding release from then on.
	hdr := &headerThenBlock{blockingWriter: bw, pass: header}
	const pkt = 1000
	w, err := NewPcapWriter(hdr, PcapOptions{QueueBytes: 10 * (pkt + 40)})
	if err != nil {
		t.Fatal(err)
	}
	c, tg := netip.MustParseAddrPort("198.18.0.1:1000"), netip.MustParseAddrPort("10.9.0.1:80")
	p := tcpPacket(c, tg, fACK|fPSH, strings.Repeat("x", pkt))
	// The file buffer (1 MiB) must fill before the writer blocks: send
	// enough to fill it, then more than the queue holds.
	const n = (pcapBufferSize / pkt) + 200
	for range n {
		w.Packet(true, [][]byte{p})
	}
	st := w.Stats()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped with a blocked writer: %+v", st)
	}
	close(bw.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st = w.Stats()
	if st.Packets+st.Dropped != n {
		t.Errorf("%d written + %d dropped, want %d in all", st.Packets, st.Dropped, n)
	}
	if st.DroppedBytes != st.Dropped*uint64(len(p)) {
		t.Errorf("dropped bytes %d for %d packets of %d", st.DroppedBytes, st.Dropped, len(p))
	}
	pkts, intf := readPcap(t, bw.buf.Bytes())
	if uint64(len(pkts)) != st.Packets {
		t.Errorf("file holds %d packets, stats say %d", len(pkts), st.Packets)
	}
	if intf.Statistics.PacketsDropped != st.Dropped || intf.Statistics.PacketsReceived != n {
		t.Errorf("interface statistics %+v, want %d dropped of %d", intf.Statistics, st.Dropped, n)
	}
}

// headerThenBlock lets the first pass bytes through, then blocks.
type headerThenBlock struct {
	*blockingWriter
	pass int
	n    int
}

func (h *headerThenBlock) Write(p []byte) (int, error) {
	if h.n+len(p) <= h.pass {
		h.n += len(p)
		return h.buf.Write(p)
	}
	return h.blockingWriter.Write(p)
}

// A write error ends writing: later packets are counted as dropped and Close
// reports the error.
func TestPcapWriterWriteError(t *testing.T) {
	fw := &failAfter{n: 1}
	w, err := NewPcapWriter(fw, PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := tcpPacket(netip.MustParseAddrPort("198.18.0.1:1"), netip.MustParseAddrPort("10.0.0.1:2"), fACK, strings.Repeat("y", 64<<10-100))
	for range 40 { // more than the 1 MiB buffer
		w.Packet(false, [][]byte{p})
	}
	err = w.Close()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close: %v, want the write error", err)
	}
	if st := w.Stats(); st.Dropped == 0 || st.Packets+st.Dropped != 40 {
		t.Errorf("stats %+v: want some dropped, 40 in all", st)
	}
	w.Packet(false, [][]byte{p}) // after Close: ignored, no panic
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestSynKey(t *testing.T) {
	c4, t4 := netip.MustParseAddrPort("198.18.0.7:40000"), netip.MustParseAddrPort("127.0.0.1:8080")
	c6, t6 := netip.MustParseAddrPort("[2001:2::7]:41000"), netip.MustParseAddrPort("[fd00::1]:8080")
	frag := tcpPacket(c4, t4, fSYN, "")
	frag[7] = 8 // fragment offset 8
	udp := tcpPacket(c4, t4, fSYN, "")
	udp[9] = 17
	for _, tc := range []struct {
		name string
		pkt  []byte
		want connKey
		ok   bool
	}{
		{"v4 syn", tcpPacket(c4, t4, fSYN, ""), connKey{c4, t4}, true},
		{"v6 syn", tcpPacket(c6, t6, fSYN, ""), connKey{c6, t6}, true},
		{"syn-ack", tcpPacket(t4, c4, fSYN|fACK, ""), connKey{}, false},
		{"data", tcpPacket(c4, t4, fACK|fPSH, "hello"), connKey{}, false},
		{"fragment", frag, connKey{}, false},
		{"udp", udp, connKey{}, false},
		{"short", []byte{0x45, 0, 0}, connKey{}, false},
		{"empty", nil, connKey{}, false},
		{"v4 header only", tcpPacket(c4, t4, fSYN, "")[:30], connKey{}, false},
	} {
		got, ok := synKey(tc.pkt)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: %v %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// With a snap length each packet keeps its first bytes (headers whole),
// the file records its real length, and SYNs still carry their comment.
func TestPcapWriterSnapLen(t *testing.T) {
	if _, err := NewPcapWriter(io.Discard, PcapOptions{SnapLen: MinPcapSnapLen - 1}); err == nil {
		t.Errorf("a snap length below %d was accepted", MinPcapSnapLen)
	}
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf, PcapOptions{SnapLen: 128})
	if err != nil {
		t.Fatal(err)
	}
	c, tg := netip.MustParseAddrPort("[2001:2::7]:41000"), netip.MustParseAddrPort("[fd00::1]:8080")
	so := w.Observe(nil).Begin(info(5, c.String(), tg.String()))
	syn := tcpPacket(c, tg, fSYN, "")
	big := tcpPacket(c, tg, fACK|fPSH, strings.Repeat("z", 5000))
	w.Packet(true, [][]byte{syn})
	w.Packet(true, [][]byte{big[:60], big[60:1000], big[1000:]})
	so.Done(&replay.Result{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(buf.Bytes()), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{syn, big} {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("packet %d: %v", i+1, err)
		}
		keep := min(len(want), 128)
		if !bytes.Equal(data, want[:keep]) || ci.CaptureLength != keep || ci.Length != len(want) {
			t.Errorf("packet %d: %d bytes kept of %d (capture info %d of %d), want the first %d", i+1, len(data), len(want), ci.CaptureLength, ci.Length, keep)
		}
		if (len(opts.Comments) == 1) != (i == 0) {
			t.Errorf("packet %d: comments %q", i+1, opts.Comments)
		}
	}
	if st := w.Stats(); st.Bytes != uint64(len(syn)+128) {
		t.Errorf("%d bytes written, want %d", st.Bytes, len(syn)+128)
	}
}

// The pcap observer in front of the Recorder keeps its TimedObserver: the
// engine looks for it on what Begin returns (the per-request comparison's
// response times depend on it).
func TestPcapObserverKeepsTimed(t *testing.T) {
	w, err := NewPcapWriter(io.Discard, PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rec := New(Options{})
	info := &replay.SessionInfo{Head: &session.Head{}}
	so := rec.Begin(info)
	if _, ok := so.(replay.TimedObserver); !ok {
		t.Fatalf("the Recorder's session observer is not a TimedObserver: %T", so)
	}
	got := w.Observe(rec).Begin(info)
	if _, ok := got.(replay.TimedObserver); !ok {
		t.Fatalf("Observe hides the Recorder's TimedObserver: %T", got)
	}
	got.Done(&replay.Result{})
}
