package intercept

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Defaults of PcapOptions.
const (
	// DefaultPcapQueueBytes bounds the packet bytes waiting for the
	// writer: about 45 ms of a 1.4 GB/s bulk transfer, thousands of
	// short-session packets. Beyond it packets are dropped from the
	// capture (never from the replay) and counted.
	DefaultPcapQueueBytes = 64 << 20
	// pcapQueueLen bounds the packets waiting for the writer, whatever
	// their size.
	pcapQueueLen = 16384
	// pcapFlushInterval: the file is at most this far behind the replay
	// while the writer has nothing to do (a reader following it, or a run
	// killed by SIGKILL, sees that much less).
	pcapFlushInterval = 200 * time.Millisecond
	// pcapDrainInterval is how often the writer takes what is queued (see
	// run).
	pcapDrainInterval = 2 * time.Millisecond
	// pcapBufferSize is the file's write buffer.
	pcapBufferSize = 1 << 20
)

// PcapOptions configure a PcapWriter. The zero value is usable.
type PcapOptions struct {
	// Interface names the capture's one interface (the TUN device).
	Interface string
	// QueueBytes bounds the packet bytes queued for the writer goroutine
	// (DefaultPcapQueueBytes if zero).
	QueueBytes int
	// SnapLen, if positive, keeps only each packet's first SnapLen bytes
	// (the file records the packet's length as well): headers without
	// the bulk of the payload cost a fraction to copy and write. At least
	// MinPcapSnapLen, so that the IP and TCP headers, options included,
	// stay whole.
	SnapLen int
}

// MinPcapSnapLen is the smallest PcapOptions.SnapLen: an IPv6 header and a
// TCP header with the most options.
const MinPcapSnapLen = 100

// PcapStats count what a PcapWriter did.
type PcapStats struct {
	Packets uint64 // written to the file
	Bytes   uint64 // packet bytes written
	// Dropped packets never reached the file: the writer had
	// QueueBytes (or its packet limit) waiting, or a write had failed.
	Dropped      uint64
	DroppedBytes uint64
	// Comments counts the connections whose first packet carries its
	// session's comment.
	Comments uint64
}

// PcapWriter writes the replayed traffic, as the netstack's link endpoint
// sees it, as pcapng: one interface of raw IP packets (LINKTYPE_RAW), each
// packet with its direction (epb_flags: outbound towards the target,
// inbound from it), and on the first packet of each replayed connection
// (its SYN) a comment naming its session:
//
//	tcopy-tun session start_id=17 pass=0 copy=0 captured_client=10.0.0.1:40000 server=10.0.0.2:80 target=127.0.0.1:8080
//
// whose fields are those of the JSON report's rows (start_id, pass and copy
// find the row, and the row's id). The start number is the one known when
// the connection opens: the row's id, the number of the session's end in
// the capture, may not be known before the session's end.
//
// Packet (a netstack.Tap) copies each packet and queues it for a writer
// goroutine, so the data path never waits for the file; a packet that does
// not fit the bounded queue is dropped from the capture and counted
// (Stats). At Close an interface statistics block records how many
// packets were dropped (isb_ifdrop), so a reader of the file sees it too.
//
// Observe wraps the replay's observer so that each session's comment is
// known before its connection's first packet is sent.
//
// Concurrency: Packet, Observe's observers and Stats may be called
// concurrently. Close is idempotent; the caller must make sure that no
// Packet call runs during or after it (close the stack that feeds it
// first): later packets are dropped uncounted.
type PcapWriter struct {
	ng    *pcapgo.NgWriter
	bw    *bufio.Writer
	start time.Time
	limit int64
	snap  int // 0: whole packets

	ch   chan pcapItem
	stop chan struct{}
	done chan struct{}

	queued atomic.Int64 // packet bytes in ch
	closed atomic.Bool

	packets, bytes, dropped, droppedBytes, comments atomic.Uint64

	// mu guards notes: the comment of each connection whose first packet
	// is still to come, by its 4-tuple.
	mu    sync.Mutex
	notes map[connKey]string

	closeOnce sync.Once
	err       error // the first write error; set by the writer goroutine, read after done
}

type pcapItem struct {
	ts      time.Time
	out     bool
	data    []byte // the packet, or its first SnapLen bytes
	length  int    // the packet's length
	comment string
}

// connKey is a connection's 4-tuple as the stack sends it: client → target.
type connKey struct{ src, dst netip.AddrPort }

