package intercept

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// The per-request comparison of one replayed copy of a session: its
// requests (the chunks as written), the captured answers and the target's,
// cut into requests and answers as they arrive and handed on one request
// at a time (reqRec). Only what is not yet paired is kept: each stream's
// undecoded rest, at most the Recorder's RecordLimit bytes per stream (a
// stream that outgrows it is not compared from there on), and at most
// maxQueue requests awaiting their answers (maxRequestShow bytes of each).
//
// HTTP/1.x and RESP are decoded message by message: the n-th answer
// answers the n-th request (HTTP 1xx interim answers are skipped). Other
// protocols are cut into turns: a turn is a run of chunks the client sent
// without waiting for the server, its answer what the server sent until
// the next turn (captured: up to the next turn's ServerBytesBefore;
// replayed: up to what had arrived when the next turn was written).

// reqRec is one request of one replayed copy, decoded and compared-ready.
type reqRec struct {
	idx    int
	route  string
	proto  string
	reqRaw []byte  // the request's first bytes (maxAnswerShow and one), for display
	reqKey uint64  // hash of the request's bytes: the same request replayed again has the same key
	rep    *answer // the copy's target's answer (nil: none)
	cap    *answer // the captured answer (nil: none)
	// lost: the answers could not be decoded whole (a hole, a stream over
	// the limit, a session cut short): no verdict.
	lost bool
}

// mark is when a stream's bytes up to end arrived (ns: capture time from
// the session start for the capture, the run's clock for the replay).
type mark struct {
	end int64
	at  int64
}

// stream is one side's bytes not yet decoded, from stream offset base:
// runs of bytes in order (segs). The captured side keeps references to
// the slices Captured was given (the replay's own, never modified); the
// answer's side copies (Received's buffer is reused). The runs are made
// one slice only when a message spans them (buf).
type stream struct {
	segs  [][]byte
	n     int // bytes held
	copy  bool
	base  int64
	marks []mark
	eof   bool
	lost  bool // bytes were lost (a hole, the limit), or do not decode: no more decoding
	// broken: lost because the bytes do not decode as the protocol (an
	// answer of its own, not a lack of data).
	broken bool
	// What ready learned, so that the same bytes are not parsed again:
	// the HTTP answer it decoded at base (peek, its length peekN), and
	// the end of the bytes it found incomplete (-1 none).
	peek       *httpMsg
	peekN      int
	peekBase   int64
	incomplete int64
}

func (s *stream) end() int64 { return s.base + int64(s.n) }

func (s *stream) add(off int64, p []byte, at int64, limit int) {
	if s.lost {
		return
	}
	if e := s.end(); off < e {
		p = p[min(int64(len(p)), e-off):]
		off = e
	}
	if off > s.end() || s.n+len(p) > limit {
		s.lost, s.segs, s.n, s.marks = true, nil, 0, nil
		return
	}
	if len(p) == 0 {
		return
	}
	switch k := len(s.segs) - 1; {
	case !s.copy:
		s.segs = append(s.segs, p)
	case k >= 0:
		s.segs[k] = append(s.segs[k], p...)
	default:
		s.segs = append(s.segs, append([]byte(nil), p...))
	}
	s.n += len(p)
	s.marks = append(s.marks, mark{s.end(), at})
}

// buf returns the bytes held as one slice (joining the runs if needed).
func (s *stream) buf() []byte {
	switch len(s.segs) {
	case 0:
		return nil
	case 1:
		return s.segs[0]
	}
	b := make([]byte, 0, s.n)
	for _, p := range s.segs {
		b = append(b, p...)
	}
	clear(s.segs)
	s.segs = append(s.segs[:0], b)
	return b
}

// timeAt is when the byte at stream offset off arrived (-1 unknown).
func (s *stream) timeAt(off int64) int64 {
	for _, m := range s.marks {
		if m.end > off {
			return m.at
		}
	}
	return -1
}

// consume drops the first n bytes.
func (s *stream) consume(n int) {
	s.base += int64(n)
	s.n -= n
	for n > 0 && len(s.segs) > 0 {
		if len(s.segs[0]) > n {
			s.segs[0] = s.segs[0][n:]
			break
		}
		n -= len(s.segs[0])
		s.segs[0] = nil
		s.segs = s.segs[1:]
	}
	if len(s.segs) == 0 {
		s.segs = nil
	}
	k := 0
	for k < len(s.marks) && s.marks[k].end <= s.base {
		k++
	}
	s.marks = s.marks[k:]
}

// drop gives the stream up: nothing more is decoded from it.
func (s *stream) drop() { s.lost, s.segs, s.n, s.marks = true, nil, 0, nil }

