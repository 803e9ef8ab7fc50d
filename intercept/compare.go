package intercept

import (
	"bytes"
	"strconv"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
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
	// length, the builder's size limit) or the session was canceled, so no
	// verdict; Row.CapturedMatch tells whether the parts compared agreed.
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

// segment is one captured run of the server stream.
type segment struct {
	off  int64
	data []byte
}

// comparer compares the target's stream with the captured one as it
// arrives, so that no recording is needed to find the first difference.
type comparer struct {
	segs      []segment
	si        int   // first segment that may still overlap new bytes
	n         int64 // bytes received
	firstDiff int64 // stream offset of the first differing byte; -1 none yet
	replayed  []byte
}

func newComparer(s *session.Session) comparer {
	c := comparer{firstDiff: -1}
	s.ServerSegments(func(off int64, data []byte) {
		c.segs = append(c.segs, segment{off, data})
	})
	return c
}

func (c *comparer) feed(p []byte) {
	base := c.n // stream offset of p[0]
	c.n += int64(len(p))
	if c.firstDiff >= 0 {
		// Complete the excerpt of the answer after the difference.
		if n := snippetLen - len(c.replayed); n > 0 {
			c.replayed = append(c.replayed, p[:min(n, len(p))]...)
		}
		return
	}
	for pos := base; c.si < len(c.segs) && pos < c.n; {
		s := c.segs[c.si]
		sEnd := s.off + int64(len(s.data))
		if sEnd <= pos {
			c.si++
			continue
		}
		if s.off >= c.n {
			return
		}
		lo, hi := max(pos, s.off), min(c.n, sEnd)
		a, b := p[lo-base:hi-base], s.data[lo-s.off:hi-s.off]
		if !bytes.Equal(a, b) {
			i := 0
			for a[i] == b[i] {
				i++
			}
			c.firstDiff = lo + int64(i)
			rest := p[c.firstDiff-base:]
			c.replayed = append([]byte(nil), rest[:min(len(rest), snippetLen)]...)
			return
		}
		pos = hi
	}
}

// capturedAt returns up to snippetLen captured bytes from stream offset off.
func (c *comparer) capturedAt(off int64) []byte {
	for _, s := range c.segs {
		if off >= s.off && off < s.off+int64(len(s.data)) {
			b := s.data[off-s.off:]
			return b[:min(len(b), snippetLen)]
		}
	}
	return nil
}

// complete reports whether the captured server stream is whole: no server
// holes and nothing cut, so that a verdict is possible.
func complete(s *session.Session) bool {
	if int64(len(s.ServerData)) != s.ServerBytes {
		return false
	}
	for _, h := range s.Holes {
		if h.Server {
			return false
		}
	}
	return true
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
