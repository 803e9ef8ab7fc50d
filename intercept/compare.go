package intercept

import (
	"bytes"
	"strconv"
)

// Match classifies the target's answer against the captured server stream.
type Match uint8

const (
	// Identical: every byte the same, same length.
	Identical Match = iota
	// Volatile: the answers differ only in the values of volatile HTTP
	// headers (Date, Server, ETag, Last-Modified, Expires, Age, Set-Cookie
	// values by default): the same answer on another day.
	Volatile
	// SameLength: as many bytes as captured, but different ones.
	SameLength
	// Different: a different length (and maybe different bytes).
	Different
	// Missing: the target sent nothing where the captured server had sent
	// something.
	Missing
	// NotComparable: the captured server stream is incomplete (holes, snap
	// length, the builder's size limit, or the replay ended before the
	// capture did), the session was canceled, or part of the streams could
	// not be compared (one ran ahead of the other by more than
	// Options.RecordLimit) without a difference in the rest, so no verdict;
	// Row.CapturedMatch tells whether the parts compared agreed.
	NotComparable
	// NotReplayed: the session never connected (refused, dial timeout,
	// canceled); its outcome says why.
	NotReplayed
)

var matchNames = [...]string{"identical", "volatile", "same-length", "different", "missing", "not-comparable", "not-replayed"}

// String returns the class's name as used in the report.
func (m Match) String() string {
	if int(m) < len(matchNames) {
		return matchNames[m]
	}
	return "unknown"
}

// DefaultVolatileHeaders are the HTTP response headers whose values change
// from one day or deployment to the next without the answer being different.
var DefaultVolatileHeaders = []string{"date", "server", "etag", "last-modified", "expires", "age", "set-cookie"}

// snippetLen bounds the excerpts around a first difference.
const snippetLen = 32

// httpPrefix is how a captured answer starts for the volatile check to apply.
const httpPrefix = "HTTP/1."

// The two streams a comparer follows.
const (
	capSide = 0 // the captured server stream (Captured)
	repSide = 1 // the target's answer (Received)
)

// noEnd is an unbounded window end.
const noEnd = int64(1<<63 - 1)

// comparer compares the target's answer with the captured server stream
// while both arrive, in any interleaving, without holding either whole.
//
// The frontier F = min(end[capSide], end[repSide]) is how far both streams
// have arrived. Below F every byte present on both sides has been compared
// (bytes in a server hole have no captured counterpart and are skipped).
// The side that is ahead keeps its bytes from F on in its store until the
// other side catches up and they are compared; the behind side's new bytes
// are compared as they come, straight from the caller's buffer, and not
// kept. A store holds at most bound bytes: what an ahead side sends beyond
// that is dropped (a gap in the store), and when the other side reaches a
// gap those bytes go uncompared (skipped).
//
// Two cases pin more than the lead:
//   - recording (the volatile-HTTP check may still be needed): the captured
//     store keeps the whole captured stream from offset 0 (at most bound
//     bytes: recording stops beyond), and once the streams differ the
//     answer's store keeps the answer from the first difference on. Before a
//     difference the answer is the captured stream's prefix, so it is not
//     copied (the lazy recording of before).
//   - after the first difference without recording, both stores keep only
//     the snippetLen bytes from it, for the excerpts.
type comparer struct {
	limit int // Options.RecordLimit: the longest answers recorded
	bound int // bytes one store may hold: limit, at least an excerpt
	// end is each stream's offset reached so far: the captured stream by
	// sequence space (holes included), the answer's byte count.
	end      [2]int64
	capBytes int64 // captured bytes received (holes skipped)
	st       [2]store
	// firstDiff is the stream offset of the first byte that differs; -1
	// none found.
	firstDiff int64
	// holes: the captured stream jumped over bytes that were not captured.
	holes bool
	// skipped: some bytes of the streams went uncompared where both had
	// them, because a store had dropped them (beyond bound) or a hole.
	skipped bool
	// dropped: an ahead side outran bound and bytes were not kept.
	dropped bool
	// recording: both answers are still kept whole for the volatile check
	// (captured is in st[capSide] from 0; the answer is the captured prefix
	// up to firstDiff and st[repSide] from there).
	recording bool
	// http: the captured stream starts with "HTTP/1.".
	http bool
}

func newComparer(limit int, record bool) comparer {
	return comparer{limit: limit, bound: max(limit, snippetLen), firstDiff: -1, recording: record}
}

// captured takes captured server bytes at stream offset off.
func (c *comparer) captured(off int64, p []byte) {
	if e := c.end[capSide]; off < e { // overlap: not in the contract; keep the new part
		p = p[min(int64(len(p)), e-off):]
		off = e
	}
	if len(p) == 0 {
		return
	}
	if off > c.end[capSide] {
		c.holes = true
		c.recording = false
	}
	c.capBytes += int64(len(p))
	if c.recording && off < int64(len(httpPrefix)) {
		// Recording implies no hole so far: p continues the prefix.
		k := min(len(p), len(httpPrefix)-int(off))
		if string(p[:k]) != httpPrefix[off:off+int64(k)] {
			c.recording = false
		} else if off+int64(k) == int64(len(httpPrefix)) {
			c.http = true
		}
	}
	c.feed(capSide, off, p)
}

