package intercept

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Decoders for the per-request comparison: HTTP/1.x messages, RESP
// values, and the readable form of bytes. Each decoder takes a buffer
// that holds the start of a stream's not yet decoded part and says how
// long the first message is, or that more bytes are needed
// (errIncomplete); any other error means the stream is not that protocol
// from here on. None of them keeps a reference to the buffer.

// errIncomplete: the buffer ends inside the message.
var errIncomplete = errors.New("incomplete message")

// Bounds on what decoding may make of an answer.
const (
	// maxHeaderBytes bounds an HTTP head; a longer one is malformed.
	maxHeaderBytes = 64 << 10
	// maxRESPDepth and maxRESPElems bound a RESP value's nesting and
	// element count (a hostile "*2147483647" must not allocate).
	maxRESPDepth = 32
	maxRESPElems = 1 << 20
)

// header is one HTTP header line, its name in lower case.
type header struct{ name, value string }

// httpMsg is a decoded HTTP/1.x request or response.
type httpMsg struct {
	// request: method and target; response: status.
	method, target string
	status         int
	proto          string
	headers        []header
	rawBody        []byte // as framed on the wire (chunked framing kept)
	chunked        bool
}

func (m *httpMsg) get(name string) string {
	for _, h := range m.headers {
		if h.name == name {
			return h.value
		}
	}
	return ""
}

// parseHead parses an HTTP head (start line and headers) at the start of
// b: the start line's three fields, the headers, and the head's length.
func parseHead(b []byte) (start [3]string, hs []header, n int, err error) {
	he := bytes.Index(b, []byte("\r\n\r\n"))
	if he < 0 {
		if len(b) > maxHeaderBytes {
			return start, nil, 0, fmt.Errorf("http head longer than %d bytes", maxHeaderBytes)
		}
		return start, nil, 0, errIncomplete
	}
	lines := strings.Split(string(b[:he]), "\r\n")
	f := strings.SplitN(lines[0], " ", 3)
	if len(f) < 2 {
		return start, nil, 0, fmt.Errorf("http start line %q: want three fields", escape([]byte(lines[0]), 64))
	}
	copy(start[:], f)
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" {
			return start, nil, 0, fmt.Errorf("http header line %q: no name", escape([]byte(l), 64))
		}
		hs = append(hs, header{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)})
	}
	return start, hs, he + 4, nil
}

// bodyLen returns the length of a message body framed by the headers at
// the start of b: chunked, Content-Length, or -1 when neither says (a
// response then ends with the connection).
func bodyLen(b []byte, hs []header) (n int64, chunked bool, err error) {
	n = -1
	for _, h := range hs {
		switch h.name {
		case "transfer-encoding":
			if strings.Contains(strings.ToLower(h.value), "chunked") {
				chunked = true
			}
		case "content-length":
			v, perr := strconv.ParseInt(h.value, 10, 64)
			if perr != nil || v < 0 {
				return 0, false, fmt.Errorf("http content-length %q: not a length", h.value)
			}
			n = v
		}
	}
	if chunked {
		l := chunkedLen(b)
		if l < 0 {
			if bad := chunkedBad(b); bad != nil {
				return 0, true, bad
			}
			return 0, true, errIncomplete
		}
		return l, true, nil
	}
	if n > int64(len(b)) {
		return n, false, errIncomplete
	}
	return n, false, nil
}

// chunkedBad reports a chunk-size line that can never become valid (as
// opposed to one that is only incomplete).
func chunkedBad(b []byte) error {
	var pos int
	for pos < len(b) {
		le := bytes.Index(b[pos:], []byte("\r\n"))
		if le < 0 {
			if len(b)-pos > 1024 {
				return errors.New("http chunk size line too long")
			}
			return nil
		}
		sz := b[pos : pos+le]
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		if err != nil || v < 0 {
			return fmt.Errorf("http chunk size %q: not hexadecimal", escape(sz, 32))
		}
		if v == 0 {
			return nil // trailers: incomplete, not bad
		}
		pos += le + 2
		if int64(len(b)-pos) < v+2 {
			return nil
		}
		pos += int(v) + 2
	}
	return nil
}