// NewPcapWriter writes the section and interface headers to w at once (so
// the file is a valid, empty capture from the start) and starts the writer
// goroutine. w is not closed by the PcapWriter; Close flushes everything to
// it.
func NewPcapWriter(w io.Writer, opts PcapOptions) (*PcapWriter, error) {
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultPcapQueueBytes
	}
	if opts.SnapLen < 0 || opts.SnapLen > 0 && opts.SnapLen < MinPcapSnapLen {
		return nil, fmt.Errorf("pcap snap length %d: want 0 (whole packets) or at least %d", opts.SnapLen, MinPcapSnapLen)
	}
	name := opts.Interface
	if name == "" {
		name = "tcopy-tun"
	}
	bw := bufio.NewWriterSize(w, pcapBufferSize)
	intf := pcapgo.DefaultNgInterface
	intf.Name = name
	intf.Description = "the replayed traffic as tcopy-tun's TCP/IP stack saw it"
	intf.LinkType = layers.LinkTypeRaw
	intf.SnapLength = uint32(opts.SnapLen)
	opt := pcapgo.DefaultNgWriterOptions
	opt.SectionInfo.Application = "tcopy-tun"
	ng, err := pcapgo.NewNgWriterInterface(bw, intf, opt)
	if err != nil {
		return nil, fmt.Errorf("pcapng header: %w", err)
	}
	if err := ng.Flush(); err != nil {
		return nil, fmt.Errorf("pcapng header: %w", err)
	}
	pw := &PcapWriter{
		ng:    ng,
		bw:    bw,
		start: time.Now(),
		limit: int64(opts.QueueBytes),
		snap:  opts.SnapLen,
		ch:    make(chan pcapItem, pcapQueueLen),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		notes: make(map[connKey]string),
	}
	go pw.run()
	return pw, nil
}

// Packet implements netstack.Tap: it copies the packet and queues it for
// the writer, or drops it (counted) when the queue is full. It never
// blocks.
func (w *PcapWriter) Packet(out bool, parts [][]byte) {
	if w.closed.Load() {
		return
	}
	length := 0
	for _, p := range parts {
		length += len(p)
	}
	n := length
	if w.snap > 0 && n > w.snap {
		n = w.snap
	}
	if w.queued.Add(int64(n)) > w.limit {
		w.queued.Add(-int64(n))
		w.drop(n)
		return
	}
	data := getPacketBuf(n)
	off := 0
	for _, p := range parts {
		if off == n {
			break
		}
		off += copy(data[off:], p)
	}
	it := pcapItem{ts: time.Now(), out: out, data: data, length: length}
	if out {
		if k, ok := synKey(data); ok {
			it.comment = w.takeNote(k)
		}
	}
	select {
	case w.ch <- it:
	default:
		w.queued.Add(-int64(n))
		putPacketBuf(data)
		w.drop(n)
	}
}

func (w *PcapWriter) drop(n int) {
	w.dropped.Add(1)
	w.droppedBytes.Add(uint64(n))
}

// Large packets (bulk transfers, up to 64 KiB each) get their buffers from a
// pool, which the writer returns them to; small ones are allocated, which is
// cheaper than a pool for a few hundred bytes.
const pooledPacketMin = 4 << 10

var packetPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+256); return &b }}

func getPacketBuf(n int) []byte {
	if n < pooledPacketMin {
		return make([]byte, n)
	}
	bp := packetPool.Get().(*[]byte)
	if cap(*bp) < n {
		return make([]byte, n)
	}
	return (*bp)[:n]
}

func putPacketBuf(b []byte) {
	if cap(b) < pooledPacketMin || cap(b) != 64<<10+256 {
		return
	}
	b = b[:0]
	packetPool.Put(&b)
}

// synKey returns the 4-tuple of an IP packet that opens a TCP connection (SYN
// without ACK).
func synKey(b []byte) (connKey, bool) {
	var src, dst netip.Addr
	var tcp []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		// A fragment cannot be a SYN the stack sends; protocol 6 is TCP.
		if b[9] != 6 || ihl < 20 || len(b) < ihl+20 || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return connKey{}, false
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		tcp = b[ihl:]
	case len(b) >= 60 && b[0]>>4 == 6:
		// gVisor's TCP sends no extension headers.
		if b[6] != 6 {
			return connKey{}, false
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		tcp = b[40:]
	default:
		return connKey{}, false
	}
	const syn, ack = 0x02, 0x10
	if tcp[13]&(syn|ack) != syn {
		return connKey{}, false
	}
	return connKey{
		netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
	}, true
}

// note sets the comment of the connection from src to dst, for its first
// packet.
func (w *PcapWriter) note(k connKey, comment string) {
	w.mu.Lock()
	w.notes[k] = comment
	w.mu.Unlock()
}

// takeNote returns and forgets the comment of a connection (empty when there
// is none: a retransmitted SYN, or a connection nobody noted).
func (w *PcapWriter) takeNote(k connKey) string {
	w.mu.Lock()
	c, ok := w.notes[k]
	if ok {
		delete(w.notes, k)
	}
	w.mu.Unlock()
	return c
}

// run writes queued packets until Close, then what is still queued.
//
// It drains the queue every pcapDrainInterval rather than waiting on it: a
// receiver parked on the channel would be woken by every packet, a
// goroutine switch per packet on the data path's CPUs. Between drains the
// queue only fills (16384 packets or QueueBytes take far longer than an
// interval to fill even at the path's full rate).
func (w *PcapWriter) run() {
	defer close(w.done)
	tick := time.NewTicker(pcapDrainInterval)
	defer tick.Stop()
	dirty := false
	lastFlush := time.Now()
	drain := func() {
		for {
			select {
			case it := <-w.ch:
				w.write(it)
				dirty = true
			default:
				return
			}
		}
	}
	for {
		select {
		case now := <-tick.C:
			drain()
			if dirty && w.err == nil && now.Sub(lastFlush) >= pcapFlushInterval {
				if err := w.ng.Flush(); err != nil {
					w.err = err
				}
				dirty, lastFlush = false, now
			}
		case <-w.stop:
			drain()
			return
		}
	}
}

