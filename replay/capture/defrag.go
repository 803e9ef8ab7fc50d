package capture

import (
	"fmt"
	"net/netip"
	"time"
)

// Fragment reassembly limits. A capture is untrusted input and a long one
// may hold fragments that never complete (lost, cut by the snap length,
// crafted), so the state is bounded in count, bytes and capture time.
const (
	// fragMaxDatagrams bounds datagrams being reassembled at once; when a
	// new one would exceed it the oldest is dropped.
	fragMaxDatagrams = 1024
	// fragMaxBytes bounds the buffers of all datagrams in reassembly; when
	// a datagram must grow past it, the oldest others are dropped.
	fragMaxBytes = 32 << 20
	// fragTimeout is how long (in capture time) a datagram may wait for its
	// missing fragments: RFC 8200's 60 s reassembly timeout for IPv6, also
	// used for IPv4 (Linux uses 30 s; a capture is judged after the fact,
	// so the longer one loses less).
	fragTimeout = 60 * time.Second
	// maxDatagram is the largest reassembled IP payload: the 16-bit
	// fragment offset field (in 8-byte units) plus a last fragment.
	maxDatagram = 65535
	// fragMaxHoles bounds the separate received ranges of one datagram.
	fragMaxHoles = 256
)

// fragKey identifies the fragments of one datagram (RFC 791 and RFC 8200:
// source, destination, identification and, for IPv4, the protocol).
type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8 // IPv4 protocol; 0 for IPv6 (not part of its key)
}

type span struct{ start, end int }

type datagram struct {
	key   fragKey
	first time.Time // capture time of the first fragment seen
	buf   []byte    // reassembled payload so far; len = highest end seen
	have  []span    // received ranges, sorted, merged
	total int       // payload length, -1 until the last fragment arrived
	proto uint8     // upper-layer protocol (IPv6: from the offset-0 fragment)
	known bool      // proto is known (IPv6: offset-0 fragment seen)
}

// FragStats counts IP fragment handling.
type FragStats struct {
	Fragments   int64 // frames that carried a valid IP fragment of a TCP datagram
	Reassembled int64 // datagrams completed from fragments
	// Dropped counts datagrams given up: timed out, evicted by the limits,
	// inconsistent (overlapping ends, past 64 KiB), or still incomplete
	// when the capture ended.
	Dropped int64
}

// defragmenter reassembles IPv4 and IPv6 fragments with bounded state.
//
// It is written here rather than taken from gopacket's ip4defrag and
// ip6defrag because those work on decoded *layers.IPv4/IPv6 values (which
// the allocation-free fast path does not build) and bound neither the number
// of datagrams in flight nor their total size.
//
// Overlaps: the bytes received first win; a later fragment only fills
// ranges still missing. Captures are judged after the fact, so consistency
// matters more than mimicking one OS's policy.
type defragmenter struct {
	pending   map[fragKey]*datagram
	bytes     int // sum of cap(buf) of pending datagrams
	free      []*datagram
	done      *datagram // completed datagram whose payload was handed out
	lastSweep time.Time
	stats     FragStats
}

// release recycles the datagram whose payload the previous call returned;
// its bytes were valid only until now.
func (d *defragmenter) release() {
	if d.done != nil {
		d.recycle(d.done)
		d.done = nil
	}
}

func (d *defragmenter) recycle(g *datagram) {
	if len(d.free) < 16 && cap(g.buf) <= maxDatagram+8 {
		g.buf = g.buf[:0]
		g.have = g.have[:0]
		d.free = append(d.free, g)
	}
}

func (d *defragmenter) drop(g *datagram) {
	delete(d.pending, g.key)
	d.bytes -= cap(g.buf)
	d.stats.Dropped++
	d.recycle(g)
}