// parseHTTPRequest decodes the HTTP/1.x request at the start of b and
// returns it with its length.
func parseHTTPRequest(b []byte) (*httpMsg, int, error) {
	start, hs, n, err := parseHead(b)
	if err != nil {
		return nil, 0, err
	}
	if !strings.HasPrefix(start[2], "HTTP/1.") {
		return nil, 0, fmt.Errorf("http request line: version %q", escape([]byte(start[2]), 16))
	}
	m := &httpMsg{method: start[0], target: start[1], proto: start[2], headers: hs}
	l, chunked, err := bodyLen(b[n:], hs)
	if err != nil {
		return nil, 0, err
	}
	l = max(l, 0) // a request without framing has no body
	m.rawBody, m.chunked = b[n:int64(n)+l], chunked
	return m, n + int(l), nil
}

// parseHTTPResponse decodes the HTTP/1.x response at the start of b to a
// request with method method; eof says the stream ended at len(b) (a
// response framed by the connection's end is complete only then).
func parseHTTPResponse(b []byte, method string, eof bool) (*httpMsg, int, error) {
	if len(b) < 7 && !eof && string(b) == "HTTP/1."[:len(b)] {
		return nil, 0, errIncomplete
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.")) {
		return nil, 0, fmt.Errorf("http response: starts with %q", escape(b[:min(len(b), 16)], 16))
	}
	start, hs, n, err := parseHead(b)
	if err == errIncomplete && eof {
		return nil, 0, errors.New("http response: the stream ends inside its head")
	}
	if err != nil {
		return nil, 0, err
	}
	status, err := strconv.Atoi(start[1])
	if err != nil || status < 100 || status > 999 {
		return nil, 0, fmt.Errorf("http status %q: not a number", escape([]byte(start[1]), 16))
	}
	m := &httpMsg{status: status, proto: start[0], headers: hs}
	if status/100 == 1 || status == 204 || status == 304 || method == "HEAD" {
		return m, n, nil
	}
	l, chunked, err := bodyLen(b[n:], hs)
	if err == errIncomplete && eof {
		err = errors.New("http response: the stream ends inside its body")
	}
	if err != nil {
		return nil, 0, err
	}
	if l < 0 {
		if !eof {
			return nil, 0, errIncomplete
		}
		l = int64(len(b) - n)
	}
	m.rawBody, m.chunked = b[n:int64(n)+l], chunked
	return m, n + int(l), nil
}

// dechunk removes chunked framing (a valid one: chunkedLen accepted it).
func dechunk(b []byte) []byte {
	var out []byte
	pos := 0
	for {
		le := bytes.Index(b[pos:], []byte("\r\n"))
		if le < 0 {
			return out
		}
		sz := b[pos : pos+le]
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = sz[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
		pos += le + 2
		if err != nil || n <= 0 || pos+int(n) > len(b) {
			return out
		}
		out = append(out, b[pos:pos+int(n)]...)
		pos += int(n) + 2
	}
}

// decodeBody returns the message's body as the application sees it:
// chunked framing removed, gzip or deflate content coding undone (at most
// limit bytes of output; an answer inflating beyond is cut and says so).
// A body that does not decode as its coding claims is returned as framed,
// with the reason.
func decodeBody(m *httpMsg, limit int) (body []byte, note string) {
	body = m.rawBody
	if m.chunked {
		body = dechunk(body)
	}
	var r io.Reader
	var err error
	switch enc := strings.ToLower(m.get("content-encoding")); enc {
	case "", "identity":
		return body, ""
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(body))
	case "deflate":
		// RFC 9110's deflate is zlib; some servers send raw deflate.
		if zr, zerr := zlib.NewReader(bytes.NewReader(body)); zerr == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(body))
		}
	default:
		return body, "content-encoding " + enc + " not decoded"
	}
	if err != nil {
		return body, "content-encoding " + m.get("content-encoding") + ": " + err.Error()
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if len(out) > limit {
		return out[:limit], fmt.Sprintf("decoded body cut at %d bytes", limit)
	}
	if err != nil {
		return body, "content-encoding " + m.get("content-encoding") + ": " + err.Error()
	}
	return out, ""
}

// respValue is a decoded RESP value: its kind (the type byte: + - : $ *
// and the RESP3 ones), its text (simple string, error, number, bulk) and
// its elements (arrays, sets, maps, pushes). Null is kind '_'.
type respValue struct {
	kind  byte
	text  []byte
	elems []respValue
}

