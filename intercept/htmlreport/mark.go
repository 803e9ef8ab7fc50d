package htmlreport

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// seg is a run of an answer's text, marked when it differs from the other
// answer: Mark "d" for any difference, "key" for one that shows a value of
// the regressed fields (the report's Differences).
type seg struct {
	Text string
	Mark string
}

// maxDiffCells bounds the work of one token diff (the product of the two
// differing middles' token counts): beyond it the whole middle is marked.
// Answers are at most a few KiB (intercept cuts them), so this is rarely
// reached.
const maxDiffCells = 1 << 20

// diffTokens marks the tokens of a and b that are not part of a longest
// common subsequence: the common prefix and suffix are trimmed first, the
// middle is compared by dynamic programming when small enough.
func diffTokens(a, b []string) (ma, mb []bool) {
	ma, mb = make([]bool, len(a)), make([]bool, len(b))
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	am, bm := a[p:len(a)-s], b[p:len(b)-s]
	n, m := len(am), len(bm)
	if n == 0 || m == 0 || n*m > maxDiffCells {
		for i := range am {
			ma[p+i] = true
		}
		for j := range bm {
			mb[p+j] = true
		}
		return ma, mb
	}
	// lcs[i][j]: the LCS length of am[i:] and bm[j:], one row of m+1 per i.
	lcs := make([]int32, (n+1)*(m+1))
	at := func(i, j int) int32 { return lcs[i*(m+1)+j] }
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			v := max(at(i+1, j), at(i, j+1))
			if am[i] == bm[j] {
				v = at(i+1, j+1) + 1
			}
			lcs[i*(m+1)+j] = v
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case am[i] == bm[j]:
			i++
			j++
		case at(i+1, j) >= at(i, j+1):
			ma[p+i] = true
			i++
		default:
			mb[p+j] = true
			j++
		}
	}
	for ; i < n; i++ {
		ma[p+i] = true
	}
	for ; j < m; j++ {
		mb[p+j] = true
	}
	return ma, mb
}

// textTokens cuts a readable answer into words (letters and digits),
// escapes (\n, \xNN as intercept writes them), and single other runes,
// so that a changed number or id is marked alone, not its whole line.
func textTokens(s string) []string {
	var out []string
	for len(s) > 0 {
		n := 0
		switch r, size := utf8.DecodeRuneInString(s); {
		case r == '\\' && len(s) >= 4 && s[1] == 'x':
			n = 4
		case r == '\\' && len(s) >= 2:
			n = 2
		case isWord(r):
			for n < len(s) {
				r, sz := utf8.DecodeRuneInString(s[n:])
				if !isWord(r) {
					break
				}
				n += sz
			}
		default:
			n = size
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

func isWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// segments joins tokens into runs of equal marking. A marked run is "key"
// when it shows one of the regressed values.
func segments(toks []string, marks []bool, keys []string) []seg {
	var out []seg
	for i := 0; i < len(toks); {
		j := i
		var sb strings.Builder
		for j < len(toks) && marks[j] == marks[i] {
			sb.WriteString(toks[j])
			j++
		}
		s := seg{Text: sb.String()}
		if marks[i] {
			s.Mark = "d"
			if isKey(s.Text, keys) {
				s.Mark = "key"
			}
		}
		out = append(out, s)
		i = j
	}
	return out
}

// isKey reports whether a differing run shows one of the values of the
// regressed fields: the value itself (JSON strings without their quotes),
// or, for a value cut at its ends ("…"), a long enough part of it.
func isKey(text string, keys []string) bool {
	t := strings.Trim(strings.TrimSpace(text), `"`)
	if t == "" {
		return false
	}
	for _, k := range keys {
		if t == k || (len(t) >= 4 && strings.Contains(k, t)) || (len(k) >= 4 && strings.Contains(t, k)) {
			return true
		}
	}
	return false
}

// keyValues are the values the regressed fields show, as they appear in
// an answer's text: quotes and the cut marks removed.
func keyValues(vals ...string) []string {
	var out []string
	for _, v := range vals {
		v = strings.Trim(strings.TrimSpace(v), "…")
		v = strings.Trim(v, `"`)
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// unescape undoes intercept's escaping of an answer (\\, \n, \r, \t,
// \xNN; a final "…" marks a cut) to the bytes it shows; other text is
// taken as it is.
func unescape(s string) []byte {
	s = strings.TrimSuffix(s, "…")
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			out = append(out, c)
			continue
		}
		switch s[i+1] {
		case '\\':
			out = append(out, '\\')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'x':
			var v byte
			if i+3 < len(s) {
				if _, err := fmt.Sscanf(s[i+2:i+4], "%02x", &v); err == nil {
					out = append(out, v)
					i += 3
					continue
				}
			}
			out = append(out, c)
			continue
		default:
			out = append(out, c)
			continue
		}
		i++
	}
	return out
}

// isBinary reports whether an answer is mostly not text: more than a
// quarter of its bytes are control bytes or not UTF-8. Such an answer is
// shown as hex.
func isBinary(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	odd := 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			odd++
		case r < 0x20 && r != '\n' && r != '\r' && r != '\t', r == 0x7f:
			odd += size
		}
		i += max(size, 1)
	}
	return odd*4 > len(b)
}

// hexLine is one line of a hex dump: 16 bytes, each a hex pair and its
// printable form, marked as the byte diff marked it.
type hexLine struct {
	Offset string
	Hex    []seg
	ASCII  []seg
}

const hexPerLine = 16

// hexDump lays bytes out 16 to a line, with their marks.
func hexDump(b []byte, marks []bool) []hexLine {
	var out []hexLine
	for off := 0; off < len(b); off += hexPerLine {
		end := min(off+hexPerLine, len(b))
		l := hexLine{Offset: fmt.Sprintf("%04x", off)}
		hexToks := make([]string, 0, end-off)
		ascToks := make([]string, 0, end-off)
		for i := off; i < end; i++ {
			hexToks = append(hexToks, fmt.Sprintf("%02x ", b[i]))
			c := "."
			if b[i] >= 0x20 && b[i] < 0x7f {
				c = string(rune(b[i]))
			}
			ascToks = append(ascToks, c)
		}
		l.Hex = segments(hexToks, marks[off:end], nil)
		l.ASCII = segments(ascToks, marks[off:end], nil)
		out = append(out, l)
	}
	return out
}

// byteTokens makes each byte a token, for the hex view's diff.
func byteTokens(b []byte) []string {
	out := make([]string, len(b))
	for i, c := range b {
		out[i] = string([]byte{c})
	}
	return out
}
