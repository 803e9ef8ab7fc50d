package intercept

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Rules say what of an answer the comparison ignores (--ignore FILE):
// HTTP header names, JSON paths, regular expressions on bodies, and field
// names of any protocol, globally or per route. The file is YAML:
//
//	headers: [x-request-id, x-runtime]      # HTTP headers, any route
//	json: ["$.request_id", "$..updated_at"]  # JSON paths, any route
//	body: ['"ts":[0-9]+']                    # regular expressions on bodies
//	fields: ["reply[1]"]                     # decoded field names
//	routes:
//	  - route: "GET /api/items/{n}"          # exact, or a prefix ending in *
//	    json: ["$.stock"]
//	  - route: "GET /api/*"
//	    headers: [x-cache]
//
// JSON paths: $ is the document, .name or ["name"] a key, [n] an array
// element, [*] or .* any element or key, ..name a key at any depth. A
// regular expression (RE2 syntax) blanks what it matches in a body (an
// HTTP body after decoding, a RESP bulk string, a turn's bytes) before
// the comparison.
type Rules struct {
	global ruleSet
	routes []routeRules
}

type routeRules struct {
	pattern string // exact route, or prefix when prefix is set
	prefix  bool
	set     ruleSet
}

type ruleSet struct {
	headers map[string]bool
	json    [][]pathSeg
	body    []*regexp.Regexp
	fields  map[string]bool
}

// rulesFile is the YAML form.
type rulesFile struct {
	ruleFields `yaml:",inline"`
	Routes     []struct {
		Route      string `yaml:"route"`
		ruleFields `yaml:",inline"`
	} `yaml:"routes"`
}

type ruleFields struct {
	Headers []string `yaml:"headers"`
	JSON    []string `yaml:"json"`
	Body    []string `yaml:"body"`
	Fields  []string `yaml:"fields"`
}

// LoadRules reads rules from a YAML file.
func LoadRules(name string) (*Rules, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	defer f.Close()
	r, err := ParseRules(f)
	if err != nil {
		return nil, fmt.Errorf("read rules %q: %w", name, err)
	}
	return r, nil
}

// ParseRules reads rules in YAML. Unknown keys are errors (a misspelt key
// would otherwise silently ignore nothing).
func ParseRules(rd io.Reader) (*Rules, error) {
	var rf rulesFile
	d := yaml.NewDecoder(rd)
	d.KnownFields(true)
	if err := d.Decode(&rf); err != nil && !errors.Is(err, io.EOF) {
		// The YAML library lists several errors on several lines: the
		// CLI prints one.
		msg := strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "yaml: ")), " ")
		return nil, fmt.Errorf("yaml: %s", msg)
	}
	r := &Rules{}
	var err error
	if r.global, err = compileRuleSet(rf.ruleFields); err != nil {
		return nil, err
	}
	for i, rr := range rf.Routes {
		if strings.TrimSpace(rr.Route) == "" {
			return nil, fmt.Errorf("routes[%d]: route is empty", i)
		}
		set, err := compileRuleSet(rr.ruleFields)
		if err != nil {
			return nil, fmt.Errorf("routes[%d] (%s): %w", i, rr.Route, err)
		}
		pat, prefix := strings.CutSuffix(rr.Route, "*")
		r.routes = append(r.routes, routeRules{pattern: pat, prefix: prefix, set: set})
	}
	return r, nil
}

func compileRuleSet(f ruleFields) (ruleSet, error) {
	s := ruleSet{headers: map[string]bool{}, fields: map[string]bool{}}
	for _, h := range f.Headers {
		s.headers[strings.ToLower(strings.TrimSpace(h))] = true
	}
	for _, p := range f.JSON {
		segs, err := parseJSONPath(p)
		if err != nil {
			return s, err
		}
		s.json = append(s.json, segs)
	}
	for _, b := range f.Body {
		re, err := regexp.Compile(b)
		if err != nil {
			return s, fmt.Errorf("body regexp %q: %w", b, err)
		}
		s.body = append(s.body, re)
	}
	for _, k := range f.Fields {
		s.fields[strings.TrimSpace(k)] = true
	}
	return s, nil
}

// forRoute returns the rule sets that apply to a route: the global one and
// every matching route's.
func (r *Rules) forRoute(route string) []*ruleSet {
	if r == nil {
		return nil
	}
	sets := []*ruleSet{&r.global}
	for i := range r.routes {
		rr := &r.routes[i]
		if rr.pattern == route || rr.prefix && strings.HasPrefix(route, rr.pattern) {
			sets = append(sets, &rr.set)
		}
	}
	return sets
}