// received takes the next bytes of the answer.
func (c *comparer) received(p []byte) {
	if len(p) > 0 {
		c.feed(repSide, c.end[repSide], p)
	}
}

// feed handles the bytes p of side x at stream offset off (not below
// end[x]).
func (c *comparer) feed(x int, off int64, p []byte) {
	y := 1 - x
	end := off + int64(len(p))
	if c.firstDiff < 0 {
		// The part the other side has reached is compared now.
		c.compare(y, off, p, min(end, c.end[y]))
	}
	c.end[x] = end
	if c.recording && (c.end[capSide] > int64(c.limit) || c.end[repSide] > int64(c.limit)) {
		c.recording = false
	}
	for s := range c.st {
		lo, hi := c.window(s)
		c.st[s].keep(lo, hi)
	}
	// Keep what the other side has yet to meet (or what is pinned).
	lo, hi := c.window(x)
	lo, hi = max(lo, off), min(hi, end)
	if lo >= hi {
		return
	}
	q := p[lo-off : hi-off]
	if room := c.bound - c.st[x].held(); len(q) > room {
		// Recording never gets here: it stops before a store could
		// outgrow bound.
		q = q[:max(room, 0)]
		c.dropped = true
	}
	c.st[x].add(lo, q)
}

// window is the range of side s's stream its store keeps.
func (c *comparer) window(s int) (lo, hi int64) {
	switch {
	case c.recording && s == capSide:
		return 0, noEnd
	case c.firstDiff >= 0 && c.recording:
		return c.firstDiff, noEnd
	case c.firstDiff >= 0:
		return c.firstDiff, c.firstDiff + snippetLen
	}
	return min(c.end[capSide], c.end[repSide]), noEnd
}

// compare compares p (side x's bytes at offset off) up to stream offset lim
// with side y's store, and sets firstDiff at the first byte that differs.
// Bytes of [off, lim) the store does not hold are skipped.
func (c *comparer) compare(y int, off int64, p []byte, lim int64) {
	if lim <= off {
		return
	}
	st := &c.st[y]
	pos, idx := off, st.head
	for _, r := range st.runs {
		rEnd := r.off + int64(r.n)
		if r.off >= lim {
			break
		}
		if rEnd > pos {
			if r.off > pos {
				c.skipped = true
				pos = r.off
			}
			hi := min(rEnd, lim)
			a := p[pos-off : hi-off]
			b := st.buf[idx+int(pos-r.off) : idx+int(hi-r.off)]
			if i := mismatch(a, b); i >= 0 {
				c.firstDiff = pos + int64(i)
				return
			}
			pos = hi
		}
		idx += r.n
	}
	if pos < lim {
		c.skipped = true
	}
}

// mismatch returns the index of the first byte where a and b (of equal
// length) differ, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	i := 0
	for a[i] == b[i] {
		i++
	}
	return i
}

// excerpt returns up to snippetLen bytes of side s from stream offset off,
// as far as they are contiguous in its store.
func (c *comparer) excerpt(s int, off int64) []byte {
	return c.st[s].at(off, snippetLen)
}

// answer returns the whole answer as recorded, if it was: the captured
// stream up to the first difference (or to where one stream ended) and the
// answer's own bytes from there.
func (c *comparer) answer() ([]byte, bool) {
	if !c.recording {
		return nil, false
	}
	capd, ok := c.capturedWhole()
	if !ok {
		return nil, false
	}
	n := c.end[repSide]
	m := min(n, c.end[capSide])
	if c.firstDiff >= 0 {
		m = c.firstDiff
	}
	rest := c.st[repSide].at(m, int(n-m))
	if int64(len(rest)) != n-m {
		return nil, false
	}
	b := make([]byte, 0, n)
	b = append(b, capd[:m]...)
	return append(b, rest...), true
}

// capturedWhole returns the captured stream as recorded, if it was.
func (c *comparer) capturedWhole() ([]byte, bool) {
	if !c.recording || c.holes {
		return nil, false
	}
	b := c.st[capSide].at(0, int(c.end[capSide]))
	return b, int64(len(b)) == c.end[capSide]
}

// release drops the stores.
func (c *comparer) release() { c.st = [2]store{} }

// store holds bytes of one stream at their stream offsets: runs of bytes
// back to back in buf[head:], each run placed by its offset. Bytes are
// added in stream order and dropped from either end.
type store struct {
	buf  []byte
	head int
	runs []span
}

// releaseCap: an emptied store keeps a buffer up to this size for the next
// lead, and gives a larger one back.
const releaseCap = 64 << 10

// span is a run of n bytes of a store at stream offset off.
type span struct {
	off int64
	n   int
}

func (s *store) held() int { return len(s.buf) - s.head }