// parseRESP decodes the RESP value at the start of b (RESP2 and RESP3)
// and returns it with its length.
func parseRESP(b []byte) (respValue, int, error) {
	return parseRESPDepth(b, 0)
}

func parseRESPDepth(b []byte, depth int) (respValue, int, error) {
	if len(b) == 0 {
		return respValue{}, 0, errIncomplete
	}
	if depth > maxRESPDepth {
		return respValue{}, 0, fmt.Errorf("resp: nested deeper than %d", maxRESPDepth)
	}
	le := bytes.Index(b, []byte("\r\n"))
	if le < 0 {
		if len(b) > maxHeaderBytes {
			return respValue{}, 0, fmt.Errorf("resp: line longer than %d bytes", maxHeaderBytes)
		}
		return respValue{}, 0, errIncomplete
	}
	if le == 0 {
		return respValue{}, 0, errors.New("resp: empty line where a type byte belongs")
	}
	kind, line, n := b[0], b[1:le], le+2
	num := func() (int64, error) {
		v, err := strconv.ParseInt(string(line), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("resp %c: length %q: not a number", kind, escape(line, 24))
		}
		return v, nil
	}
	switch kind {
	case '+', '-', ':', ',', '(', '#':
		return respValue{kind: kind, text: line}, n, nil
	case '_':
		return respValue{kind: '_'}, n, nil
	case '$', '=', '!':
		l, err := num()
		if err != nil {
			return respValue{}, 0, err
		}
		if l < 0 {
			return respValue{kind: '_'}, n, nil // RESP2 null bulk string
		}
		if int64(len(b)-n) < l+2 {
			return respValue{}, 0, errIncomplete
		}
		if b[n+int(l)] != '\r' || b[n+int(l)+1] != '\n' {
			return respValue{}, 0, fmt.Errorf("resp %c: %d bytes not followed by CRLF", kind, l)
		}
		return respValue{kind: kind, text: b[n : n+int(l)]}, n + int(l) + 2, nil
	case '*', '~', '>', '%', '|':
		l, err := num()
		if err != nil {
			return respValue{}, 0, err
		}
		if l < 0 {
			return respValue{kind: '_'}, n, nil // RESP2 null array
		}
		if kind == '%' || kind == '|' {
			l *= 2
		}
		if l > maxRESPElems {
			return respValue{}, 0, fmt.Errorf("resp %c: %d elements, more than %d", kind, l, maxRESPElems)
		}
		v := respValue{kind: kind}
		for range l {
			e, m, err := parseRESPDepth(b[n:], depth+1)
			if err != nil {
				return respValue{}, 0, err
			}
			v.elems = append(v.elems, e)
			n += m
		}
		return v, n, nil
	}
	return respValue{}, 0, fmt.Errorf("resp: type byte %q unknown", escape(b[:1], 4))
}

// parseRESPCommand decodes the command at the start of b: a RESP array of
// bulk strings, or an inline command (a line of words). It returns the
// command's words.
func parseRESPCommand(b []byte) ([][]byte, int, error) {
	if len(b) > 0 && b[0] == '*' {
		v, n, err := parseRESP(b)
		if err != nil {
			return nil, 0, err
		}
		var words [][]byte
		for _, e := range v.elems {
			words = append(words, e.text)
		}
		return words, n, nil
	}
	le := bytes.IndexByte(b, '\n')
	if le < 0 {
		if len(b) > maxHeaderBytes {
			return nil, 0, fmt.Errorf("resp inline command longer than %d bytes", maxHeaderBytes)
		}
		return nil, 0, errIncomplete
	}
	return bytes.Fields(b[:le]), le + 1, nil
}

