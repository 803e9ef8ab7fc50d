package session

import (
	"net/netip"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// maxAhead bounds how far beyond the receiver's position (the bytes
// delivered or acknowledged) a segment or an acknowledgment may be and still
// belong to the connection. Windows rarely exceed a few MiB; a 4-tuple's
// previous incarnation has an unrelated ISN, so its late packets land
// anywhere in the 4 GiB sequence space and almost always beyond this.
const maxAhead = 64 << 20

// Directions of a connection, as indexes into conn.h.
const (
	cli = 0 // client → server
	srv = 1 // server → client
)

// Stats counts what a Builder did with the packets it was given.
type Stats struct {
	Packets  uint64 // segments given to Add
	Sessions uint64 // sessions emitted
	// Ignored counts packets of connections that Config.Servers or
	// Config.Keep did not select.
	Ignored uint64
	// Stray counts packets that belong to no session: trailing packets of
	// a closed connection, packets of an older connection that reused the
	// 4-tuple (their sequence numbers do not fit the new one), resets that
	// are out of window, and data beyond a FIN.
	Stray uint64
	// NoClientData counts connections without a handshake that closed or
	// went idle before the client sent any payload: there is nothing to
	// replay, so they are not sessions.
	NoClientData uint64
	// DuplicateBytes counts payload bytes seen again (retransmissions,
	// overlaps); the first copy was kept.
	DuplicateBytes uint64
	// HoleBytes counts bytes never captured, both directions.
	HoleBytes uint64
	// LostFINs counts FINs the capture missed, taken from the peer's
	// closing acknowledgment (see lostFIN).
	LostFINs uint64
	// Open is the number of connections currently open (including those
	// not selected); MaxOpen its high-water mark; Closed the closed ones
	// remembered for Config.Linger. Memory follows these, not the capture
	// size.
	Open, MaxOpen, Closed int
}

// Builder rebuilds sessions from the TCP segments of a capture and streams
// them to a Sink: a session's Head when it starts, its chunks as they are
// sealed, its End when it ends (see Sink and Feed; Collect rebuilds complete
// sessions).
//
// Feed it every segment in capture order with Add, then call Close. It calls
// the Sink synchronously from Add, Advance and Close, so memory follows the
// connections that are open at a point of the capture, not its size.
//
// A Builder is not safe for concurrent use. The Sink and its Feeds must not
// call Add, Advance or Close.
type Builder struct {
	cfg     Config
	sink    Sink
	servers serverSet

	conns     map[connKey]*conn
	open      connList // open and ignored connections, least recently active first
	tombs     map[connKey]tomb
	tombQ     []tombRef // tombs in closing order, for expiry; stale entries are skipped
	tombHead  int
	listeners map[netip.AddrPort]struct{}
	free      []*conn // recycled conns (their ooo slices keep their capacity)

	first  time.Time // capture time of the first packet
	now    time.Time // highest capture time seen: capture time never runs backwards here
	begun  bool
	closed bool

	begins  uint64 // sessions begun: the next Head.ID
	emitted uint64 // sessions ended: the next Tail.EndSeq
	run     []item // scratch: deliveries of the current step, committed in order
	stats   Stats

	// hosts lists the open sessions of each client host, for Head.Peers.
	hosts map[netip.Addr][]*conn
	// sealQ holds the pending chunks of a live capture in the order their
	// merge window ends (see sealDue).
	sealQ    []sealRef
	sealHead int
}

// NewBuilder returns a Builder that streams the sessions it rebuilds to sink.
func NewBuilder(cfg Config, sink Sink) *Builder {
	cfg = cfg.withDefaults()
	return &Builder{
		cfg:       cfg,
		sink:      sink,
		servers:   newServerSet(cfg.Servers),
		conns:     make(map[connKey]*conn),
		tombs:     make(map[connKey]tomb),
		listeners: make(map[netip.AddrPort]struct{}),
		hosts:     make(map[netip.Addr][]*conn),
	}
}

// Stats returns the counters so far.
func (b *Builder) Stats() Stats {
	s := b.stats
	s.Open = len(b.conns)
	s.Closed = len(b.tombs)
	return s
}

// connKey is the unordered 4-tuple: lower endpoint first.
type connKey struct{ a, b netip.AddrPort }

func keyOf(x, y netip.AddrPort) connKey {
	if x.Compare(y) <= 0 {
		return connKey{x, y}
	}
	return connKey{y, x}
}

type connState uint8

const (
	stOpen    connState = iota // tracked, may become or be a session
	stIgnored                  // not selected: packets are only used to see it close
)

// tomb is what is remembered of a closed connection for Config.Linger, so
// that its trailing packets (last ACK, retransmitted FIN, keepalive probes)
// do not start a new connection. It is small on purpose: a busy capture
// closes thousands of connections per second of capture time.
type tomb struct {
	closedAt int64  // Builder.now when it closed, Unix nanoseconds
	isn      uint32 // client ISN, when isnKnown
	cliEnd   uint32 // highest sequence number the client used
	isnKnown bool
	clientA  bool // the client is key.a
}

type tombRef struct {
	key connKey
	at  int64
}

// conn is one TCP connection: one 4-tuple and one client ISN.
type conn struct {
	key            connKey
	client, server netip.AddrPort
	state          connState
	prev, next     *conn // in Builder.open

	lastSeen time.Time // Builder.now at its last packet: orders the idle list
	last     time.Time // capture time of its last packet

	isnKnown bool // the client ISN came from a SYN or a SYN-ACK
	isn      uint32
	synced   bool // a packet from the server was accepted: out of SYN-SENT
	partial  bool // no handshake: the session starts at the first client byte
	started  bool // sess exists
	preFin   [2]bool
	preSrv   bool   // partial, not started: server sequence space was seen
	preSrvAt uint32 // its highest end
	preAck   bool   // partial, not started: the server acknowledged client bytes
	preAckAt uint32 // the highest such acknowledgment

	h [2]half

	// The session, once started.
	feed     Feed // nil: not wanted by the Sink
	id       uint64
	start    time.Time
	hostIdx  int   // index in Builder.hosts[client IP]
	pend     Chunk // the chunk being merged into, not yet handed on
	hasPend  bool
	pendGen  uint32 // counts pending chunks, to recognise stale sealQ entries
	chunks   int
	firstSBB int64 // ServerBytesBefore of the first chunk
	firstSO  int64 // StreamOffset of the first chunk: > 0 after lost client bytes

	// The server's first data segment: whether it had an acknowledgment
	// to tell, and whether that acknowledged client bytes (ServerFirst).
	srvSpoke, srvAckKnown, srvAnswered bool
	holes                              bool
	srvKept                            int64 // server bytes handed to the feed

	end    End
	endSet bool
	// closeSBB is ServerBytesBefore of the client's FIN or RST when the
	// client closed first (end is EndClientFIN or EndClientRST).
	closeSBB int64
	snap     bool // some segment was cut by the snap length
	cut      bool // server data beyond ServerDataLimit was dropped
	lastOff  time.Duration
	lastSBB  int64
	lastHole [2]int // index in sess.Holes of each direction's last hole, or -1
	oooBytes int
}

// item is one delivery in stream order: data, or a hole of n bytes.
type item struct {
	dir  int
	off  int64
	data []byte
	hole int64
	t    time.Time
	sbb  int64
}

// Add processes one segment. p and p.Payload are only read during the
// call. Segments must come in capture order; Add after Close panics.
func (b *Builder) Add(p *capture.Packet) {
	if b.closed {
		panic("session: Builder.Add after Close")
	}
	b.stats.Packets++
	if !b.begun {
		b.begun, b.first, b.now = true, p.Time, p.Time
	} else if p.Time.After(b.now) {
		b.now = p.Time
	}
	key := keyOf(p.Src, p.Dst)
	c := b.conns[key]
	if c != nil {
		// Touch before expiring: a connection is idle only when others
		// moved capture time on without it. A timestamp jump (pcapng
		// interfaces with skewed clocks) must not cut the very
		// connection whose packet jumped.
		c.lastSeen = b.now
		b.open.remove(c)
		b.open.push(c)
	}
	if b.expire() {
		c = b.conns[key]
	}
	if b.cfg.Live {
		b.sealDue()
	}
	if c != nil && b.startsNew(c, p) {
		b.finish(c, false)
		c = nil
	}
	if c == nil {
		if t, ok := b.tombs[key]; ok {
			if !t.startsNew(key, p) {
				b.stats.Stray++
				return
			}
			delete(b.tombs, key)
		}
		if c = b.newConn(key, p); c == nil {
			return
		}
		c.lastSeen = b.now
	}
	if p.Time.After(c.last) {
		c.last = p.Time
	}
	if c.state == stIgnored {
		b.ignored(c, p)
		return
	}
	b.packet(c, p)
}

// startsNew reports whether a segment on the 4-tuple of c opens a new
// connection: a SYN (or SYN-ACK) whose initial sequence number is not c's.
// That is how a client port reused later in the capture, even while the old
// connection lingers in TIME_WAIT, becomes a session of its own.
func (b *Builder) startsNew(c *conn, p *capture.Packet) bool {
	if p.Flags&capture.SYN == 0 || p.Flags&capture.RST != 0 {
		return false
	}
	if p.Flags&capture.ACK == 0 { // SYN
		if c.isnKnown {
			return !(p.Src == c.client && p.Seq == c.isn)
		}
		// A partial connection: its own SYN seen late is not new.
		h := &c.h[cli]
		return !(p.Src == c.client && h.known && p.Seq+1 == h.base)
	}
	// SYN-ACK: of this connection if it acknowledges the SYN (and the data
	// on it, with TCP Fast Open).
	if c.isnKnown {
		return synAckStartsNew(p, c.client, c.isn, c.h[cli].sentEnd())
	}
	if !c.started {
		return true // only ACKs or server bytes so far: the handshake is better
	}
	h := &c.h[cli]
	return !(p.Dst == c.client && h.known && p.Ack == h.base)
}

func synAckStartsNew(p *capture.Packet, client netip.AddrPort, isn, cliEnd uint32) bool {
	if p.Src == client {
		return false // simultaneous open: not worth a session of its own
	}
	return !seqGT(p.Ack, isn) || seqGT(p.Ack, cliEnd)
}

// startsNew is Builder.startsNew for a closed connection.
func (t tomb) startsNew(key connKey, p *capture.Packet) bool {
	if p.Flags&capture.SYN == 0 || p.Flags&capture.RST != 0 {
		return false
	}
	if !t.isnKnown {
		return true
	}
	client := key.b
	if t.clientA {
		client = key.a
	}
	if p.Flags&capture.ACK == 0 {
		return !(p.Src == client && p.Seq == t.isn)
	}
	return synAckStartsNew(p, client, t.isn, t.cliEnd)
}

func (b *Builder) newConn(key connKey, p *capture.Packet) *conn {
	if p.Flags&capture.RST != 0 {
		b.stats.Stray++ // a reset of nothing we know
		return nil
	}
	c := b.alloc()
	c.key = key
	c.lastHole = [2]int{-1, -1}
	syn, ack := p.Flags&capture.SYN != 0, p.Flags&capture.ACK != 0
	switch {
	case syn && !ack:
		c.client, c.server = p.Src, p.Dst
		c.isnKnown, c.isn = true, p.Seq
		c.h[cli].init(p.Seq + 1)
	case syn && ack:
		c.client, c.server = p.Dst, p.Src
		c.isnKnown, c.isn = true, p.Ack-1
		c.h[cli].init(p.Ack)
		c.h[srv].init(p.Seq + 1)
	default:
		c.partial = true
		if b.serviceSide(p.Src, p.Dst) {
			c.client, c.server = p.Src, p.Dst
		} else {
			c.client, c.server = p.Dst, p.Src
		}
	}
	if syn {
		b.learnListener(c.server)
	}
	c.state = stOpen
	if (!b.servers.empty() && !b.servers.has(c.server)) || (b.cfg.Keep != nil && !b.cfg.Keep(c.server)) {
		c.state = stIgnored
	}
	b.conns[key] = c
	b.open.push(c)
	if n := len(b.conns); n > b.stats.MaxOpen {
		b.stats.MaxOpen = n
	}
	if c.state == stOpen && !c.partial {
		b.start(c, p.Time)
	}
	return c
}

// ignored follows a connection that was not selected just far enough to
// see it close, so that it does not wait for the idle timeout.
func (b *Builder) ignored(c *conn, p *capture.Packet) {
	b.stats.Ignored++
	d := cli
	if p.Src == c.server {
		d = srv
	}
	if p.Flags&capture.FIN != 0 {
		c.preFin[d] = true
	}
	if p.Flags&capture.RST != 0 || (c.preFin[cli] && c.preFin[srv]) {
		b.finish(c, true)
	}
}

func (b *Builder) packet(c *conn, p *capture.Packet) {
	d := cli
	if p.Src == c.server {
		d = srv
	}
	fl := p.Flags
	syn, ack := fl&capture.SYN != 0, fl&capture.ACK != 0

	// In SYN-SENT, a server packet must acknowledge only what the client
	// sent. Anything else is a late packet of an older connection on the
	// same 4-tuple (deepflow's l4-source-port-reuse.pcap: a new SYN, then
	// server data and resets of the previous connection).
	if d == srv && !c.synced && c.isnKnown && ack && !syn && seqGT(p.Ack, c.h[cli].sentEnd()) {
		b.stats.Stray++
		return
	}
	seq := p.Seq
	if syn {
		seq++ // the SYN takes one sequence number; data on it follows
		if d == srv && !c.h[srv].known {
			c.h[srv].init(seq)
		}
	}
	if fl&capture.RST != 0 {
		if !b.validReset(c, d, p) {
			b.stats.Stray++
			return
		}
		if d == srv {
			c.synced = true
		}
		if !c.started {
			b.finish(c, true)
			return
		}
		if !c.endSet {
			c.end, c.endSet = EndClientRST, true
			if d == srv {
				c.end = EndServerRST
			} else {
				c.closeSBB = c.serverBytesKnown(p)
			}
		}
		b.finish(c, true)
		return
	}
	if h := &c.h[d]; h.known && !h.plausible(seq) {
		b.stats.Stray++ // another incarnation of the 4-tuple
		return
	}
	if d == srv {
		c.synced = true
	}

	if !c.started { // partial: wait for the first client payload
		b.beforeStart(c, d, seq, p)
		if !c.started {
			return
		}
	} else {
		if ack {
			b.ack(c, d, p.Ack)
			if fl&capture.FIN != 0 || c.h[d].fin {
				b.lostFIN(c, 1-d, p.Ack)
			}
		}
		if len(p.Payload)+p.Missing > 0 {
			b.data(c, d, seq, p)
		}
	}
	if fl&capture.FIN != 0 {
		first := !c.endSet
		b.fin(c, d, seq+uint32(len(p.Payload)+p.Missing))
		if first && c.endSet && c.end == EndClientFIN {
			c.closeSBB = c.serverBytesKnown(p)
		}
	}
	if b.cfg.Live && d == cli && fl&capture.PSH != 0 && c.hasPend && len(c.h[cli].ooo) == 0 {
		// The segment ends a write: on a live wire, hand the chunk on now
		// rather than after its merge window.
		b.seal(c)
	}
	if c.h[cli].closed() && c.h[srv].closed() {
		b.finish(c, true)
	}
}

// lostFIN takes a FIN of direction e that the capture missed from the
// peer's closing acknowledgment: a side that closes (or has closed) and
// acknowledges exactly one past e's last byte acknowledges e's FIN (a lost
// data byte right before a close is far less likely). Without it, a session
// whose FIN was dropped stays open until the capture ends, and its replay
// waits for a byte that is a FIN.
func (b *Builder) lostFIN(c *conn, e int, ack uint32) {
	h := &c.h[e]
	if h.known && !h.fin && len(h.ooo) == 0 && seqDiff(ack, h.next) == 1 {
		b.stats.LostFINs++
		b.fin(c, e, h.next)
	}
}

// validReset accepts a reset whose sequence number lies in what its sender
// has used (from its ISN up to the highest byte seen or acknowledged by the
// peer). A reset elsewhere belongs to another incarnation of the 4-tuple.
// Before a side's sequence space is known, its resets are accepted.
func (b *Builder) validReset(c *conn, d int, p *capture.Packet) bool {
	if d == srv && !c.synced && c.isnKnown && p.Flags&capture.ACK != 0 {
		// Refusal of a SYN: RST+ACK acknowledging the SYN.
		return !seqGT(p.Ack, c.h[cli].sentEnd())
	}
	h := &c.h[d]
	if !h.known {
		return true
	}
	hi := h.sentEnd()
	if h.peerAckValid && seqGT(h.peerAck, hi) {
		hi = h.peerAck
	}
	return seqGE(p.Seq, h.base-1) && seqGE(hi, p.Seq)
}

// beforeStart handles a segment of a partial connection that has not seen
// client payload yet. The first new client payload starts the session: the
// client stream begins at it, and the server stream at what the client had
// acknowledged then. Server bytes before that answered requests that were
// not captured: they are not a dependency of anything replayed. Client
// bytes the server had already acknowledged (a retransmission, a keepalive
// probe's one old byte) are not new: they do not start the session.
func (b *Builder) beforeStart(c *conn, d int, seq uint32, p *capture.Packet) {
	n := len(p.Payload) + p.Missing
	if d == srv {
		if p.Flags&capture.ACK != 0 && (!c.preAck || seqGT(p.Ack, c.preAckAt)) {
			c.preAck, c.preAckAt = true, p.Ack
		}
		if n > 0 {
			if end := seq + uint32(n); !c.preSrv || seqGT(end, c.preSrvAt) {
				c.preSrv, c.preSrvAt = true, end
			}
		}
		if p.Flags&capture.FIN != 0 {
			c.preFin[srv] = true
		}
	} else if p.Flags&capture.FIN != 0 && n == 0 {
		c.preFin[cli] = true
	}
	start := seq
	if d == cli && c.preAck && seqGT(c.preAckAt, start) {
		if ahead := seqDiff(c.preAckAt, start); ahead < int32(n) {
			start = c.preAckAt
		} else if ahead < maxAhead {
			n = 0 // all of it acknowledged already
		}
	}
	if d == srv || n == 0 {
		if c.preFin[cli] && c.preFin[srv] {
			b.finish(c, true)
		}
		return
	}
	c.h[cli].init(start)
	c.isn = start - 1 // stream offset 0 is ISN+1, as with a handshake
	switch {
	case p.Flags&capture.ACK != 0:
		c.h[srv].init(p.Ack)
	case c.preSrv:
		c.h[srv].init(c.preSrvAt)
	}
	b.start(c, p.Time)
	if p.Flags&capture.ACK != 0 {
		b.ack(c, cli, p.Ack)
	}
	b.data(c, cli, seq, p)
}

// finish ends a connection: it emits its session (if it has one) and
// either remembers it as closed for Config.Linger (linger) or forgets it.
func (b *Builder) finish(c *conn, linger bool) {
	if c.state == stOpen {
		if c.started {
			b.flush(c)
			b.end(c)
		} else {
			b.stats.NoClientData++
		}
	}
	b.open.remove(c)
	delete(b.conns, c.key)
	if linger {
		at := b.now.UnixNano()
		b.tombs[c.key] = tomb{
			closedAt: at,
			isn:      c.isn,
			cliEnd:   c.h[cli].sentEnd(),
			isnKnown: c.isnKnown,
			clientA:  c.client == c.key.a,
		}
		b.tombQ = append(b.tombQ, tombRef{c.key, at})
	}
	b.recycle(c)
}

// expire emits connections idle for longer than IdleTimeout and forgets
// closed ones older than Linger, both in capture time.
// It reports whether it removed any.
func (b *Builder) expire() bool {
	any := false
	for c := b.open.head; c != nil && b.now.Sub(c.lastSeen) > b.cfg.IdleTimeout; c = b.open.head {
		b.finish(c, false)
		any = true
	}
	horizon := b.now.Add(-b.cfg.Linger).UnixNano()
	for b.tombHead < len(b.tombQ) && b.tombQ[b.tombHead].at < horizon {
		r := b.tombQ[b.tombHead]
		b.tombQ[b.tombHead] = tombRef{}
		b.tombHead++
		// The 4-tuple may have closed again since: only the tomb of
		// this closing goes.
		if t, ok := b.tombs[r.key]; ok && t.closedAt == r.at {
			delete(b.tombs, r.key)
		}
	}
	if b.tombHead > 1024 && b.tombHead > len(b.tombQ)/2 {
		n := copy(b.tombQ, b.tombQ[b.tombHead:])
		clear(b.tombQ[n:])
		b.tombQ = b.tombQ[:n]
		b.tombHead = 0
	}
	return any
}

// Close emits every open session (End = EndCaptureEnd unless a FIN was
// seen), least recently active first, and forgets everything. It is
// idempotent.
func (b *Builder) Close() {
	if b.closed {
		return
	}
	for c := b.open.head; c != nil; c = b.open.head {
		b.finish(c, false)
	}
	clear(b.tombs)
	b.tombQ, b.tombHead = nil, 0
	b.closed = true
	b.free = nil
}

const maxFree = 256

func (b *Builder) alloc() *conn {
	if n := len(b.free); n > 0 {
		c := b.free[n-1]
		b.free = b.free[:n-1]
		return c
	}
	return &conn{}
}

func (b *Builder) recycle(c *conn) {
	o0, o1 := c.h[0].ooo, c.h[1].ooo
	clear(o0)
	clear(o1)
	*c = conn{}
	c.h[0].ooo, c.h[1].ooo = o0[:0], o1[:0]
	if len(b.free) < maxFree {
		b.free = append(b.free, c)
	}
}

// connList is an intrusive doubly linked list of conns.
type connList struct{ head, tail *conn }

func (l *connList) push(c *conn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) remove(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if l.head == c {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if l.tail == c {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}