// add appends p at stream offset off, at or after the last byte held.
func (s *store) add(off int64, p []byte) {
	if len(p) == 0 {
		return
	}
	if k := len(s.runs) - 1; k >= 0 && s.runs[k].off+int64(s.runs[k].n) == off {
		s.runs[k].n += len(p)
	} else {
		s.runs = append(s.runs, span{off, len(p)})
	}
	if s.head > 0 && len(s.buf)+len(p) > cap(s.buf) {
		// Reuse the room freed at the front before growing.
		s.buf = s.buf[:copy(s.buf, s.buf[s.head:])]
		s.head = 0
	}
	s.buf = append(s.buf, p...)
}

// keep drops the bytes outside stream offsets [lo, hi).
func (s *store) keep(lo, hi int64) {
	for len(s.runs) > 0 && s.runs[0].off < lo {
		r := &s.runs[0]
		cut := min(int64(r.n), lo-r.off)
		s.head += int(cut)
		r.off += cut
		r.n -= int(cut)
		if r.n == 0 {
			s.runs = s.runs[1:]
		}
	}
	for len(s.runs) > 0 {
		k := len(s.runs) - 1
		r := &s.runs[k]
		e := r.off + int64(r.n)
		if e <= hi {
			break
		}
		cut := min(int64(r.n), e-hi)
		s.buf = s.buf[:len(s.buf)-int(cut)]
		r.n -= int(cut)
		if r.n == 0 {
			s.runs = s.runs[:k]
		}
	}
	if len(s.runs) == 0 {
		s.buf, s.head, s.runs = s.buf[:0], 0, s.runs[:0]
		if cap(s.buf) > releaseCap {
			s.buf = nil // a lead caught up: give a large buffer back
		}
	}
}

// at returns up to n bytes held from stream offset off, as far as they are
// contiguous (nil when off is not held). The result aliases the store.
func (s *store) at(off int64, n int) []byte {
	idx := s.head
	for _, r := range s.runs {
		if off >= r.off && off < r.off+int64(r.n) {
			b := s.buf[idx+int(off-r.off) : idx+r.n]
			return b[:min(len(b), n)]
		}
		idx += r.n
	}
	return nil
}

// normalizeHTTP parses b as a sequence of HTTP/1.x responses and returns it
// with the values of volatile headers blanked (Set-Cookie keeps the cookie's
// name). Bodies are kept verbatim, framed by Content-Length or chunked
// encoding (or to the end). ok is false when b does not start like an HTTP
// response at a response boundary. Both sides of a comparison go through the
// same function, so the exact output form does not matter, only that
// volatile values vanish and nothing else does.
func normalizeHTTP(b []byte, volatile map[string]bool) (out []byte, ok bool) {
	out = make([]byte, 0, len(b))
	for len(b) > 0 {
		if !bytes.HasPrefix(b, []byte("HTTP/1.")) {
			return nil, false
		}
		he := bytes.Index(b, []byte("\r\n\r\n"))
		head := b
		if he >= 0 {
			head = b[:he+4]
		}
		b = b[len(head):]
		status, clen, chunked := -1, int64(-1), false
		for i, line := range bytes.SplitAfter(head, []byte("\r\n")) {
			if i == 0 {
				if f := bytes.Fields(line); len(f) >= 2 {
					if v, err := strconv.Atoi(string(f[1])); err == nil {
						status = v
					}
				}
				out = append(out, line...)
				continue
			}
			name, value, found := bytes.Cut(line, []byte(":"))
			if !found {
				out = append(out, line...)
				continue
			}
			lname := string(bytes.ToLower(bytes.TrimSpace(name)))
			v := bytes.TrimSpace(value)
			switch lname {
			case "content-length":
				if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && n >= 0 {
					clen = n
				}
			case "transfer-encoding":
				chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
			}
			if !volatile[lname] {
				out = append(out, line...)
				continue
			}
			out = append(out, name...)
			out = append(out, ':')
			if lname == "set-cookie" {
				if cname, _, ok := bytes.Cut(v, []byte("=")); ok {
					out = append(out, cname...)
				}
			}
			out = append(out, "\r\n"...)
		}
		if he < 0 {
			break
		}
		body := int64(len(b))
		switch {
		case status/100 == 1 || status == 204 || status == 304:
			body = 0
		case chunked:
			if n := chunkedLen(b); n >= 0 {
				body = n
			}
		case clen >= 0:
			body = min(clen, body)
		}
		out = append(out, b[:body]...)
		b = b[body:]
	}
	return out, true
}

// chunkedLen returns the length of the chunked body at the start of b,
// trailers included, or -1 when b ends inside it.
func chunkedLen(b []byte) int64 {
	var pos int64
	for {
		le := bytes.Index(b[pos:], []byte("\r\n"))
		if le < 0 {
			return -1
		}
		sz := b[pos : pos+int64(le)]
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		if err != nil || n < 0 {
			return -1
		}
		pos += int64(le) + 2
		if n == 0 {
			// Trailers, up to an empty line.
			for {
				le := bytes.Index(b[pos:], []byte("\r\n"))
				if le < 0 {
					return -1
				}
				pos += int64(le) + 2
				if le == 0 {
					return pos
				}
			}
		}
		if pos+n+2 > int64(len(b)) {
			return -1
		}
		pos += n + 2
	}
}