// respFields flattens a RESP value into fields: "reply" for a scalar,
// "reply[i]" (nested "reply[i][j]") for elements. A value is shown with
// its type: +OK, -ERR ..., :1, "bulk" (quoted, escaped), nil.
func respFields(v respValue, key string, out []field) []field {
	switch v.kind {
	case '*', '~', '>', '%', '|':
		if len(v.elems) == 0 {
			return append(out, field{key, string(v.kind) + "0"})
		}
		out = append(out, field{key + ".len", strconv.Itoa(len(v.elems))})
		for i, e := range v.elems {
			out = respFields(e, key+"["+strconv.Itoa(i)+"]", out)
		}
		return out
	case '_':
		return append(out, field{key, "nil"})
	case '$', '=', '!':
		return append(out, field{key, `"` + escape(v.text, maxFieldShow) + `"`})
	}
	return append(out, field{key, string(v.kind) + escape(v.text, maxFieldShow)})
}

// jsonFields flattens a JSON document into one field per leaf, keyed by
// its JSON path under prefix ("body $.a.b[0]"), values as they are
// written in the document (strings quoted; numbers, true, false, null as
// is; empty objects and arrays as {} and []). Object keys are sorted, so
// equal documents give equal fields whatever their key order and
// spacing. keep, when set, is asked before a node is flattened: false
// leaves the node and what is below it out. ok is false when b is not
// one JSON value. It scans the bytes itself: decoding into Go values and
// encoding every leaf again cost most of the per-request comparison.
func jsonFields(b []byte, prefix string, keep func(path []string) bool, out []field) ([]field, bool) {
	j := jsonScan{b: b}
	j.ws()
	end, ok := j.skip(j.i, 0)
	if !ok {
		return out, false
	}
	j.i = end
	j.ws()
	if j.i != len(b) {
		return out, false // trailing data: not one value
	}
	start := 0
	for start < len(b) && isJSONSpace(b[start]) {
		start++
	}
	return j.flatten(start, nil, prefix, keep, out), true
}

// jsonScan walks a JSON document's bytes.
type jsonScan struct {
	b []byte
	i int
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (j *jsonScan) ws() {
	for j.i < len(j.b) && isJSONSpace(j.b[j.i]) {
		j.i++
	}
}

// maxJSONDepth bounds nesting (a hostile "[[[[..." must not recurse
// without end).
const maxJSONDepth = 200

// skip returns the end of the value that starts at i (no space before
// it), checking its syntax.
func (j *jsonScan) skip(i, depth int) (int, bool) {
	b := j.b
	if i >= len(b) || depth > maxJSONDepth {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return j.skipString(i)
	case c == '{' || c == '[':
		closeB := byte('}')
		if c == '[' {
			closeB = ']'
		}
		i++
		j.i = i
		j.ws()
		if j.i < len(b) && b[j.i] == closeB {
			return j.i + 1, true
		}
		for {
			j.ws()
			if c == '{' {
				e, ok := j.skipString(j.i)
				if !ok {
					return 0, false
				}
				j.i = e
				j.ws()
				if j.i >= len(b) || b[j.i] != ':' {
					return 0, false
				}
				j.i++
				j.ws()
			}
			e, ok := j.skip(j.i, depth+1)
			if !ok {
				return 0, false
			}
			j.i = e
			j.ws()
			if j.i >= len(b) {
				return 0, false
			}
			switch b[j.i] {
			case ',':
				j.i++
			case closeB:
				return j.i + 1, true
			default:
				return 0, false
			}
		}
	case c == 't', c == 'f', c == 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(b[i:], []byte(lit)) {
				return i + len(lit), true
			}
		}
		return 0, false
	case c == '-' || c >= '0' && c <= '9':
		return jsonNumber(b, i)
	}
	return 0, false
}

// jsonNumber returns the end of the number at i, by JSON's grammar:
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func jsonNumber(b []byte, i int) (int, bool) {
	digits := func(k int) int {
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		return k
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		e := digits(i + 1)
		if e == i+1 {
			return 0, false
		}
		i = e
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		e := digits(i)
		if e == i {
			return 0, false
		}
		i = e
	}
	return i, true
}

// skipString returns the end of the string that starts at i.
func (j *jsonScan) skipString(i int) (int, bool) {
	b := j.b
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for k := i + 1; k < len(b); k++ {
		switch b[k] {
		case '\\':
			if k+1 >= len(b) {
				return 0, false
			}
			switch b[k+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				k++
			case 'u':
				if k+5 >= len(b) || !isHex(string(b[k+2:k+6])) {
					return 0, false
				}
				k += 5
			default:
				return 0, false
			}
		case '"':
			return k + 1, true
		default:
			if b[k] < 0x20 {
				return 0, false
			}
		}
	}
	return 0, false
}

