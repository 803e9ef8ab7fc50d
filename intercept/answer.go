package intercept

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// field is one decoded part of an answer: an HTTP status, a header, a JSON
// leaf, a body, a RESP element, a turn's bytes. Answers are compared field
// by field.
type field struct{ key, val string }

// answer is one side's answer to one request, decoded and with the rules
// applied, ready to compare; text is its readable form for the report.
type answer struct {
	// fields are made by lazy when first needed (fieldList): two answers
	// whose canon is equal are equal without them, which spares decoding
	// JSON for the answers that agree.
	fields []field
	lazy   func() []field
	canon  string // the answer as compared, in one string ("" unknown)
	// show makes the readable text when it is first needed (text): most
	// answers are never shown.
	show      func() (string, bool)
	shown     string
	truncated bool
	// broken: not an answer of the protocol (fields holds why).
	broken bool
	// first and last are the response times to the answer's first and
	// last byte, in nanoseconds (-1: not measured).
	first, last int64
}

// maxAnswerShow bounds the readable text kept of an answer.
const maxAnswerShow = 4 << 10

// maxFields bounds the fields of one answer: a JSON body with more leaves
// is compared in its first maxFields, the rest as one hash field.
const maxFields = 512

// text returns the answer's readable text, making it if not yet made.
func (a *answer) text() string {
	if a.show != nil {
		a.shown, a.truncated = a.show()
		a.show = nil
	}
	return a.shown
}

// fieldList returns the answer's fields, making them if not yet made.
func (a *answer) fieldList() []field {
	if a.lazy != nil {
		a.fields, a.lazy = a.lazy(), nil
	}
	return a.fields
}

// httpAnswer decodes an HTTP response into fields: the status, the headers
// the rules keep (values of one name joined), and the body (decoded; JSON
// as one field per leaf).
func httpAnswer(m *httpMsg, a *applied, limit int) *answer {
	ans := &answer{first: -1, last: -1}
	ans.fields = append(ans.fields, field{"status", strconv.Itoa(m.status)})
	hv := map[string][]string{}
	var names []string
	for _, h := range m.headers {
		switch h.name {
		case "content-length", "transfer-encoding":
			// Framing: the decoded body is compared instead.
			continue
		}
		if a.headers[h.name] {
			continue
		}
		if _, ok := hv[h.name]; !ok {
			names = append(names, h.name)
		}
		hv[h.name] = append(hv[h.name], h.value)
	}
	sort.Strings(names)
	for _, n := range names {
		ans.fields = append(ans.fields, field{"header " + n, strings.Join(hv[n], ", ")})
	}
	body, note := decodeBody(m, limit)
	if note != "" {
		ans.fields = append(ans.fields, field{"body decoding", note})
	}
	// A body not decoded is the stream's own bytes: keep a copy, not the
	// stream's buffer.
	if len(body) > 0 && len(m.rawBody) > 0 && &body[0] == &m.rawBody[0] {
		body = bytes.Clone(body)
	}
	body = a.blank(body)
	var canon strings.Builder
	for _, f := range ans.fields {
		canon.WriteString(f.key + ": " + f.val + "\n")
	}
	canon.WriteString("\n")
	canon.Write(body)
	ans.canon = canon.String()
	proto, status, headers := m.proto, m.status, m.headers
	ans.show = func() (string, bool) {
		var text bytes.Buffer
		text.WriteString(proto + " " + strconv.Itoa(status) + "\n")
		for _, h := range headers {
			text.WriteString(h.name + ": " + h.value + "\n")
		}
		text.WriteString("\n")
		return showText(text.Bytes(), body)
	}
	head := ans.fields
	isJSON := isJSONType(m.get("content-type")) || looksJSON(body)
	ans.fields, ans.lazy = nil, func() []field {
		fs := head
		if len(body) > 0 {
			var ok bool
			if isJSON {
				fs, ok = jsonFields(body, "body ", a.keepJSON, fs)
			}
			if !ok {
				fs = append(fs, field{"body", string(body)})
			}
		}
		return a.filter(fs)
	}
	return ans
}

