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
// The side that is ahead keeps its bytes from F on until the other side
// catches up and they are compared; the behind side's new bytes are
// compared as they come, straight from the caller's slice, and not kept.
//
// The two sides keep their bytes differently. The captured side (caps)
// keeps references to the slices Captured was given, which the replay
// never modifies and lets an observer keep until Done: it copies nothing
// (bar segments shorter than smallSeg, see segs). The answer's side (rep)
// must copy what it keeps, for Received's buffer is reused. Either holds
// at most bound bytes: what an ahead side sends beyond that is dropped (a
// gap), and when the other side reaches a gap those bytes go uncompared
// (skipped). (A reference pins its whole segment: the captured side holds
// references to at most bound bytes, which pin at most the unkept rest of
// the segments at its two ends besides, less than two segments.)
//
// Two cases pin more than the lead:
//   - recording (the volatile-HTTP check may still be needed): the captured
//     side keeps the whole captured stream from offset 0 (at most bound
//     bytes: recording stops beyond), and once the streams differ the
//     answer's store keeps the answer from the first difference on. Before a
//     difference the answer is the captured stream's prefix, so it is not
//     copied (the lazy recording of before). Contiguous copies of the two
//     answers are made only at Done, and only when the check runs (the
//     answers differ and the captured one is HTTP): capturedWhole, answer.
//   - after the first difference without recording, both sides keep only
//     the snippetLen bytes from it, for the excerpts.
type comparer struct {
	limit int // Options.RecordLimit: the longest answers recorded
	bound int // bytes one side may hold: limit, at least an excerpt
	// end is each stream's offset reached so far: the captured stream by
	// sequence space (holes included), the answer's byte count.
	end      [2]int64
	capBytes int64 // captured bytes received (holes skipped)
	caps     segs  // the captured side's bytes kept: references
	rep      store // the answer's bytes kept: copies
	// firstDiff is the stream offset of the first byte that differs; -1
	// none found.
	firstDiff int64
	// holes: the captured stream jumped over bytes that were not captured.
	holes bool
	// skipped: some bytes of the streams went uncompared where both had
	// them, because a side had dropped them (beyond bound) or a hole.
	skipped bool
	// dropped: an ahead side outran bound and bytes were not kept.
	dropped bool
	// recording: both answers are still kept whole for the volatile check
	// (captured is in caps from 0; the answer is the captured prefix up to
	// firstDiff and rep from there).
	recording bool
	// http: the captured stream starts with "HTTP/1.".
	http bool
}

func newComparer(limit int, record bool) comparer {
	return comparer{limit: limit, bound: max(limit, snippetLen), firstDiff: -1, recording: record}
}

// captured takes captured server bytes at stream offset off. p is the
// replay's own copy, never modified: the comparer may keep it, uncopied,
// until release.
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

// received takes the next bytes of the answer. p is only valid during the
// call: what is kept of it is copied.
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
	lo, hi := c.window(capSide)
	c.caps.keep(lo, hi)
	lo, hi = c.window(repSide)
	c.rep.keep(lo, hi)
	// Keep what the other side has yet to meet (or what is pinned).
	lo, hi = c.window(x)
	lo, hi = max(lo, off), min(hi, end)
	if lo >= hi {
		return
	}
	q := p[lo-off : hi-off]
	held := c.rep.held()
	if x == capSide {
		held = c.caps.held()
	}
	if room := c.bound - held; len(q) > room {
		// Recording never gets here: it stops before a side could
		// outgrow bound.
		q = q[:max(room, 0)]
		c.dropped = true
	}
	if x == capSide {
		c.caps.add(lo, q, len(p) < smallSeg)
	} else {
		c.rep.add(lo, q)
	}
}

// window is the range of side s's stream it keeps.
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
// with what side y keeps, and sets firstDiff at the first byte that
// differs. Bytes of [off, lim) side y does not hold are skipped.
func (c *comparer) compare(y int, off int64, p []byte, lim int64) {
	if lim <= off {
		return
	}
	pos := off
	if y == capSide {
		for _, s := range c.caps.from(pos) {
			if c.against(&pos, off, p, lim, s.off, s.data) {
				break
			}
		}
	} else {
		idx := c.rep.head
		for _, r := range c.rep.runs {
			if c.against(&pos, off, p, lim, r.off, c.rep.buf[idx:idx+r.n]) {
				break
			}
			idx += r.n
		}
	}
	if c.firstDiff < 0 && pos < lim {
		c.skipped = true
	}
}