// pendReq is a request decoded from the client stream, awaiting its
// answers.
type pendReq struct {
	route, method string
	raw           []byte // the request's first bytes, for display
	key           uint64
	capAt, repAt  int64 // when its last byte was captured / written (ns)
	// turn mode: where its answer starts and ends in each stream (end -1:
	// not known yet).
	capFrom, capTo, repFrom, repTo int64
}

// tracker cuts one copy's streams into requests.
type tracker struct {
	rules    *Rules
	volatile map[string]bool
	limit    int
	emit     func(reqRec)

	proto    session.Protocol // "" until known
	server   netip.AddrPort
	cli      stream // client bytes as written
	cliCap   []mark // capture times of the client bytes (ns from session start)
	capS     stream
	repS     stream
	queue    []pendReq
	rulesFor map[string]*applied // the rules of each route seen, merged once
	next     int                 // requests emitted
	lastSB   int64               // turn mode: the last chunk's ServerBytesBefore
	turns    int
}

var reqSeed = maphash.MakeSeed()

func newTracker(r *Recorder, server netip.AddrPort, emit func(reqRec)) *tracker {
	t := &tracker{rules: r.opts.Rules, volatile: r.volatile, limit: r.opts.RecordLimit, emit: emit, server: server, lastSB: -1}
	t.repS.copy, t.cli.copy = true, false
	return t
}

func (t *tracker) captured(off int64, p []byte, at time.Duration) {
	ns := int64(-1)
	if at >= 0 {
		ns = int64(at)
	}
	t.capS.add(off, p, ns, t.limit)
	t.advance(false)
}

func (t *tracker) received(p []byte, at time.Time) {
	t.repS.add(t.repS.end(), p, at.UnixNano(), t.limit)
	t.advance(false)
}

// sent takes a chunk as written at time at.
func (t *tracker) sent(c session.Chunk, at time.Time) {
	if t.proto == "" {
		t.guess(c)
	}
	if t.proto != session.HTTP && t.proto != session.RESP {
		t.sentTurn(c, at)
		return
	}
	if c.StreamOffset > t.cli.end() {
		t.cli.lost = true // a hole in the requests: no more pairing
	}
	t.cli.add(c.StreamOffset, c.Data, at.UnixNano(), t.limit)
	t.cliCap = append(t.cliCap, mark{t.cli.end(), int64(c.Offset)})
	t.decodeRequests()
	t.advance(false)
}

// guess names the session's protocol as inspect does, from the first
// chunk and the captured answer's first bytes so far.
func (t *tracker) guess(c session.Chunk) {
	s := &session.Session{Server: t.server, Chunks: []session.Chunk{c}}
	if b := t.capS.buf(); t.capS.base == 0 && len(b) > 0 {
		s.ServerData = b[:min(len(b), 256)]
	}
	t.proto = session.Guess(s)
}

// sentTurn: a protocol not decoded; a chunk that waited for server bytes
// starts a new turn.
func (t *tracker) sentTurn(c session.Chunk, at time.Time) {
	ns := at.UnixNano()
	if len(t.queue) >= maxQueue {
		return // answers are not coming (see maxQueue): no more turns
	}
	if len(t.queue) == 0 || c.ServerBytesBefore > t.lastSB {
		if n := len(t.queue); n > 0 {
			q := &t.queue[n-1]
			q.capTo, q.repTo = c.ServerBytesBefore, t.repS.end()
		}
		t.turns++
		t.queue = append(t.queue, pendReq{
			route: "turn " + strconv.Itoa(t.turns), key: maphash.Bytes(reqSeed, c.Data),
			raw:     bytes.Clone(c.Data[:min(len(c.Data), maxRequestShow+1)]),
			capFrom: c.ServerBytesBefore, capTo: -1, repFrom: t.repS.end(), repTo: -1,
		})
		if t.turns == 1 && c.ServerBytesBefore > 0 {
			// The server spoke first: its greeting is a turn of its own.
			t.queue = append([]pendReq{{route: "greeting", capFrom: 0, capTo: c.ServerBytesBefore, repFrom: 0, repTo: t.repS.end(), capAt: 0, repAt: -1}}, t.queue...)
		}
	}
	t.lastSB = c.ServerBytesBefore
	q := &t.queue[len(t.queue)-1]
	q.capAt, q.repAt = int64(c.Offset), ns
	t.advance(false)
}

// Bounds on what one session's requests may hold while their answers are
// awaited.
const (
	maxRequestShow = 1 << 10 // bytes of a request kept for display
	// maxQueue bounds the requests awaiting their answers: past it (a
	// capture without the server's side, say) no more are decoded.
	maxQueue = 1024
)

