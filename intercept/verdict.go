package intercept

import (
	"math"
	"math/bits"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// The Recorder's per-request bookkeeping: every request of every copy
// arrives here (reqRec); the target's answers are compared with the
// reference (the baseline's answer to the same request of the same copy,
// else the captured one), the baseline's with the capture and with its
// own earlier answers to the same request (what differs there is noise,
// learned per route), and the response times are added to per-route
// histograms. Whether a difference is a regression is decided at Report,
// once the noise of the whole run is known.
//
// Memory: per route a few histograms, the noise fields, and one group per
// distinct set of differing fields (at most maxGroups per route) with a
// few examples (maxStored in all); the baseline's first answer to each
// distinct request (at most maxBaseReqs); and the requests of a copy
// whose twin has not answered them yet.

const (
	maxRoutes    = 1000 // further routes are counted under "(other)"
	maxGroups    = 64   // distinct difference sets per route
	maxExamples  = 3    // regression examples kept per difference set
	maxStored    = 2000 // regression examples kept in all (each up to about 3 × 4 KiB of answers)
	maxBaseReqs  = 1024 // baseline answers kept to learn noise between them
	maxRouteRegs = 10   // regressions reported per route
	maxLead      = 4096 // requests of one copy held for its twin
	otherRoute   = "(other)"
)

type reqStats struct {
	mu       sync.Mutex
	baseline bool // a baseline runs: the reference is its answers
	routes   map[string]*routeAgg
	order    []string
	joins    map[joinKey]*join
	baseReq  map[uint64]*answer
	stored   int // examples kept (maxStored)
}

// joinKey names one copy of one session: a target copy and its baseline
// twin share it.
type joinKey struct {
	pass, copy int
	id         uint64
}

// join holds a copy's requests until its twin's arrive.
type join struct {
	cand, base     []reqRec
	candEnd, bDone bool
	session        uint64 // the session's start number
}

// routeAgg is one route's counts.
type routeAgg struct {
	proto                   string
	requests, same, notComp int64
	groups                  map[string]*diffGroup
	overflow                *diffGroup
	noise                   map[string]bool
	lat                     [3]latHist // captured, replayed, baseline: to the last byte
	first                   [3]latHist // the same to the first byte
}

const (
	latCaptured = 0
	latReplayed = 1
	latBaseline = 2
)

// diffGroup counts the requests of a route that differed from their
// reference in the same fields.
type diffGroup struct {
	keys     []string // folded field names
	count    int64
	examples []Regression
}

func newReqStats(baseline bool) *reqStats {
	return &reqStats{baseline: baseline, routes: map[string]*routeAgg{}, joins: map[joinKey]*join{}, baseReq: map[uint64]*answer{}}
}

func (s *reqStats) route(name, proto string) *routeAgg {
	ra := s.routes[name]
	if ra == nil {
		if len(s.routes) >= maxRoutes {
			name = otherRoute
			if ra = s.routes[name]; ra != nil {
				return ra
			}
		}
		ra = &routeAgg{proto: proto, groups: map[string]*diffGroup{}, noise: map[string]bool{}}
		s.routes[name] = ra
		s.order = append(s.order, name)
	}
	return ra
}

// add takes one request of one copy. The answers are compared outside
// the lock (decoding JSON is the costly part): only the counting is
// serialised. An answer is shared between goroutines only once its fields
// are made (fieldList), after which it is only read.
func (s *reqStats) add(k joinKey, session uint64, isBase bool, rec reqRec) {
	var noise []FieldDiff
	if isBase && !rec.lost && rec.rep != nil {
		rec.rep.fieldList()
		if rec.cap != nil {
			noise = diffAnswers(rec.cap, rec.rep)
		}
	}
	s.mu.Lock()
	ra := s.route(rec.route, rec.proto)
	var prev *answer
	if isBase {
		ra.lat[latBaseline].addAnswer(rec.rep, &ra.first[latBaseline])
		ra.learn(noise)
		if !rec.lost && rec.rep != nil {
			if prev = s.baseReq[rec.reqKey]; prev == nil && len(s.baseReq) < maxBaseReqs {
				s.baseReq[rec.reqKey] = rec.rep
			}
		}
	} else {
		if k.pass == 0 && k.copy == 0 {
			// The capture's times once, not once per --multiply copy or
			// --loop pass.
			ra.lat[latCaptured].addAnswer(rec.cap, &ra.first[latCaptured])
		}
		ra.lat[latReplayed].addAnswer(rec.rep, &ra.first[latReplayed])
	}
	var pairs [][2]*reqRec
	if s.baseline {
		j := s.joins[k]
		if j == nil {
			j = &join{session: session}
			s.joins[k] = j
		}
		if isBase {
			j.base = append(j.base, rec)
		} else {
			j.cand = append(j.cand, rec)
		}
		pairs = s.pairLocked(k, j, false)
	}
	s.mu.Unlock()

	if prev != nil {
		// Two baseline answers to the same request: what differs is noise.
		if d := diffAnswers(prev, rec.rep); len(d) > 0 {
			s.mu.Lock()
			ra.learn(d)
			s.mu.Unlock()
		}
	}
	if !s.baseline && !isBase {
		s.judge(session, k, &rec, nil)
	}
	for _, p := range pairs {
		s.judge(session, k, p[0], p[1])
	}
}

// done: one copy of k has no more requests.
func (s *reqStats) done(k joinKey, session uint64, isBase bool) {
	if !s.baseline {
		return
	}
	s.mu.Lock()
	j := s.joins[k]
	if j == nil {
		j = &join{session: session}
		s.joins[k] = j
	}
	if isBase {
		j.bDone = true
	} else {
		j.candEnd = true
	}
	pairs := s.pairLocked(k, j, j.bDone && j.candEnd)
	s.mu.Unlock()
	for _, p := range pairs {
		s.judge(session, k, p[0], p[1])
	}
}

// pairLocked takes the requests both copies have, to be judged; final:
// both are done, and the target's requests left have no twin (nil). The
// join is then forgotten.
func (s *reqStats) pairLocked(k joinKey, j *join, final bool) [][2]*reqRec {
	var out [][2]*reqRec
	// Twins pair by request number: a request one side gave up on (held
	// too long, below) has no twin.
	for len(j.cand) > 0 && len(j.base) > 0 {
		c, b := j.cand[0], j.base[0]
		switch {
		case c.idx == b.idx:
			j.cand, j.base = j.cand[1:], j.base[1:]
			out = append(out, [2]*reqRec{&c, &b})
		case c.idx < b.idx:
			j.cand = j.cand[1:]
			out = append(out, [2]*reqRec{&c, nil})
		default:
			j.base = j.base[1:]
		}
	}
	// A twin that has ended (or lags by more than maxLead requests) will
	// not answer these: judge them now rather than hold them.
	for len(j.cand) > 0 && (j.bDone || len(j.cand) > maxLead) {
		c := j.cand[0]
		j.cand = j.cand[1:]
		out = append(out, [2]*reqRec{&c, nil})
	}
	if j.candEnd || len(j.base) > maxLead {
		j.base = j.base[:0] // the target's copy will not ask for them
	}
	if final {
		for i := range j.cand {
			out = append(out, [2]*reqRec{&j.cand[i], nil})
		}
		delete(s.joins, k)
	}
	return out
}

// flush judges the copies whose twin never finished (at Report).
func (s *reqStats) flush() {
	s.mu.Lock()
	var todo []struct {
		k     joinKey
		j     *join
		pairs [][2]*reqRec
	}
	for k, j := range s.joins {
		todo = append(todo, struct {
			k     joinKey
			j     *join
			pairs [][2]*reqRec
		}{k, j, s.pairLocked(k, j, true)})
	}
	s.mu.Unlock()
	for _, t := range todo {
		for _, p := range t.pairs {
			s.judge(t.j.session, t.k, p[0], p[1])
		}
	}
}

// judge compares one target request with its reference — its baseline
// twin's answer (base; nil when it has none) when a baseline runs, else
// the captured answer — and counts the verdict.
func (s *reqStats) judge(session uint64, k joinKey, c *reqRec, base *reqRec) {
	notComp := false
	ref := c.cap
	if s.baseline {
		if base == nil || base.lost {
			notComp = true
		} else {
			ref = base.rep
		}
	}
	notComp = notComp || c.lost
	var diffs []FieldDiff
	switch {
	case notComp:
	case c.rep == nil && ref == nil:
		// Neither answered (the turn had no answer): they agree.
	case c.rep == nil:
		diffs = []FieldDiff{{Field: "answer", Offset: -1, Reference: cutText(ref.text(), maxFieldShow), Missing: "replayed"}}
	case c.rep.broken && ref != nil:
		diffs = []FieldDiff{{Field: "answer", Offset: -1, Reference: cutText(ref.text(), maxFieldShow),
			Replayed: cutText(c.rep.fields[0].val+": "+c.rep.text(), maxFieldShow)}}
	case ref == nil:
		diffs = []FieldDiff{{Field: "answer", Offset: -1, Replayed: cutText(c.rep.text(), maxFieldShow), Missing: "reference"}}
	default:
		diffs = diffAnswers(ref, c.rep)
	}
	var keys []string
	var sig string
	if len(diffs) > 0 {
		keys = make([]string, len(diffs))
		for i, d := range diffs {
			keys[i] = foldIndices(d.Field)
		}
		sig = strings.Join(keys, "\x00")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ra := s.route(c.route, c.proto)
	ra.requests++
	switch {
	case notComp:
		ra.notComp++
		return
	case len(diffs) == 0:
		ra.same++
		return
	}
	g := ra.groups[sig]
	if g == nil {
		if len(ra.groups) >= maxGroups {
			if ra.overflow == nil {
				ra.overflow = &diffGroup{}
			}
			g = ra.overflow
			g.keys = mergeKeys(g.keys, keys)
		} else {
			g = &diffGroup{keys: keys}
			ra.groups[sig] = g
		}
	}
	g.count++
	if len(g.examples) < maxExamples && s.stored < maxStored {
		// Made only when kept (few are): the texts cost more than the
		// comparison.
		against := AgainstCaptured
		if base != nil {
			against = AgainstBaseline
		}
		ex := Regression{
			Route: c.route, Session: session, Pass: k.pass, Copy: k.copy, Request: c.idx,
			RequestText: escapeLines(c.reqRaw, maxRequestShow), Against: against, Differences: diffs,
			Replayed: showAnswer(c.rep), Reference: showAnswer(ref),
		}
		if base != nil && c.cap != nil {
			ca := showAnswer(c.cap)
			ex.Captured = &ca
		}
		g.examples = append(g.examples, ex)
		s.stored++
	}
}

// cutText cuts readable text (already escaped) at about n bytes, on a
// character boundary.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func mergeKeys(a, b []string) []string {
	seen := map[string]bool{}
	for _, k := range a {
		seen[k] = true
	}
	for _, k := range b {
		if !seen[k] {
			a = append(a, k)
			seen[k] = true
		}
	}
	return a
}

func showAnswer(a *answer) Answer {
	if a == nil {
		return Answer{Text: "(no answer)", FirstByteUS: -1, LastByteUS: -1}
	}
	us := func(ns int64) float64 {
		if ns < 0 {
			return -1
		}
		return math.Round(float64(ns)/10) / 100
	}
	t := a.text()
	return Answer{Text: t, Truncated: a.truncated, FirstByteUS: us(a.first), LastByteUS: us(a.last)}
}

// learn adds the fields of a baseline difference to the route's noise.
func (ra *routeAgg) learn(diffs []FieldDiff) {
	for _, d := range diffs {
		ra.noise[foldIndices(d.Field)] = true
	}
}

// results computes the report's per-request parts.
func (s *reqStats) results(rep *Report) {
	s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	against := AgainstCaptured
	if s.baseline {
		against = AgainstBaseline
	}
	rep.Requests = RequestTotals{Against: against}
	var all [3]latHist
	var allFirst [3]latHist
	names := append([]string(nil), s.order...)
	sort.Strings(names)
	for _, name := range names {
		ra := s.routes[name]
		rr := RouteReport{Route: name, Protocol: ra.proto, Requests: ra.requests, Same: ra.same, NotCompared: ra.notComp}
		for k := range ra.noise {
			rr.NoiseFields = append(rr.NoiseFields, k)
		}
		sort.Strings(rr.NoiseFields)
		groups := make([]*diffGroup, 0, len(ra.groups)+1)
		for _, g := range ra.groups {
			groups = append(groups, g)
		}
		if ra.overflow != nil {
			groups = append(groups, ra.overflow)
		}
		sort.Slice(groups, func(i, j int) bool { return groups[i].count > groups[j].count })
		kept := 0
		for _, g := range groups {
			if !ra.regresses(g.keys) {
				rr.Noise += g.count
				continue
			}
			rr.Regressions += g.count
			for _, ex := range g.examples {
				if kept >= maxRouteRegs {
					break
				}
				ex.Differences = ra.withoutNoise(ex.Differences)
				rep.Regressions = append(rep.Regressions, ex)
				kept++
			}
		}
		rr.ResponseTime = responseTime(&ra.lat, &ra.first, s.baseline)
		for i := range all {
			all[i].merge(&ra.lat[i])
			allFirst[i].merge(&ra.first[i])
		}
		t := &rep.Requests
		t.Requests += rr.Requests
		t.Same += rr.Same
		t.Noise += rr.Noise
		t.Regressions += rr.Regressions
		t.NotCompared += rr.NotCompared
		rep.Routes = append(rep.Routes, rr)
	}
	rep.ResponseTime = responseTime(&all, &allFirst, s.baseline)
}

// regresses reports whether a difference set has a field that is not
// noise.
func (ra *routeAgg) regresses(keys []string) bool {
	for _, k := range keys {
		if !ra.noise[k] {
			return true
		}
	}
	return false
}

func (ra *routeAgg) withoutNoise(ds []FieldDiff) []FieldDiff {
	out := make([]FieldDiff, 0, len(ds))
	for _, d := range ds {
		if !ra.noise[foldIndices(d.Field)] {
			out = append(out, d)
		}
	}
	return out
}

func responseTime(lat, first *[3]latHist, baseline bool) ResponseTime {
	rt := ResponseTime{
		Captured: lat[latCaptured].stats(&first[latCaptured]),
		Replayed: lat[latReplayed].stats(&first[latReplayed]),
		Baseline: lat[latBaseline].stats(&first[latBaseline]),
	}
	ref := rt.Captured
	rt.Ratio.Against = AgainstCaptured
	if baseline {
		ref, rt.Ratio.Against = rt.Baseline, AgainstBaseline
	}
	ratio := func(a, b float64) float64 {
		if a <= 0 || b <= 0 || rt.Replayed.Count == 0 || ref.Count == 0 {
			return 0
		}
		return math.Round(a/b*1000) / 1000
	}
	rt.Ratio.P50 = ratio(rt.Replayed.P50US, ref.P50US)
	rt.Ratio.P90 = ratio(rt.Replayed.P90US, ref.P90US)
	rt.Ratio.P99 = ratio(rt.Replayed.P99US, ref.P99US)
	return rt
}

// latHist is a small log-linear histogram of nanoseconds (16 buckets per
// power of two, about 4 % resolution), sparse: a route costs only the
// buckets it uses.
type latHist struct {
	b     map[uint16]int64
	count int64
	max   int64
}

const latSub = 16

func latIndex(v uint64) uint16 {
	e := bits.Len64(v) - 5
	if e <= 0 {
		return uint16(v)
	}
	return uint16(e*latSub + int(v>>uint(e)))
}

func latLower(i int) uint64 {
	if i < 2*latSub {
		return uint64(i)
	}
	e := i/latSub - 1
	return uint64(i-e*latSub) << uint(e)
}

func (h *latHist) add(ns int64) {
	ns = max(ns, 0)
	if h.b == nil {
		h.b = map[uint16]int64{}
	}
	h.b[latIndex(uint64(ns))]++
	h.count++
	h.max = max(h.max, ns)
}

// addAnswer records an answer's last-byte time here and its first-byte
// time in first.
func (h *latHist) addAnswer(a *answer, first *latHist) {
	if a == nil || a.last < 0 {
		return
	}
	h.add(a.last)
	first.add(a.first)
}

func (h *latHist) merge(o *latHist) {
	for k, v := range o.b {
		if h.b == nil {
			h.b = map[uint16]int64{}
		}
		h.b[k] += v
	}
	h.count += o.count
	h.max = max(h.max, o.max)
}

// quantile is the upper bound of the bucket holding q (never understated),
// capped by the maximum.
func (h *latHist) quantile(q float64) int64 {
	if h.count == 0 {
		return 0
	}
	keys := make([]int, 0, len(h.b))
	for k := range h.b {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	rank := max(int64(math.Ceil(q*float64(h.count))), 1)
	var seen int64
	for _, k := range keys {
		seen += h.b[uint16(k)]
		if seen >= rank {
			return min(int64(latLower(k+1))-1, h.max)
		}
	}
	return h.max
}

func (h *latHist) percentiles() Percentiles {
	us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
	return Percentiles{P50US: us(h.quantile(0.5)), P90US: us(h.quantile(0.9)), P99US: us(h.quantile(0.99)), MaxUS: us(h.max)}
}

func (h *latHist) stats(first *latHist) LatencyStats {
	return LatencyStats{Count: h.count, Percentiles: h.percentiles(), FirstByte: first.percentiles(), Histogram: h.buckets()}
}

// buckets lists the non-empty buckets in order, each with its upper bound
// (capped by the maximum, as quantile is).
func (h *latHist) buckets() []LatencyBucket {
	if h.count == 0 {
		return nil
	}
	keys := make([]int, 0, len(h.b))
	for k := range h.b {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	out := make([]LatencyBucket, len(keys))
	for i, k := range keys {
		up := min(int64(latLower(k+1))-1, h.max)
		out[i] = LatencyBucket{UpperUS: math.Round(float64(up)/10) / 100, Count: h.b[uint16(k)]}
	}
	return out
}

// counts is RequestTotals over the requests judged so far, without the
// report's other parts and without pairing the requests still waiting for
// their twin: cheap enough for every scrape of a metrics endpoint.
func (s *reqStats) counts() RequestTotals {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := RequestTotals{Against: AgainstCaptured}
	if s.baseline {
		t.Against = AgainstBaseline
	}
	for _, ra := range s.routes {
		t.Requests += ra.requests
		t.Same += ra.same
		t.NotCompared += ra.notComp
		count := func(g *diffGroup) {
			if ra.regresses(g.keys) {
				t.Regressions += g.count
			} else {
				t.Noise += g.count
			}
		}
		for _, g := range ra.groups {
			count(g)
		}
		if ra.overflow != nil {
			count(ra.overflow)
		}
	}
	return t
}

// Requests returns the per-request totals so far (see reqStats.counts):
// regressions are judged with the noise learned until now, so a request
// counted as a regression early may turn out noise in the final report.
func (r *Recorder) Requests() RequestTotals {
	if r.reqs == nil {
		return RequestTotals{Against: AgainstCaptured}
	}
	return r.reqs.counts()
}