func (w *PcapWriter) write(it pcapItem) {
	n := len(it.data)
	w.queued.Add(-int64(n))
	defer putPacketBuf(it.data)
	if w.err != nil {
		w.drop(n)
		return
	}
	ci := gopacket.CaptureInfo{Timestamp: it.ts, CaptureLength: n, Length: it.length}
	flags := pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
	if it.out {
		flags.Direction = pcapgo.NgEpbFlagDirectionOutbound
	}
	opts := pcapgo.NgPacketOptions{Flags: &flags}
	if it.comment != "" {
		opts.Comments = []string{it.comment}
	}
	if err := w.ng.WritePacketWithOptions(ci, it.data, opts); err != nil {
		w.err = err
		w.drop(n)
		return
	}
	w.packets.Add(1)
	w.bytes.Add(uint64(n))
	if it.comment != "" {
		w.comments.Add(1)
	}
}

// Stats returns what was written and dropped so far.
func (w *PcapWriter) Stats() PcapStats {
	return PcapStats{
		Packets: w.packets.Load(), Bytes: w.bytes.Load(),
		Dropped: w.dropped.Load(), DroppedBytes: w.droppedBytes.Load(),
		Comments: w.comments.Load(),
	}
}

// Close writes what is still queued, then an interface statistics block
// (packets seen, packets dropped), and flushes. It returns the first write
// error. It does not close the writer NewPcapWriter was given. Idempotent.
func (w *PcapWriter) Close() error {
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		close(w.stop)
		<-w.done
		if w.err != nil {
			return
		}
		s := w.Stats()
		now := time.Now()
		err := w.ng.WriteInterfaceStats(0, pcapgo.NgInterfaceStatistics{
			LastUpdate:      now,
			StartTime:       w.start,
			EndTime:         now,
			PacketsReceived: s.Packets + s.Dropped,
			PacketsDropped:  s.Dropped,
		})
		if err == nil {
			err = w.ng.Flush()
		}
		w.err = err
	})
	return w.err
}

// Observe returns an Observer that notes each session's connection (mapped
// client and target) for the comment on its first packet, and hands
// everything on to next.
func (w *PcapWriter) Observe(next replay.Observer) replay.Observer {
	return pcapObserver{w: w, next: next}
}

type pcapObserver struct {
	w    *PcapWriter
	next replay.Observer
}

// SessionComment is the pcapng comment of a session's first packet (see
// PcapWriter).
func SessionComment(info *replay.SessionInfo) string {
	return fmt.Sprintf("tcopy-tun session start_id=%d pass=%d copy=%d captured_client=%s server=%s target=%s",
		info.Head.ID, info.Pass, info.Copy, info.Head.Client, info.Head.Server, info.Target)
}

func (o pcapObserver) Begin(info *replay.SessionInfo) replay.SessionObserver {
	k := connKey{info.Client, info.Target}
	o.w.note(k, SessionComment(info))
	var so replay.SessionObserver
	if o.next != nil {
		so = o.next.Begin(info)
	}
	po := &pcapSessionObserver{SessionObserver: so, w: o.w, k: k}
	if to, ok := so.(replay.TimedObserver); ok {
		// Keep the per-request comparison's times: the engine looks for
		// TimedObserver on what Begin returns.
		return &pcapTimedObserver{pcapSessionObserver: po, to: to}
	}
	return po
}

// pcapTimedObserver is a pcapSessionObserver in front of a TimedObserver.
type pcapTimedObserver struct {
	*pcapSessionObserver
	to replay.TimedObserver
}

func (o *pcapTimedObserver) CapturedAt(off int64, data []byte, at time.Duration) {
	o.to.CapturedAt(off, data, at)
}
func (o *pcapTimedObserver) ReceivedAt(p []byte, at time.Time)  { o.to.ReceivedAt(p, at) }
func (o *pcapTimedObserver) Sent(c session.Chunk, at time.Time) { o.to.Sent(c, at) }

// pcapSessionObserver forgets its connection's comment at Done: a session
// whose dial sent nothing (the stack refused it) leaves nothing behind.
type pcapSessionObserver struct {
	replay.SessionObserver // nil: nothing else observes the session
	w                      *PcapWriter
	k                      connKey
}

func (o *pcapSessionObserver) Captured(off int64, data []byte) {
	if o.SessionObserver != nil {
		o.SessionObserver.Captured(off, data)
	}
}

func (o *pcapSessionObserver) Received(p []byte) {
	if o.SessionObserver != nil {
		o.SessionObserver.Received(p)
	}
}

func (o *pcapSessionObserver) Done(r *replay.Result) {
	o.w.takeNote(o.k)
	if o.SessionObserver != nil {
		o.SessionObserver.Done(r)
	}
}