// decodeRequests cuts the client bytes into requests.
func (t *tracker) decodeRequests() {
	for !t.cli.lost && t.cli.n > 0 {
		if len(t.queue) >= maxQueue {
			t.cli.drop()
			return
		}
		var q pendReq
		var n int
		var err error
		switch t.proto {
		case session.HTTP:
			var m *httpMsg
			m, n, err = parseHTTPRequest(t.cli.buf())
			if err == nil {
				q.method = m.method
				q.route = m.method + " " + foldPath(m.target)
			}
		case session.RESP:
			var words [][]byte
			words, n, err = parseRESPCommand(t.cli.buf())
			if err == nil {
				q.route = "(empty)"
				if len(words) > 0 {
					q.route = strings.ToUpper(escape(words[0], 32))
				}
			}
		}
		if err == errIncomplete {
			return
		}
		if err != nil {
			t.cli.lost = true
			return
		}
		raw := t.cli.buf()[:n]
		q.raw = bytes.Clone(raw[:min(len(raw), maxRequestShow+1)])
		q.key = maphash.Bytes(reqSeed, raw)
		last := t.cli.base + int64(n) - 1
		q.repAt = t.cli.timeAt(last)
		q.capAt = -1
		for _, m := range t.cliCap {
			if m.end > last {
				q.capAt = m.at
				break
			}
		}
		t.cli.consume(n)
		k := 0
		for k < len(t.cliCap) && t.cliCap[k].end <= t.cli.base {
			k++
		}
		t.cliCap = t.cliCap[k:]
		t.queue = append(t.queue, q)
	}
}

// advance pairs the requests with the answers that have arrived; final:
// the session is over, nothing more will come.
func (t *tracker) advance(final bool) {
	for len(t.queue) > 0 {
		q := &t.queue[0]
		var rec reqRec
		var ok bool
		if t.proto == session.HTTP || t.proto == session.RESP {
			rec, ok = t.pairMessage(q, final)
		} else {
			rec, ok = t.pairTurn(q, final)
		}
		if !ok {
			return
		}
		rec.idx, rec.route, rec.proto, rec.reqRaw, rec.reqKey = t.next, q.route, string(t.proto), q.raw, q.key
		t.next++
		t.queue = t.queue[1:]
		t.emit(rec)
	}
	if final && t.cli.lost {
		// Requests after a hole or a decoding failure are not paired.
		t.cli.drop()
	}
}

// side decodes the next answer of one stream for request q: the answer,
// done when the stream has said all it will for it (an answer, or none).
func (t *tracker) side(s *stream, q *pendReq, final, capture bool) (ans *answer, done bool) {
	if s.lost {
		return nil, true
	}
	a := t.applied(q.route)
	for {
		if s.n == 0 {
			return nil, final
		}
		b := s.buf()
		switch t.proto {
		case session.HTTP:
			m, n, err := s.peek, s.peekN, error(nil)
			if m == nil || s.peekBase != s.base {
				m, n, err = parseHTTPResponse(b, q.method, final)
			}
			s.peek = nil
			if err == errIncomplete {
				return nil, final
			}
			if err != nil {
				return t.broken(s, b, err, capture), true
			}
			if m.status/100 == 1 && m.status != 101 {
				s.consume(n) // interim: the final answer follows
				continue
			}
			ans = httpAnswer(m, a, t.limit)
			t.times(ans, s, n, q, capture)
			s.consume(n)
			return ans, true
		default: // RESP
			v, n, err := parseRESP(b)
			if err == errIncomplete {
				return nil, final
			}
			if err != nil {
				return t.broken(s, b, err, capture), true
			}
			ans = respAnswer(v, b[:n], a)
			t.times(ans, s, n, q, capture)
			s.consume(n)
			return ans, true
		}
	}
}

// broken handles bytes that do not decode as the session's protocol: the
// stream is given up. In the capture that leaves no reference (nil); the
// target's answer is then this: what it sent instead, a difference.
func (t *tracker) broken(s *stream, b []byte, err error, capture bool) *answer {
	s.drop()
	if capture {
		return nil
	}
	s.broken = true
	ans := &answer{first: -1, last: -1, broken: true, fields: []field{{"answer", "not " + string(t.proto) + ": " + err.Error()}}}
	kept := bytes.Clone(b[:min(len(b), maxAnswerShow)])
	ans.show = func() (string, bool) { return showText(nil, kept) }
	return ans
}

// times sets an answer's response times: from the request's last byte to
// the answer's first and last byte (n bytes from the stream's base).
func (t *tracker) times(ans *answer, s *stream, n int, q *pendReq, capture bool) {
	from := q.repAt
	if capture {
		from = q.capAt
	}
	f, l := s.timeAt(s.base), s.timeAt(s.base+int64(n)-1)
	if from < 0 || f < 0 || l < 0 {
		return
	}
	ans.first, ans.last = max(f-from, 0), max(l-from, 0)
}

