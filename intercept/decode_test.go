package intercept

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func gz(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

func zl(s string, raw bool) string {
	var b bytes.Buffer
	if raw {
		w, _ := flate.NewWriter(&b, 5)
		w.Write([]byte(s))
		w.Close()
	} else {
		w := zlib.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
	}
	return b.String()
}

// TestHTTPResponseDecode: framing (Content-Length, chunked, to the end,
// none for HEAD/204/304), content coding, and what is incomplete or bad.
func TestHTTPResponseDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in, method string
		eof              bool
		n                int // -1: incomplete; -2: error
		body             string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", "GET", false, 43, "hello"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\nT: 1\r\n\r\nNEXT", "GET", false, -4, "hello"},
		{"chunked incomplete", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n", "GET", false, -1, ""},
		{"chunked bad size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhel\r\n", "GET", false, -2, ""},
		{"to the end", "HTTP/1.0 200 OK\r\n\r\nall of it", "GET", true, 28, "all of it"},
		{"to the end, not yet", "HTTP/1.0 200 OK\r\n\r\nall of it", "GET", false, -1, ""},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD", false, 39, ""},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", false, 27, ""},
		{"gzip", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: " + itoa(len(gz("zipped!"))) + "\r\n\r\n" + gz("zipped!"), "GET", false, -3, "zipped!"},
		{"deflate zlib", "HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: " + itoa(len(zl("deflated", false))) + "\r\n\r\n" + zl("deflated", false), "GET", false, -3, "deflated"},
		{"deflate raw", "HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: " + itoa(len(zl("raw", true))) + "\r\n\r\n" + zl("raw", true), "GET", false, -3, "raw"},
		{"not http", "SSH-2.0-x\r\n", "GET", false, -2, ""},
		{"short prefix", "HTTP", "GET", false, -1, ""},
		{"bad status", "HTTP/1.1 abc OK\r\n\r\n", "GET", false, -2, ""},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "GET", false, -2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, n, err := parseHTTPResponse([]byte(tc.in), tc.method, tc.eof)
			switch {
			case tc.n == -1:
				if err != errIncomplete {
					t.Fatalf("err %v, want incomplete", err)
				}
				return
			case tc.n == -2:
				if err == nil || err == errIncomplete {
					t.Fatalf("err %v, want a decoding error", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tc.n >= 0 && n != tc.n:
				t.Fatalf("length %d, want %d", n, tc.n)
			case tc.n == -4 && n != len(tc.in)-len("NEXT"):
				t.Fatalf("length %d, want %d", n, len(tc.in)-4)
			case tc.n == -3 && n != len(tc.in):
				t.Fatalf("length %d, want %d", n, len(tc.in))
			}
			if body, note := decodeBody(m, 1<<20); string(body) != tc.body || note != "" {
				t.Fatalf("body %q (%s), want %q", body, note, tc.body)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestDecodeBodyBomb: an answer inflating beyond the limit is cut and says
// so.
func TestDecodeBodyBomb(t *testing.T) {
	big := gz(strings.Repeat("a", 1<<20))
	m := &httpMsg{headers: []header{{"content-encoding", "gzip"}}, rawBody: []byte(big)}
	body, note := decodeBody(m, 1000)
	if len(body) != 1000 || !strings.Contains(note, "cut") {
		t.Fatalf("body %d bytes, note %q", len(body), note)
	}
	m.rawBody = []byte("not gzip at all")
	if body, note := decodeBody(m, 1000); string(body) != "not gzip at all" || !strings.Contains(note, "gzip") {
		t.Fatalf("body %q, note %q", body, note)
	}
}

// TestHTTPRequestDecode: request lines, bodies by length and chunked, and
// the route with ids folded.
func TestHTTPRequestDecode(t *testing.T) {
	for _, tc := range []struct {
		in, route string
		n         int
	}{
		{"GET /api/items/42?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "GET /api/items/{n}", 0},
		{"POST /u/123e4567-e89b-12d3-a456-426614174000/x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", "POST /u/{uuid}/x", 0},
		{"PUT /blob/deadbeef0123abcd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", "PUT /blob/{hex}", 0},
		{"GET http://h/a/7 HTTP/1.1\r\n\r\n", "GET /a/{n}", 0},
	} {
		m, n, err := parseHTTPRequest([]byte(tc.in))
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if route := m.method + " " + foldPath(m.target); route != tc.route || n != len(tc.in) {
			t.Errorf("%q: route %q length %d, want %q %d", tc.in, route, n, tc.route, tc.n)
		}
	}
	if _, _, err := parseHTTPRequest([]byte("GET / SPDY/3\r\n\r\n")); err == nil {
		t.Error("a request of another protocol was accepted")
	}
}

// TestRESPDecode: replies of every type, arrays, errors, nulls, and
// bounds.
func TestRESPDecode(t *testing.T) {
	for _, tc := range []struct {
		in     string
		n      int // -1 incomplete, -2 error
		fields string
	}{
		{"+OK\r\n", 5, "reply=+OK"},
		{"-ERR unknown command 'FOO'\r\n", 28, "reply=-ERR unknown command 'FOO'"},
		{":42\r\n", 5, "reply=:42"},
		{"$5\r\nhe\x00lo\r\n", 11, `reply="he\x00lo"`},
		{"$-1\r\n", 5, "reply=nil"},
		{"*-1\r\n", 5, "reply=nil"},
		{"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", 19, `reply.len=2 reply[0]="a" reply[1].len=1 reply[1][0]=:1`},
		{"*0\r\n", 4, "reply=*0"},
		{"%1\r\n+k\r\n:2\r\n", 12, "reply.len=2 reply[0]=+k reply[1]=:2"},
		{"_\r\n", 3, "reply=nil"},
		{"*2\r\n$1\r\na\r\n", -1, ""},
		{"$5\r\nhel", -1, ""},
		{"$3\r\nabcXY", -2, ""},
		{"*2147483647\r\n", -2, ""},
		{"?x\r\n", -2, ""},
		{"$x\r\n", -2, ""},
	} {
		v, n, err := parseRESP([]byte(tc.in))
		switch tc.n {
		case -1:
			if err != errIncomplete {
				t.Errorf("%q: err %v, want incomplete", tc.in, err)
			}
			continue
		case -2:
			if err == nil || err == errIncomplete {
				t.Errorf("%q: err %v, want an error", tc.in, err)
			}
			continue
		}
		if err != nil || n != tc.n {
			t.Errorf("%q: %d, %v; want %d", tc.in, n, err, tc.n)
			continue
		}
		var got []string
		for _, f := range respFields(v, "reply", nil) {
			got = append(got, f.key+"="+f.val)
		}
		if s := strings.Join(got, " "); s != tc.fields {
			t.Errorf("%q: fields %s, want %s", tc.in, s, tc.fields)
		}
	}
	words, n, err := parseRESPCommand([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
	if err != nil || n != 20 || string(bytes.Join(words, []byte(" "))) != "GET k" {
		t.Errorf("command %q %d %v", words, n, err)
	}
	words, n, err = parseRESPCommand([]byte("PING x\r\n"))
	if err != nil || n != 8 || len(words) != 2 {
		t.Errorf("inline command %q %d %v", words, n, err)
	}
}

// TestEscape: every byte is named; nothing becomes U+FFFD.
func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"a\r\nb\t\\", `a\r\nb\t\\`},
		{"\x00\x01\xff", `\x00\x01\xff`},
		{"héllo", "héllo"},
		{"\xc3", `\xc3`},
		{"\x1b[0m", `\x1b[0m`},
	} {
		if got := escape([]byte(tc.in), 100); got != tc.want {
			t.Errorf("escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := escape([]byte("abcdef"), 3); got != "abc…" {
		t.Errorf("cut: %q", got)
	}
}

// TestJSONFields: key order and spacing do not matter; paths name leaves.
func TestJSONFields(t *testing.T) {
	a, ok1 := jsonFields([]byte(`{"b": [1, {"c": "x"}], "a": 1.50, "e": {}, "f": [], "g h": null}`), "body ", nil, nil)
	b, ok2 := jsonFields([]byte(`{"a":1.50,"g h":null,"f":[],"e":{},"b":[1,{"c":"x"}]}`), "body ", nil, nil)
	if !ok1 || !ok2 {
		t.Fatal("not decoded")
	}
	var got []string
	for _, f := range a {
		got = append(got, f.key+"="+f.val)
	}
	want := `body $.a=1.50 body $.b[0]=1 body $.b[1].c="x" body $.e={} body $.f=[] body $["g h"]=null`
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("fields\n%s\nwant\n%s", s, want)
	}
	if len(diffAnswers(&answer{fields: a}, &answer{fields: b})) != 0 {
		t.Error("equal documents differ")
	}
	if _, ok := jsonFields([]byte(`{"a":1} trailing`), "", nil, nil); ok {
		t.Error("trailing data accepted")
	}
}

// FuzzHTTPResponse: decoding never panics, a length is within the input,
// and a complete message decodes the same with more bytes after it.
func FuzzHTTPResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n0\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 20\r\n\r\n"+gz("x")), true)
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nbody"), true)
	f.Fuzz(func(t *testing.T, b []byte, eof bool) {
		m, n, err := parseHTTPResponse(b, "GET", eof)
		if err != nil {
			return
		}
		if n < 0 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		decodeBody(m, 1<<16)
		httpAnswer(m, (*Rules)(nil).apply("GET /", nil), 1<<16).fieldList()
		if !eof {
			_, n2, err := parseHTTPResponse(append(b[:n:n], "HTTP/1.1 200 OK\r\n"...), "GET", false)
			if err != nil || n2 != n {
				t.Fatalf("with more bytes after it: %d, %v; was %d", n2, err, n)
			}
		}
	})
}

// FuzzRESP: decoding never panics, lengths stay within the input, and a
// complete value decodes the same with more bytes after it.
func FuzzRESP(f *testing.F) {
	f.Add([]byte("*2\r\n$1\r\na\r\n:1\r\n"))
	f.Add([]byte("-ERR x\r\n"))
	f.Add([]byte("%1\r\n+k\r\n_\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := parseRESP(b)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		respFields(v, "reply", nil)
		_, n2, err := parseRESP(append(b[:n:n], "+OK\r\n"...))
		if err != nil || n2 != n {
			t.Fatalf("with more bytes after it: %d, %v; was %d", n2, err, n)
		}
		parseRESPCommand(b)
	})
}

// FuzzJSONFields: the flattener accepts exactly what encoding/json calls
// valid, and a document re-encoded with other spacing and key order gives
// the same fields.
func FuzzJSONFields(f *testing.F) {
	f.Add([]byte(`{"b":[1,{"c":"x\u00e9"}],"a":-1.5e3,"e":{},"f":[],"g":null,"h":true}`))
	f.Add([]byte(`[01]`))
	f.Add([]byte(`"\q"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, ok := jsonFields(b, "", nil, nil)
		if ok != json.Valid(b) {
			t.Fatalf("jsonFields ok %v, json.Valid %v", ok, json.Valid(b))
		}
		if !ok {
			return
		}
		var v any
		if !utf8.Valid(b) || json.Unmarshal(b, &v) != nil {
			return // encoding/json replaces invalid UTF-8; the flattener keeps the bytes
		}
		b2, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return
		}
		fs2, ok2 := jsonFields(b2, "", nil, nil)
		if !ok2 || len(fs2) != len(fs) {
			t.Fatalf("re-encoded: %d fields (ok %v), was %d", len(fs2), ok2, len(fs))
		}
		for i := range fs {
			if fs[i].key != fs2[i].key {
				t.Fatalf("field %d: key %q, re-encoded %q", i, fs[i].key, fs2[i].key)
			}
		}
	})
}

// TestFieldDiff: short values are shown whole (offset -1); bodies and
// bytes from near their first difference, cut with "…".
func TestFieldDiff(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		key, ref, got string
		want          FieldDiff
	}{
		{"status", "200", "500", FieldDiff{Field: "status", Offset: -1, Reference: "200", Replayed: "500"}},
		{"body $.a", `"x"`, `"y"`, FieldDiff{Field: "body $.a", Offset: -1, Reference: `"x"`, Replayed: `"y"`}},
		{"bytes", "\x00\x01\x02", "\x00\x01\x03", FieldDiff{Field: "bytes", Offset: 2, Reference: `\x00\x01\x02`, Replayed: `\x00\x01\x03`}},
		{"body", long + "X" + long, long + "Y" + long, FieldDiff{Field: "body", Offset: 300,
			Reference: "…" + strings.Repeat("a", 16) + "X" + strings.Repeat("a", 47) + "…",
			Replayed:  "…" + strings.Repeat("a", 16) + "Y" + strings.Repeat("a", 47) + "…"}},
	} {
		if got := fieldDiff(tc.key, tc.ref, tc.got); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.key, got, tc.want)
		}
	}
}

func TestEscapeLines(t *testing.T) {
	if got := escapeLines([]byte("GET / HTTP/1.1\r\nHost: x\r\n\t\x00"), 100); got != "GET / HTTP/1.1\\r\nHost: x\\r\n\t\\x00" {
		t.Errorf("escapeLines: %q", got)
	}
}
