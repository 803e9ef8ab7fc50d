package session

import "time"

// Sequence numbers are compared modulo 2^32 (RFC 1982 serial arithmetic):
// a is after b when the signed 32-bit difference is positive. This is what
// makes streams that wrap around 2^32 work; it assumes that nothing compared
// is more than 2 GiB apart, which holds for bytes within one window.
func seqDiff(a, b uint32) int32 { return int32(a - b) }
func seqGT(a, b uint32) bool    { return seqDiff(a, b) > 0 }
func seqGE(a, b uint32) bool    { return seqDiff(a, b) >= 0 }

// piece is a range of one direction's sequence space: captured bytes
// followed by bytes that were on the wire but not captured (snap length).
type piece struct {
	seq     uint32
	data    []byte
	missing int
	t       time.Time // capture time of the segment that carried it
	sbb     int64     // client pieces: server bytes the client had when it sent them
}

func (p *piece) len() int { return len(p.data) + p.missing }

// end is the sequence number after the piece.
func (p *piece) end() uint32 { return p.seq + uint32(p.len()) }

// trimFront drops the first k bytes of sequence space (0 < k < p.len()).
func (p *piece) trimFront(k int) {
	if k <= len(p.data) {
		p.data = p.data[k:]
	} else {
		p.missing -= k - len(p.data)
		p.data = p.data[:0]
	}
	p.seq += uint32(k)
}

// keep cuts the piece down to its first n bytes of sequence space.
func (p *piece) keep(n int) {
	if n <= len(p.data) {
		p.data = p.data[:n]
		p.missing = 0
		return
	}
	p.missing = n - len(p.data)
}

// half is the reassembly state of one direction of a connection.
//
// Bytes are delivered in sequence order exactly once: `next` is the first
// sequence number not delivered yet and `off` its stream offset. Segments
// ahead of `next` wait in `ooo` (sorted, non-overlapping, owned copies)
// until the gap before them is filled, acknowledged by the peer (then the
// capture missed bytes the peer received: a hole), or given up because the
// connection buffers too much.
type half struct {
	known  bool   // base, next and off are valid
	base   uint32 // sequence number of stream offset 0
	next   uint32 // next sequence number to deliver
	off    int64  // stream offset of next (64 bits: streams may exceed 4 GiB)
	maxEnd uint32 // highest end of sequence space seen (data and missing bytes)

	fin    bool   // a FIN was seen
	finSeq uint32 // its sequence number: no data at or beyond it

	peerAck      uint32 // highest acknowledgment the peer sent for this direction
	peerAckValid bool

	ooo []piece
}

func (h *half) init(base uint32) {
	*h = half{known: true, base: base, next: base, maxEnd: base, ooo: h.ooo[:0]}
}

// offOf converts a sequence number near next to a stream offset.
func (h *half) offOf(seq uint32) int64 { return h.off + int64(seqDiff(seq, h.next)) }

// sentEnd is the highest sequence number this direction has used, counting
// the FIN: a peer cannot acknowledge beyond it.
func (h *half) sentEnd() uint32 {
	if h.fin && seqGT(h.finSeq+1, h.maxEnd) {
		return h.finSeq + 1
	}
	return h.maxEnd
}

// closed: the FIN was seen and every byte before it has been delivered (or
// given up as a hole).
func (h *half) closed() bool { return h.fin && h.next == h.finSeq }

// acked reports whether the peer acknowledged everything before seq.
func (h *half) acked(seq uint32) bool { return h.peerAckValid && seqGE(h.peerAck, seq) }

// plausible reports whether a segment starting at seq can belong to this
// direction: at most maxAhead behind next (a retransmission, a keepalive)
// or beyond the receiver's position (what was delivered or acknowledged).
// A 4-tuple's previous or next incarnation has an unrelated ISN, so its
// packets almost never pass.
func (h *half) plausible(seq uint32) bool {
	pos := h.next
	if h.peerAckValid && seqGT(h.peerAck, pos) {
		pos = h.peerAck
	}
	return seqDiff(seq, h.next) >= -maxAhead && seqDiff(seq, pos) <= maxAhead
}

// insert adds p (ahead of next) to the out-of-order buffer, keeping the
// bytes that are already buffered where they overlap: the first copy seen
// wins, like the in-order path where delivered bytes are never replaced.
// It copies the parts it keeps and returns how many data bytes it added.
func (h *half) insert(p piece) (added int) {
	i := 0
	for i < len(h.ooo) && p.len() > 0 {
		q := &h.ooo[i]
		if seqGE(p.seq, q.end()) {
			i++
			continue
		}
		if seqGE(p.seq, q.seq) {
			// p starts inside q: drop what q already covers.
			n := int(seqDiff(q.end(), p.seq))
			if n >= p.len() {
				return added
			}
			p.trimFront(n)
			i++
			continue
		}
		// p starts before q: the part before q fills a gap.
		n := int(seqDiff(q.seq, p.seq))
		if n >= p.len() {
			break
		}
		front := p
		front.keep(n)
		front.data = clone(front.data)
		added += len(front.data)
		h.ooo = append(h.ooo, piece{})
		copy(h.ooo[i+1:], h.ooo[i:])
		h.ooo[i] = front
		i++ // now at q again
		p.trimFront(n)
	}
	if p.len() == 0 {
		return added
	}
	p.data = clone(p.data)
	added += len(p.data)
	h.ooo = append(h.ooo, piece{})
	copy(h.ooo[i+1:], h.ooo[i:])
	h.ooo[i] = p
	return added
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
