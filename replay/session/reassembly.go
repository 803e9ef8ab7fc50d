package session

import (
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// This file is the Builder's TCP reassembly: each direction's bytes are put
// in stream order (retransmissions, overlaps and reordering resolved; gaps
// given up as holes when the peer acknowledged past them or the buffer
// limit is reached) and the deliveries of one step are committed in order
// to the session side (emit.go).

// ack records an acknowledgment sent by direction d for the peer's stream
// and gives up the gaps it proves lost: the peer received those bytes, so
// they were on the wire, the capture missed them, and no retransmission
// will come.
func (b *Builder) ack(c *conn, d int, ack uint32) {
	h := &c.h[1-d]
	if !h.known {
		if d == cli && !c.partial {
			// The SYN-ACK was not captured: the client's acknowledgment
			// (normally the handshake's third packet) is where the
			// server stream starts.
			h.init(ack)
			h.peerAck, h.peerAckValid = ack, true
		}
		return
	}
	if diff := seqDiff(ack, h.next); diff < -(1<<30) || diff > maxAhead {
		return // not from this sequence space
	}
	if !h.peerAckValid || seqGT(ack, h.peerAck) {
		h.peerAck, h.peerAckValid = ack, true
	}
	if len(h.ooo) > 0 && h.acked(h.ooo[0].seq) {
		b.drain(c, 1-d)
		b.commit(c)
	}
	if h.fin && len(h.ooo) == 0 && seqGT(h.finSeq, h.next) && h.acked(h.finSeq) {
		b.hole(c, 1-d, int64(seqDiff(h.finSeq, h.next)))
		b.commit(c)
	}
}

// data handles the payload (and snap-length-missing bytes) of a segment.
func (b *Builder) data(c *conn, d int, seq uint32, p *capture.Packet) {
	h := &c.h[d]
	if !h.known {
		h.init(seq) // server stream of a handshake whose SYN-ACK was not captured
	}
	if d == srv && !c.srvSpoke {
		// Whether the server's first bytes answered client bytes: its
		// acknowledgment says so even when the capture lost those bytes.
		c.srvSpoke = true
		if p.Flags&capture.ACK != 0 && c.isnKnown {
			acked := p.Ack
			if ch := &c.h[cli]; ch.fin && seqGT(acked, ch.finSeq) {
				acked = ch.finSeq // the client's FIN is not a byte
			}
			c.srvAckKnown, c.srvAnswered = true, seqGT(acked, c.isn+1)
		}
	}
	pc := piece{seq: seq, data: p.Payload, missing: p.Missing, t: p.Time}
	if p.Missing > 0 {
		c.snap = true
	}
	if end := pc.end(); seqGT(end, h.maxEnd) {
		h.maxEnd = end
	}
	if d == cli {
		pc.sbb = c.serverBytesKnown(p)
	}
	b.segment(c, d, pc)
	b.commit(c)
}

// serverBytesKnown is ServerBytesBefore for a client segment: the server
// bytes the client had received when it sent the segment, which its ACK
// field states exactly, even when the capture point saw more server bytes
// in flight (a capture on the server side shows the answer to request 1
// before a pipelined request 2 arrives, though the client sent 2 first) or
// fewer (the capture lost them: holes count). Without an ACK field (data
// on a SYN), the server bytes captured so far.
func (c *conn) serverBytesKnown(p *capture.Packet) int64 {
	s := &c.h[srv]
	if !s.known {
		return 0
	}
	var v int64
	if p.Flags&capture.ACK != 0 {
		a := p.Ack
		if s.fin && seqGT(a, s.finSeq) {
			a = s.finSeq // the FIN's sequence number is not a byte
		}
		if diff := seqDiff(a, s.next); diff > -(1<<30) && diff <= maxAhead {
			v = s.offOf(a)
		}
	} else {
		v = s.offOf(s.maxEnd)
	}
	return max(v, 0)
}

// segment reassembles one piece of direction d.
func (b *Builder) segment(c *conn, d int, pc piece) {
	h := &c.h[d]
	if h.fin {
		// Nothing exists at or beyond the FIN.
		if !seqGT(h.finSeq, pc.seq) {
			b.stats.Stray++
			return
		}
		if n := int(seqDiff(h.finSeq, pc.seq)); n < pc.len() {
			pc.keep(n)
		}
	}
	if diff := seqDiff(pc.seq, h.next); diff < 0 {
		// Starts before next: retransmission, duplicate or overlap. The
		// bytes already delivered stay (first copy wins).
		skip := -int64(diff)
		if skip >= int64(pc.len()) {
			b.stats.DuplicateBytes += uint64(len(pc.data))
			return
		}
		b.stats.DuplicateBytes += uint64(min(skip, int64(len(pc.data))))
		pc.trimFront(int(skip))
	}
	switch {
	case pc.seq == h.next:
	case h.acked(pc.seq):
		b.hole(c, d, int64(seqDiff(pc.seq, h.next)))
	default:
		added := h.insert(pc)
		c.oooBytes += added
		b.limitOOO(c, d)
		return
	}
	b.deliver(c, d, pc)
	b.drain(c, d)
}

// limitOOO gives up gaps, oldest first, while the connection buffers more
// than Config.OutOfOrderLimit: memory stays bounded when a segment was lost
// and the peer's acknowledgments were not captured either.
func (b *Builder) limitOOO(c *conn, d int) {
	for c.oooBytes > b.cfg.OutOfOrderLimit {
		if len(c.h[d].ooo) == 0 {
			d = 1 - d
		}
		h := &c.h[d]
		if len(h.ooo) == 0 {
			return
		}
		b.hole(c, d, int64(seqDiff(h.ooo[0].seq, h.next)))
		b.drain(c, d)
	}
}

// drain delivers buffered pieces that have become contiguous, and those
// behind a gap the peer acknowledged (the gap becomes a hole).
func (b *Builder) drain(c *conn, d int) {
	h := &c.h[d]
	for len(h.ooo) > 0 {
		q := h.ooo[0]
		if diff := seqDiff(q.seq, h.next); diff > 0 {
			if !h.acked(q.seq) {
				return
			}
			b.hole(c, d, int64(diff))
		}
		h.ooo[0] = piece{}
		h.ooo = h.ooo[1:]
		if len(h.ooo) == 0 {
			h.ooo = h.ooo[:0:0]
		}
		c.oooBytes -= len(q.data)
		if diff := seqDiff(h.next, q.seq); diff > 0 {
			if int(diff) >= q.len() {
				continue
			}
			q.trimFront(int(diff))
		}
		if h.fin {
			if !seqGT(h.finSeq, q.seq) {
				continue
			}
			if n := int(seqDiff(h.finSeq, q.seq)); n < q.len() {
				q.keep(n)
			}
		}
		b.deliver(c, d, q)
	}
}

// deliver appends the in-order piece pc (pc.seq == next) to the run.
func (b *Builder) deliver(c *conn, d int, pc piece) {
	h := &c.h[d]
	if n := len(pc.data); n > 0 {
		b.run = append(b.run, item{dir: d, off: h.off, data: pc.data, t: pc.t, sbb: pc.sbb})
		h.off += int64(n)
		h.next += uint32(n)
	}
	if pc.missing > 0 {
		b.hole(c, d, int64(pc.missing))
	}
}

func (b *Builder) hole(c *conn, d int, n int64) {
	if n <= 0 {
		return
	}
	h := &c.h[d]
	b.run = append(b.run, item{dir: d, off: h.off, hole: n})
	h.off += n
	h.next += uint32(n)
	b.stats.HoleBytes += uint64(n)
}

func (b *Builder) fin(c *conn, d int, finSeq uint32) {
	h := &c.h[d]
	if !h.known {
		h.init(finSeq) // a server that only closed, its SYN-ACK not captured
	}
	if h.fin {
		return // retransmitted FIN: the first one counts
	}
	if seqGT(h.next, finSeq) {
		return // a FIN inside delivered bytes is bogus
	}
	h.fin, h.finSeq = true, finSeq
	if !c.endSet {
		c.end, c.endSet = EndClientFIN, true
		if d == srv {
			c.end = EndServerFIN
		}
	}
	if h.acked(finSeq) && seqGT(finSeq, h.next) && len(h.ooo) == 0 {
		b.hole(c, d, int64(seqDiff(finSeq, h.next)))
		b.commit(c)
	}
}

// commit turns the run of deliveries into chunks, server data and holes.
//
// Client pieces delivered together came in out of order: a retransmission
// that filled a gap arrived after later bytes. Their original was sent
// before those later bytes, so each piece takes the smallest time and
// ServerBytesBefore of itself and the pieces after it; then both are kept
// from decreasing across chunks.
func (b *Builder) commit(c *conn) {
	if len(b.run) == 0 {
		return
	}
	var minT time.Time
	minSBB := int64(-1)
	for i := len(b.run) - 1; i >= 0; i-- {
		it := &b.run[i]
		if it.dir != cli || it.hole > 0 {
			continue
		}
		if minSBB >= 0 {
			if minT.Before(it.t) {
				it.t = minT
			}
			if minSBB < it.sbb {
				it.sbb = minSBB
			}
		}
		minT, minSBB = it.t, it.sbb
	}
	for i := range b.run {
		it := &b.run[i]
		switch {
		case it.hole > 0:
			b.addHole(c, it.dir == srv, it.off, it.hole)
		case it.dir == cli:
			b.addChunk(c, it)
		default:
			b.addServer(c, it.off, it.data, it.t)
		}
		*it = item{}
	}
	b.run = b.run[:0]
}

// flush gives up every remaining gap: buffered pieces are delivered after
// holes, and bytes the peer acknowledged beyond the last captured one
// become a trailing hole.
func (b *Builder) flush(c *conn) {
	for d := range c.h {
		h := &c.h[d]
		if !h.known {
			continue
		}
		for len(h.ooo) > 0 {
			b.hole(c, d, int64(seqDiff(h.ooo[0].seq, h.next)))
			b.drain(c, d)
		}
		if h.fin && seqGT(h.finSeq, h.next) && (!h.peerAckValid || seqGT(h.finSeq, h.peerAck)) {
			// The FIN's sequence number says bytes were sent before it
			// that the capture lost, acknowledged or not.
			b.hole(c, d, int64(seqDiff(h.finSeq, h.next)))
			continue
		}
		if h.peerAckValid {
			limit := h.peerAck
			gap := seqDiff(limit, h.next)
			if h.fin {
				if seqGT(limit, h.finSeq) {
					limit = h.finSeq
				}
				gap = seqDiff(limit, h.next)
			} else {
				// An acknowledgment one past the last byte seen is most
				// likely for a FIN the capture missed, not for a lost
				// byte: a one-byte tail is not taken as a hole.
				if gap == 1 {
					gap = 0
				}
			}
			if gap > 0 && gap < 1<<30 {
				b.hole(c, d, int64(gap))
			}
		}
	}
	b.commit(c)
}

// maxChunkBytes bounds the chunk that merging builds: a burst of client data
// becomes chunks of at most this size (more when one segment is larger),
// each with the time of its first segment, written back to back by the
// replay. Without a bound, a 256 MB upload captured within the merge window
// grew one slice by append's 1.25 factor: five copies of every byte, and
// two thirds of the replayer's CPU in the bench's bulk workload.
const maxChunkBytes = 1 << 20

// appendChunk appends data to a merged chunk, doubling its capacity (up to
// maxChunkBytes) when it is full, so that each byte is copied about twice.
func appendChunk(chunk, data []byte) []byte {
	if n := len(chunk) + len(data); n > cap(chunk) {
		grown := make([]byte, len(chunk), min(max(2*cap(chunk), n), max(maxChunkBytes, n)))
		copy(grown, chunk)
		chunk = grown
	}
	return append(chunk, data...)
}