// looksJSON: a body that starts like a JSON object or array.
func looksJSON(b []byte) bool {
	b = bytes.TrimLeftFunc(b, unicode.IsSpace)
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// respAnswer decodes a RESP reply into fields.
func respAnswer(v respValue, raw []byte, a *applied) *answer {
	ans := &answer{first: -1, last: -1}
	if len(a.body) > 0 {
		blankRESP(&v, a)
	}
	ans.fields = a.filter(respFields(v, "reply", nil))
	n := len(raw)
	kept := bytes.Clone(raw[:min(n, maxAnswerShow)])
	ans.show = func() (string, bool) {
		s, _ := showText(nil, kept)
		return s, n > maxAnswerShow
	}
	return ans
}

func blankRESP(v *respValue, a *applied) {
	if v.text != nil {
		v.text = a.blank(v.text)
	}
	for i := range v.elems {
		blankRESP(&v.elems[i], a)
	}
}

// bytesAnswer is a turn's answer of a protocol not decoded: its bytes.
func bytesAnswer(b []byte, a *applied) *answer {
	ans := &answer{first: -1, last: -1}
	b = a.blank(b)
	kept := string(b)
	ans.fields = a.filter([]field{{"bytes", kept}})
	ans.show = func() (string, bool) { return showText(nil, []byte(kept)) }
	return ans
}

// filter drops the fields the rules ignore, and folds the leaves of a
// very large document into one.
func (a *applied) filter(fs []field) []field {
	out := fs[:0]
	for _, f := range fs {
		if a.keepField(f.key) {
			out = append(out, f)
		}
	}
	if len(out) > maxFields {
		var rest strings.Builder
		for _, f := range out[maxFields-1:] {
			rest.WriteString(f.key + "=" + f.val + "\n")
		}
		out = append(out[:maxFields-1], field{"body (fields beyond the first " + strconv.Itoa(maxFields-1) + ")", rest.String()})
	}
	return out
}

// showText is the readable form of an answer: head (already text) and
// body escaped, cut at maxAnswerShow.
func showText(head, body []byte) (string, bool) {
	s := string(head) + escapeLines(body, max(maxAnswerShow-len(head), 0))
	return s, len(head)+len(body) > maxAnswerShow
}

// diffAnswers compares two answers field by field: the fields whose
// values differ, or that one side lacks, in the reference's order (then
// the candidate's extra ones). ref is the reference (baseline or
// capture), got the target's.
func diffAnswers(ref, got *answer) []FieldDiff {
	if ref.canon != "" && ref.canon == got.canon {
		return nil // the same bytes, decoded the same way
	}
	rf, gf := ref.fieldList(), got.fieldList()
	gm := make(map[string]string, len(gf))
	for _, f := range gf {
		gm[f.key] = f.val
	}
	var out []FieldDiff
	seen := make(map[string]bool, len(rf))
	for _, f := range rf {
		seen[f.key] = true
		g, ok := gm[f.key]
		switch {
		case !ok:
			out = append(out, FieldDiff{Field: f.key, Offset: -1, Reference: escape([]byte(f.val), maxFieldShow), Missing: "replayed"})
		case g != f.val:
			out = append(out, fieldDiff(f.key, f.val, g))
		}
	}
	for _, f := range gf {
		if !seen[f.key] {
			out = append(out, FieldDiff{Field: f.key, Offset: -1, Replayed: escape([]byte(f.val), maxFieldShow), Missing: "reference"})
		}
	}
	return out
}

// fieldDiff shows one differing value: whole when short, else the bytes
// around the first difference.
func fieldDiff(key, ref, got string) FieldDiff {
	d := FieldDiff{Field: key, Offset: -1}
	if len(ref) <= maxFieldShow && len(got) <= maxFieldShow && key != "body" && key != "bytes" {
		d.Reference, d.Replayed = escape([]byte(ref), maxFieldShow), escape([]byte(got), maxFieldShow)
		return d
	}
	i := 0
	for i < len(ref) && i < len(got) && ref[i] == got[i] {
		i++
	}
	d.Offset = int64(i)
	lo := max(i-16, 0)
	show := func(s string) string {
		hi := min(len(s), i+48)
		pre := ""
		if lo > 0 {
			pre = "…"
		}
		if lo >= hi {
			return pre
		}
		return pre + escape([]byte(s[lo:hi]), maxFieldShow) + map[bool]string{true: "…", false: ""}[hi < len(s)]
	}
	d.Reference, d.Replayed = show(ref), show(got)
	return d
}
