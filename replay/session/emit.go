package session

import "time"

// This file is the session side of the Builder (builder.go keeps the
// connection table, reassembly.go the byte streams): it turns a connection's
// committed deliveries into the stream of events a Sink receives (Head,
// sealed chunks, server bytes, holes, Tail).

// start begins the session: at the first packet of a connection with a
// handshake, at the first client payload of one without. Its Head goes to
// the Sink now.
func (b *Builder) start(c *conn, t time.Time) {
	c.started = true
	c.start = t
	c.id = b.begins
	b.begins++
	h := &Head{
		ID:          c.id,
		EndedBefore: b.emitted,
		Client:      c.client,
		Server:      c.server,
		ISN:         c.isn,
		Start:       t,
		StartOffset: t.Sub(b.first),
		Partial:     c.partial,
	}
	ip := c.client.Addr()
	host := b.hosts[ip]
	// A client host behind NAT can hold thousands of connections open:
	// look at most at the maxPeers last ones in its list (mostly the most
	// recently started), so that a session start costs O(1), not O(open).
	for i := len(host) - 1; i >= max(len(host)-maxPeers, 0); i-- {
		if o := host[i]; o.h[srv].off > 0 && o.feed != nil {
			h.Peers = append(h.Peers, Peer{ID: o.id, ServerBytes: o.h[srv].off})
		}
	}
	c.hostIdx = len(host)
	b.hosts[ip] = append(host, c)
	c.feed = b.sink.Begin(h)
}

// maxPeers bounds Head.Peers (see start).
const maxPeers = 64

// leaveHost removes an ended session from its client host's open list.
func (b *Builder) leaveHost(c *conn) {
	ip := c.client.Addr()
	host := b.hosts[ip]
	last := len(host) - 1
	if c.hostIdx > last || host[c.hostIdx] != c {
		return
	}
	host[c.hostIdx] = host[last]
	host[c.hostIdx].hostIdx = c.hostIdx
	host[last] = nil
	if last == 0 {
		delete(b.hosts, ip)
		return
	}
	b.hosts[ip] = host[:last]
}

// addChunk merges a delivered client piece into the pending chunk, or seals
// that chunk and starts a new one.
func (b *Builder) addChunk(c *conn, it *item) {
	off := max(it.t.Sub(c.start), c.lastOff, 0)
	sbb := max(it.sbb, c.lastSBB)
	c.lastOff, c.lastSBB = off, sbb
	if c.hasPend && b.cfg.MergeWindow >= 0 {
		last := &c.pend
		if last.ServerBytesBefore == sbb && last.StreamOffset+int64(len(last.Data)) == it.off &&
			off-last.Offset <= b.cfg.MergeWindow && len(last.Data)+len(it.data) <= maxChunkBytes {
			last.Data = appendChunk(last.Data, it.data)
			return
		}
	}
	b.seal(c)
	if c.chunks == 0 {
		c.firstSBB, c.firstSO = sbb, it.off
	}
	c.chunks++
	c.pend, c.hasPend = Chunk{Offset: off, Data: clone(it.data), ServerBytesBefore: sbb, StreamOffset: it.off}, true
	c.pendGen++
	if b.cfg.Live {
		b.sealQ = append(b.sealQ, sealRef{c: c, gen: c.pendGen, at: c.start.Add(off + max(b.cfg.MergeWindow, 0))})
	}
}

// seal hands the pending chunk on: nothing will merge into it any more.
func (b *Builder) seal(c *conn) {
	if !c.hasPend {
		return
	}
	ch := c.pend
	c.pend, c.hasPend = Chunk{}, false
	if c.feed != nil {
		c.feed.Chunk(ch)
	}
}

// sealRef is a pending chunk of a live capture and when its merge window
// ends in capture time.
type sealRef struct {
	c   *conn
	gen uint32
	at  time.Time
}