func (t *tracker) pairMessage(q *pendReq, final bool) (reqRec, bool) {
	// Peek both sides without consuming one before the other is ready:
	// decode only when both can say.
	capReady := t.capS.lost || final || t.ready(&t.capS, q)
	repReady := t.repS.lost || final || t.ready(&t.repS, q)
	if !capReady || !repReady {
		return reqRec{}, false
	}
	c, _ := t.side(&t.capS, q, final, true)
	r, _ := t.side(&t.repS, q, final, false)
	return reqRec{cap: c, rep: r, lost: t.capS.lost || t.repS.lost && !t.repS.broken}, true
}

// ready reports whether the stream holds q's complete answer (or bytes
// that can never be one).
func (t *tracker) ready(s *stream, q *pendReq) bool {
	if s.n == 0 || s.end() == s.incomplete {
		return false // nothing new since it was found incomplete
	}
	b := s.buf()
	for off := 0; off < len(b); {
		switch t.proto {
		case session.HTTP:
			m, n, err := parseHTTPResponse(b[off:], q.method, false)
			if err == errIncomplete {
				s.incomplete = s.end()
				return false
			}
			if err == nil && m.status/100 == 1 && m.status != 101 {
				off += n
				continue
			}
			if err == nil && off == 0 {
				s.peek, s.peekN, s.peekBase = m, n, s.base
			}
			return true
		default:
			_, _, err := parseRESP(b)
			if err == errIncomplete {
				s.incomplete = s.end()
			}
			return err != errIncomplete
		}
	}
	return false
}

func (t *tracker) pairTurn(q *pendReq, final bool) (reqRec, bool) {
	capTo, repTo := q.capTo, q.repTo
	if final {
		if capTo < 0 {
			capTo = t.capS.end()
		}
		if repTo < 0 {
			repTo = t.repS.end()
		}
	}
	if capTo < 0 || repTo < 0 || (!t.capS.lost && t.capS.end() < capTo && !final) {
		return reqRec{}, false
	}
	a := t.applied(q.route)
	var rec reqRec
	rec.cap = t.turnSide(&t.capS, q.capFrom, capTo, a, q.capAt)
	rec.rep = t.turnSide(&t.repS, q.repFrom, repTo, a, q.repAt)
	rec.lost = t.capS.lost || t.repS.lost
	return rec, true
}

// turnSide cuts [from, to) of a stream as one turn's answer (nil when
// empty or lost).
func (t *tracker) turnSide(s *stream, from, to int64, a *applied, reqAt int64) *answer {
	if s.lost || from < s.base {
		return nil
	}
	to = min(to, s.end())
	if to <= from {
		return nil
	}
	if from > s.base {
		s.consume(int(from - s.base))
	}
	n := int(to - from)
	ans := bytesAnswer(s.buf()[:n], a)
	if f, l := s.timeAt(from), s.timeAt(to-1); reqAt >= 0 && f >= 0 && l >= 0 {
		ans.first, ans.last = max(f-reqAt, 0), max(l-reqAt, 0)
	}
	s.consume(n)
	return ans
}

// applied returns the rules of a route, merged once per session.
func (t *tracker) applied(route string) *applied {
	a := t.rulesFor[route]
	if a == nil {
		if t.rulesFor == nil {
			t.rulesFor = map[string]*applied{}
		}
		a = t.rules.apply(route, t.volatile)
		t.rulesFor[route] = a
	}
	return a
}

// finish pairs what is left: the session is over.
func (t *tracker) finish() {
	t.capS.eof, t.repS.eof = true, true
	if t.proto == session.HTTP || t.proto == session.RESP {
		t.decodeRequests()
	}
	t.advance(true)
	t.cli, t.capS, t.repS, t.queue, t.cliCap = stream{}, stream{}, stream{}, nil, nil
}

// foldPath is an HTTP request target as a route's path: the query
// dropped, and segments that are ids folded: numbers {n}, UUIDs {uuid},
// long hexadecimal strings {hex}.
func foldPath(target string) string {
	p, _, _ := strings.Cut(target, "?")
	p, _, _ = strings.Cut(p, "#")
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		// Absolute form (a proxy request): the path only.
		rest := p[strings.Index(p, "//")+2:]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			p = rest[i:]
		} else {
			p = "/"
		}
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch {
		case s == "":
		case isDigits(s):
			segs[i] = "{n}"
		case isUUID(s):
			segs[i] = "{uuid}"
		case len(s) >= 12 && isHex(s) && strings.ContainsAny(s, "0123456789"):
			segs[i] = "{hex}"
		}
	}
	return escape([]byte(strings.Join(segs, "/")), 200)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return s != ""
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if r != '-' {
				return false
			}
		} else if !isHex(string(r)) {
			return false
		}
	}
	return true
}