// against compares p (bytes at stream offset off) from *pos up to lim with
// b, bytes held at stream offset bOff (a run of the other side, in stream
// order after what *pos has passed), and advances *pos past them. It
// reports true when the comparison is over: a difference was found
// (firstDiff), or b starts at or after lim.
func (c *comparer) against(pos *int64, off int64, p []byte, lim, bOff int64, b []byte) bool {
	bEnd := bOff + int64(len(b))
	if bOff >= lim {
		return true
	}
	if bEnd <= *pos {
		return false
	}
	if bOff > *pos {
		c.skipped = true
		*pos = bOff
	}
	hi := min(bEnd, lim)
	if i := mismatch(p[*pos-off:hi-off], b[*pos-bOff:hi-bOff]); i >= 0 {
		c.firstDiff = *pos + int64(i)
		return true
	}
	*pos = hi
	return false
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
// as far as they are contiguous in what it keeps.
func (c *comparer) excerpt(s int, off int64) []byte {
	if s == capSide {
		return c.caps.at(off, snippetLen)
	}
	return c.rep.at(off, snippetLen)
}

// answer returns the whole answer as recorded, if it was: the captured
// stream capd (from capturedWhole) up to the first difference (or to where
// one stream ended) and the answer's own bytes from there.
func (c *comparer) answer(capd []byte) ([]byte, bool) {
	if !c.recording || int64(len(capd)) != c.end[capSide] {
		return nil, false
	}
	n := c.end[repSide]
	m := min(n, c.end[capSide])
	if c.firstDiff >= 0 {
		m = c.firstDiff
	}
	if m == n {
		return capd[:m:m], true // a prefix of the captured stream
	}
	rest := c.rep.at(m, int(n-m))
	if int64(len(rest)) != n-m {
		return nil, false
	}
	b := make([]byte, 0, n)
	b = append(b, capd[:m]...)
	return append(b, rest...), true
}

// capturedWhole returns the captured stream as recorded, if it was, in one
// slice: built from the references kept (one copy, at Done), or the one
// segment it came in.
func (c *comparer) capturedWhole() ([]byte, bool) {
	if !c.recording || c.holes {
		return nil, false
	}
	return c.caps.contiguous(0, c.end[capSide])
}

// release drops what both sides keep.
func (c *comparer) release() { c.caps, c.rep = segs{}, store{} }

// segs holds the captured bytes a comparer keeps, in stream order, each
// run at its stream offset: references to the slices Captured was given,
// never copies. Bytes are added in stream order and dropped from either end
// by reslicing; a run no longer kept is cleared at once, so a segment stays
// pinned only while some of its bytes are kept (the kept bytes, at most the
// comparer's bound, pin at most the rest of the two segments at their ends
// besides).
//
// A segment shorter than smallSeg is the exception: its bytes are copied
// into a chunk the comparer owns, shared with the small segments right
// after it, because a reference (a seg, 40 bytes) to its own allocation
// would cost many times its bytes when a capture comes in tiny segments (an
// interactive session: one echoed keystroke a segment).
type segs struct {
	s    []seg // the runs kept: s[head:]
	head int
	n    int // bytes kept
}

// seg is a run of captured bytes at stream offset off. own: data is in a
// chunk the comparer allocated (its spare capacity may be appended to);
// otherwise data is the replay's, never written.
type seg struct {
	off  int64
	data []byte
	own  bool
}

const (
	// smallSeg: captured segments shorter than this are copied into owned
	// chunks rather than referenced; consecutive ones share a chunk, which
	// grows by appending up to smallChunk bytes.
	smallSeg   = 64
	smallChunk = 512
	// firstSegs is the list's first capacity: a keep-alive session's
	// answers arrive as tens of segments. An emptied list longer than
	// releaseSegs (40 KiB) is given back, as the answer's store gives back
	// a buffer beyond releaseCap.
	firstSegs   = 16
	releaseSegs = 1 << 10
)

func (s *segs) held() int { return s.n }

// live returns the runs kept.
func (s *segs) live() []seg { return s.s[s.head:] }

// from returns the runs kept from the one holding stream offset pos (or the
// first after it) on.
func (s *segs) from(pos int64) []seg {
	l := s.live()
	i, j := 0, len(l)
	for i < j {
		h := int(uint(i+j) >> 1)
		if l[h].off+int64(len(l[h].data)) <= pos {
			i = h + 1
		} else {
			j = h
		}
	}
	return l[i:]
}

// add keeps p at stream offset off, at or after the last byte kept: by
// reference, or copied when small (the segment p comes from is shorter
// than smallSeg).
func (s *segs) add(off int64, p []byte, small bool) {
	if len(p) == 0 {
		return
	}
	s.n += len(p)
	if small {
		if k := len(s.s) - 1; k >= s.head {
			if last := &s.s[k]; last.own && last.off+int64(len(last.data)) == off && len(last.data) < smallChunk {
				// The chunk and its spare room are the comparer's own:
				// appending (or growing it) writes nothing of the
				// replay's.
				last.data = append(last.data, p...)
				return
			}
		}
		p = append([]byte(nil), p...)
	}
	if s.head > 0 && len(s.s) == cap(s.s) {
		// Reuse the room freed at the front before growing.
		n := copy(s.s, s.s[s.head:])
		clear(s.s[n:])
		s.s, s.head = s.s[:n], 0
	}
	if s.s == nil {
		s.s = make([]seg, 0, firstSegs)
	}
	s.s = append(s.s, seg{off, p, small})
}

// keep drops the bytes outside stream offsets [lo, hi).
func (s *segs) keep(lo, hi int64) {
	for s.head < len(s.s) && s.s[s.head].off < lo {
		r := &s.s[s.head]
		cut := min(int64(len(r.data)), lo-r.off)
		s.n -= int(cut)
		if cut == int64(len(r.data)) {
			*r = seg{}
			s.head++
			continue
		}
		r.off += cut
		r.data = r.data[cut:]
	}
	for s.head < len(s.s) {
		k := len(s.s) - 1
		r := &s.s[k]
		e := r.off + int64(len(r.data))
		if e <= hi {
			break
		}
		cut := min(int64(len(r.data)), e-hi)
		s.n -= int(cut)
		if cut == int64(len(r.data)) {
			*r = seg{}
			s.s = s.s[:k]
			continue
		}
		r.data = r.data[:len(r.data)-int(cut)]
	}
	if s.head == len(s.s) {
		s.s, s.head = s.s[:0], 0
		if cap(s.s) > releaseSegs {
			s.s = nil // a lead caught up: give a long list back
		}
	}
}

// at returns up to n bytes kept from stream offset off, as far as they are
// contiguous (nil when off is not kept). The result may alias a run.
func (s *segs) at(off int64, n int) []byte {
	l := s.from(off)
	if len(l) == 0 || l[0].off > off {
		return nil
	}
	b := l[0].data[off-l[0].off:]
	if len(b) >= n {
		return b[:n]
	}
	out := append(make([]byte, 0, n), b...)
	end := l[0].off + int64(len(l[0].data))
	for _, r := range l[1:] {
		if r.off != end || len(out) == n {
			break
		}
		out = append(out, r.data[:min(len(r.data), n-len(out))]...)
		end += int64(len(r.data))
	}
	return out
}

// contiguous returns the bytes of stream offsets [lo, hi) in one slice if
// they are all kept: the run itself when one holds them, else a copy.
func (s *segs) contiguous(lo, hi int64) ([]byte, bool) {
	if hi <= lo {
		return nil, hi == lo
	}
	l := s.from(lo)
	if len(l) == 0 || l[0].off > lo {
		return nil, false
	}
	if r := l[0]; r.off+int64(len(r.data)) >= hi {
		return r.data[lo-r.off : hi-r.off], true
	}
	b := make([]byte, 0, hi-lo)
	pos := lo
	for i, r := range l {
		if i > 0 && r.off != pos {
			return nil, false // a gap
		}
		d := r.data[pos-r.off:]
		d = d[:min(int64(len(d)), hi-pos)]
		b = append(b, d...)
		if pos += int64(len(d)); pos == hi {
			return b, true
		}
	}
	return nil, false
}

// store holds the answer's bytes at their stream offsets, copied (Received's
// buffer is reused): runs of bytes back to back in buf[head:], each run
// placed by its offset. Bytes are added in stream order and dropped from
// either end.
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