// sealDue seals the pending chunks whose merge window has passed at b.now
// (live captures only): a request must not wait for the client's next
// segment, which may come only after the answer. A chunk whose connection
// still buffers client bytes ahead of a gap stays pending, since those may
// still merge into it; it is looked at again one merge window later.
func (b *Builder) sealDue() {
	for b.sealHead < len(b.sealQ) {
		r := b.sealQ[b.sealHead]
		if !b.now.After(r.at) {
			break
		}
		b.sealQ[b.sealHead] = sealRef{}
		b.sealHead++
		c := r.c
		if !c.hasPend || c.pendGen != r.gen || c.state != stOpen || !c.started {
			continue // sealed, or the conn was recycled
		}
		if len(c.h[cli].ooo) > 0 {
			b.sealQ = append(b.sealQ, sealRef{c: c, gen: r.gen, at: b.now.Add(max(b.cfg.MergeWindow, time.Millisecond))})
			continue
		}
		b.seal(c)
	}
	if b.sealHead > 1024 && b.sealHead > len(b.sealQ)/2 {
		n := copy(b.sealQ, b.sealQ[b.sealHead:])
		clear(b.sealQ[n:])
		b.sealQ = b.sealQ[:n]
		b.sealHead = 0
	}
}

// Advance moves capture time on to now without a packet: on a quiet live
// wire, a ticker calls it so that pending chunks are sealed after their
// merge window and idle connections expire although no packet comes. A
// time before the latest packet's is ignored.
func (b *Builder) Advance(now time.Time) {
	if b.closed || !b.begun || !now.After(b.now) {
		return
	}
	b.now = now
	b.expire()
	b.sealDue()
}

func (b *Builder) addServer(c *conn, off int64, data []byte, t time.Time) {
	limit := b.cfg.ServerDataLimit
	if limit < 0 {
		return
	}
	room := limit - c.srvKept
	if int64(len(data)) > room {
		c.cut = true
		data = data[:max(room, 0)]
	}
	if len(data) == 0 {
		return
	}
	c.srvKept += int64(len(data))
	switch f := c.feed.(type) {
	case nil:
	case TimedFeed:
		f.ServerAt(off, data, max(t.Sub(c.start), 0))
	default:
		f.Server(off, data)
	}
}

func (b *Builder) addHole(c *conn, server bool, off, n int64) {
	c.holes = true
	if !server {
		b.seal(c) // a chunk never spans a hole
	}
	if c.feed != nil {
		c.feed.Hole(Hole{Server: server, Offset: off, Len: n})
	}
}

// end hands on the last chunk and the session's Tail.
func (b *Builder) end(c *conn) {
	b.seal(c)
	b.leaveHost(c)
	t := &Tail{EndSeq: b.emitted}
	b.emitted++
	b.stats.Sessions++
	t.Duration = max(c.last.Sub(c.start), 0)
	t.ClientBytes = c.h[cli].off
	t.ServerBytes = c.h[srv].off
	if c.h[srv].known {
		t.ServerISN = c.h[srv].base - 1
	}
	if c.endSet {
		t.End = c.end
	}
	if t.End == EndClientFIN || t.End == EndClientRST {
		// Never less than the last chunk waited for: chunks and close
		// share one monotonic dependency.
		before := min(t.ServerBytes, c.closeSBB)
		if c.chunks > 0 {
			before = max(before, c.lastSBB)
		}
		t.ServerBytesAfterClose = max(t.ServerBytes-before, 0)
	}
	if c.partial {
		t.Flags |= Partial
	}
	if c.holes {
		t.Flags |= Holes
	}
	if c.snap {
		t.Flags |= Truncated | SnapLen
	}
	if c.cut {
		t.Flags |= Truncated | ServerCut
	}
	// Server-first only when the server's bytes came before any client
	// byte, not when the capture lost the client bytes they answered: the
	// server's first segment acknowledged client bytes, or (without its
	// acknowledgment) a hole precedes the first chunk or the client's
	// bytes were all lost.
	// No server byte captured at all (its stream is holes): nothing shows
	// that it spoke first.
	spokeFirst := c.srvSpoke && ((c.chunks > 0 && c.firstSBB > 0) || (c.chunks == 0 && t.ServerBytes > 0))
	if c.srvAckKnown {
		spokeFirst = spokeFirst && !c.srvAnswered
	} else {
		spokeFirst = spokeFirst && c.firstSO == 0 && (c.chunks > 0 || t.ClientBytes == 0)
	}
	if !c.partial && spokeFirst {
		t.Flags |= ServerFirst
	}
	if c.feed != nil {
		c.feed.End(t)
		c.feed = nil
	}
}