// applied is the rules for one route, merged.
type applied struct {
	headers map[string]bool
	json    [][]pathSeg
	body    []*regexp.Regexp
	fields  map[string]bool
}

func (r *Rules) apply(route string, volatile map[string]bool) *applied {
	a := &applied{headers: volatile, fields: map[string]bool{}}
	sets := r.forRoute(route)
	if len(sets) > 0 {
		a.headers = make(map[string]bool, len(volatile))
		for k := range volatile {
			a.headers[k] = true
		}
	}
	for _, s := range sets {
		for k := range s.headers {
			a.headers[k] = true
		}
		for k := range s.fields {
			a.fields[k] = true
		}
		a.json = append(a.json, s.json...)
		a.body = append(a.body, s.body...)
	}
	return a
}

// blank replaces what the body rules match.
func (a *applied) blank(b []byte) []byte {
	for _, re := range a.body {
		b = re.ReplaceAll(b, []byte("<ignored>"))
	}
	return b
}

// keepJSON reports whether a JSON path is compared (no rule ignores it).
func (a *applied) keepJSON(path []string) bool {
	for _, p := range a.json {
		if matchPath(p, path) {
			return false
		}
	}
	return true
}

// keepField reports whether a decoded field is compared.
func (a *applied) keepField(key string) bool {
	// "reply[1]" names one element, "reply[*]" any.
	return len(a.fields) == 0 || !a.fields[key] && !a.fields[foldIndices(key)]
}

// pathSeg is one step of a JSON path pattern.
type pathSeg struct {
	key  string // a key, or "[n]" an index
	any  bool   // [*] or .*: any key or index
	deep bool   // ..: at any depth below
}

// parseJSONPath parses a JSON path pattern ($.a.b[0], $..c, $.d[*]).
func parseJSONPath(p string) ([]pathSeg, error) {
	bad := func(why string) ([]pathSeg, error) {
		return nil, fmt.Errorf("json path %q: %s", p, why)
	}
	if !strings.HasPrefix(p, "$") {
		return bad("want it to start with $")
	}
	s := p[1:]
	var segs []pathSeg
	for len(s) > 0 {
		var seg pathSeg
		switch {
		case strings.HasPrefix(s, ".."):
			seg.deep = true
			s = s[2:]
		case s[0] == '.':
			s = s[1:]
		case s[0] == '[':
		default:
			return bad(fmt.Sprintf("unexpected %q", s[:1]))
		}
		switch {
		case strings.HasPrefix(s, "[*]"):
			seg.any = true
			s = s[3:]
		case strings.HasPrefix(s, "["):
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return bad("unclosed [")
			}
			in := s[1:end]
			if q, err := strconv.Unquote(in); err == nil {
				seg.key = q
			} else if _, err := strconv.Atoi(in); err == nil {
				seg.key = "[" + in + "]"
			} else {
				return bad(fmt.Sprintf("[%s]: want a number, * or a quoted key", in))
			}
			s = s[end+1:]
		case strings.HasPrefix(s, "*"):
			seg.any = true
			s = s[1:]
		default:
			end := strings.IndexAny(s, ".[")
			if end < 0 {
				end = len(s)
			}
			if end == 0 {
				return bad("empty key")
			}
			seg.key, s = s[:end], s[end:]
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// matchPath reports whether a concrete path (keys, and "[n]" indices)
// matches a pattern: the pattern covers the path or a prefix of it (an
// ignored object is ignored with everything in it).
func matchPath(pat []pathSeg, path []string) bool {
	if len(pat) == 0 {
		return true
	}
	p := pat[0]
	for i := range path {
		if !p.deep && i > 0 {
			return false
		}
		if (p.any || p.key == path[i]) && matchPath(pat[1:], path[i+1:]) {
			return true
		}
	}
	return false
}

// foldIndices replaces array indices in a field key by [*]: the form
// noise is learned and field rules match in.
func foldIndices(k string) string {
	if !strings.Contains(k, "[") {
		return k
	}
	var b bytes.Buffer
	for i := 0; i < len(k); i++ {
		if k[i] == '[' {
			j := i + 1
			for j < len(k) && k[j] >= '0' && k[j] <= '9' {
				j++
			}
			if j > i+1 && j < len(k) && k[j] == ']' {
				b.WriteString("[*]")
				i = j
				continue
			}
		}
		b.WriteByte(k[i])
	}
	return b.String()
}