// add stores one fragment: data is its payload at byte offset off; more is
// the more-fragments flag. When proto is valid (IPv4 always; IPv6 only
// for the offset-0 fragment) known is true. It returns the whole payload
// and its protocol once the datagram is complete; the payload is valid until
// the next call to release.
func (d *defragmenter) add(k fragKey, now time.Time, off int, more bool, data []byte, proto uint8, known bool) (payload []byte, p uint8, complete bool, err error) {
	end := off + len(data)
	if end > maxDatagram {
		return nil, 0, false, fmt.Errorf("fragment at offset %d with %d bytes ends past 65535", off, len(data))
	}
	if more && len(data)%8 != 0 {
		return nil, 0, false, fmt.Errorf("non-final fragment of %d bytes (not a multiple of 8)", len(data))
	}
	d.stats.Fragments++
	if d.pending == nil {
		d.pending = make(map[fragKey]*datagram)
	}
	d.sweep(now)
	g := d.pending[k]
	if g == nil {
		for len(d.pending) >= fragMaxDatagrams {
			d.drop(d.oldest(nil))
		}
		if n := len(d.free); n > 0 {
			g = d.free[n-1]
			d.free = d.free[:n-1]
		} else {
			g = &datagram{}
		}
		g.key, g.first, g.total, g.known, g.proto = k, now, -1, false, 0
		d.pending[k] = g
		d.reserve(g, cap(g.buf)) // a recycled buffer counts at once
	}
	if known && !g.known {
		g.proto, g.known = proto, true
	}
	if !more {
		if g.total >= 0 && g.total != end || g.total < 0 && len(g.buf) > end {
			// Two different ends, or data past the end: unusable.
			d.drop(g)
			return nil, 0, false, nil
		}
		g.total = end
	} else if g.total >= 0 && end > g.total {
		d.drop(g)
		return nil, 0, false, nil
	}
	if end > len(g.buf) {
		if end > cap(g.buf) {
			// Grow to the final size at once when it is known; else to
			// the end of this fragment rounded up, to limit copies.
			c := end
			if g.total > c {
				c = g.total
			}
			if c < 2048 {
				c = 2048
			}
			nb := make([]byte, end, c)
			copy(nb, g.buf)
			d.reserve(g, cap(nb)-cap(g.buf))
			g.buf = nb
		} else {
			g.buf = g.buf[:end]
		}
	}
	g.fill(off, data)
	if len(g.have) > fragMaxHoles {
		// Hundreds of separate pieces: crafted, and each insertion
		// costs a copy of the list.
		d.drop(g)
		return nil, 0, false, nil
	}
	if g.total < 0 || !g.known || len(g.have) != 1 || g.have[0].start != 0 || g.have[0].end != g.total {
		return nil, 0, false, nil
	}
	delete(d.pending, k)
	d.bytes -= cap(g.buf)
	d.done = g
	d.stats.Reassembled++
	return g.buf[:g.total], g.proto, true, nil
}

// fill copies data at off into the ranges not yet received and merges the
// range into have.
func (g *datagram) fill(off int, data []byte) {
	end := off + len(data)
	pos := off
	for _, s := range g.have {
		if s.end <= pos {
			continue
		}
		if s.start >= end {
			break
		}
		if s.start > pos {
			copy(g.buf[pos:s.start], data[pos-off:])
		}
		pos = s.end
		if pos >= end {
			break
		}
	}
	if pos < end {
		copy(g.buf[pos:end], data[pos-off:])
	}
	// Insert [off,end) and merge neighbours.
	i := 0
	for i < len(g.have) && g.have[i].end < off {
		i++
	}
	j := i
	ns := span{off, end}
	for j < len(g.have) && g.have[j].start <= end {
		if g.have[j].start < ns.start {
			ns.start = g.have[j].start
		}
		if g.have[j].end > ns.end {
			ns.end = g.have[j].end
		}
		j++
	}
	if i == j {
		g.have = append(g.have, span{})
		copy(g.have[i+1:], g.have[i:])
		g.have[i] = ns
		return
	}
	g.have[i] = ns
	g.have = append(g.have[:i+1], g.have[j:]...)
}

// reserve accounts extra buffer bytes for g, first dropping the oldest
// other datagrams while the total would pass fragMaxBytes.
func (d *defragmenter) reserve(g *datagram, extra int) {
	for d.bytes+extra > fragMaxBytes && len(d.pending) > 1 {
		d.drop(d.oldest(g))
	}
	d.bytes += extra
}

// oldest returns the pending datagram that started first, other than
// except.
func (d *defragmenter) oldest(except *datagram) *datagram {
	var o *datagram
	for _, g := range d.pending {
		if g != except && (o == nil || g.first.Before(o.first)) {
			o = g
		}
	}
	return o
}

// sweep drops datagrams older than fragTimeout, at most once per second of
// capture time so that the scan stays cheap.
func (d *defragmenter) sweep(now time.Time) {
	if now.Sub(d.lastSweep) < time.Second && !now.Before(d.lastSweep) {
		return
	}
	d.lastSweep = now
	for _, g := range d.pending {
		if now.Sub(g.first) > fragTimeout {
			d.drop(g)
		}
	}
}

// flush gives up every pending datagram (end of capture).
func (d *defragmenter) flush() {
	for _, g := range d.pending {
		d.drop(g)
	}
}