// key returns an object key (the string at [i, e)) unquoted.
func (j *jsonScan) key(i, e int) string {
	raw := j.b[i+1 : e-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	var s string
	if json.Unmarshal(j.b[i:e], &s) != nil {
		return string(raw)
	}
	return s
}

// flatten appends the fields of the (valid) value at i.
func (j *jsonScan) flatten(i int, path []string, prefix string, keep func([]string) bool, out []field) []field {
	if keep != nil && !keep(path) {
		return out
	}
	b := j.b
	switch b[i] {
	case '{', '[':
		obj := b[i] == '{'
		type member struct {
			key string
			at  int
		}
		var ms []member
		j.i = i + 1
		for n := 0; ; n++ {
			j.ws()
			if b[j.i] == '}' || b[j.i] == ']' {
				break
			}
			k := "[" + strconv.Itoa(n) + "]"
			if obj {
				e, _ := j.skipString(j.i)
				k = j.key(j.i, e)
				j.i = e
				j.ws()
				j.i++ // ':'
				j.ws()
			}
			at := j.i
			e, _ := j.skip(at, 0)
			ms = append(ms, member{k, at})
			j.i = e
			j.ws()
			if b[j.i] == ',' {
				j.i++
			}
		}
		if len(ms) == 0 {
			v := "[]"
			if obj {
				v = "{}"
			}
			return append(out, field{prefix + jsonPath(path), v})
		}
		if obj {
			sort.SliceStable(ms, func(a, c int) bool { return ms[a].key < ms[c].key })
			// A key given twice: the last one counts, as in encoding/json.
			kept := ms[:0]
			for n, m := range ms {
				if n+1 < len(ms) && ms[n+1].key == m.key {
					continue
				}
				kept = append(kept, m)
			}
			ms = kept
		}
		for _, m := range ms {
			out = j.flatten(m.at, append(path[:len(path):len(path)], m.key), prefix, keep, out)
		}
		return out
	}
	e, _ := j.skip(i, 0)
	return append(out, field{prefix + jsonPath(path), string(b[i:e])})
}

// jsonPath writes a path as $.a.b[0]; keys that are not identifiers are
// quoted ($["a b"]).
func jsonPath(path []string) string {
	var sb strings.Builder
	sb.WriteByte('$')
	for _, p := range path {
		switch {
		case strings.HasPrefix(p, "["):
			sb.WriteString(p)
		case isIdent(p):
			sb.WriteByte('.')
			sb.WriteString(p)
		default:
			sb.WriteString("[")
			sb.WriteString(strconv.Quote(p))
			sb.WriteString("]")
		}
	}
	return sb.String()
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// isJSONType reports whether a Content-Type names JSON.
func isJSONType(ct string) bool {
	ct = strings.ToLower(ct)
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "text/json"
}

// maxFieldShow bounds a field value as shown in a difference.
const maxFieldShow = 256

// escape returns b readably, at most limit bytes of it: printable text
// (valid UTF-8) as is, backslash, quote-free; \r \n \t and other bytes
// escaped as \xNN; cut with "…" when longer. No byte is lost or replaced
// by U+FFFD: the escaped form names every byte shown.
func escape(b []byte, limit int) string { return escapeMode(b, limit, false) }

// escapeLines is escape for a text shown on several lines (an answer, a
// request): newlines and tabs stay as they are (\r is still named, so
// CRLF shows as \r at each line's end).
func escapeLines(b []byte, limit int) string { return escapeMode(b, limit, true) }

func escapeMode(b []byte, limit int, lines bool) string {
	var sb strings.Builder
	cut := false
	if len(b) > limit {
		b, cut = b[:limit], true
	}
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\\':
			sb.WriteString(`\\`)
		case r == '\n' && lines:
			sb.WriteByte('\n')
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t' && lines:
			sb.WriteByte('\t')
		case r == '\t':
			sb.WriteString(`\t`)
		case r == utf8.RuneError && size <= 1, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			for _, c := range b[:max(size, 1)] {
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		default:
			sb.Write(b[:size])
		}
		b = b[max(size, 1):]
	}
	if cut {
		sb.WriteString("…")
	}
	return sb.String()
}
