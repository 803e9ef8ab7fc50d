package htmlreport

import (
	"bufio"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
)

// The page's bounds: beyond them the page says how many it left out (the
// JSON report has them all).
const (
	maxRoutes      = 1000 // rows of the routes table
	maxRoutePlots  = 100  // per-route plots, for the first routes of the table
	maxRegressions = 200  // regressed requests shown with their answers
)

//go:embed page.html
var pageHTML string

var pageTmpl = template.Must(template.New("page").Parse(pageHTML))

// Write writes rep as one self-contained HTML page.
func Write(w io.Writer, rep *intercept.Report) error {
	bw := bufio.NewWriter(w)
	if err := pageTmpl.Execute(bw, newPage(rep)); err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write html report: %w", err)
	}
	return nil
}

// page is what the template shows; every field is made from the report.
type page struct {
	Title       string
	Started     string
	Against     string // "baseline" or "capture"
	HasBaseline bool
	Verdict     string
	VerdictOK   bool
	Cards       []card
	SummaryText string
	Overall     *plot
	Sides       []sideRow
	RatioNote   string
	Routes      []routeRow
	RoutesLeft  int
	Regressions []regView
	RegsLeft    int64 // regressed requests not shown (counted, or past maxRegressions)
	NoRequests  bool
}

type card struct {
	Label, Value, Class string
}

// sideRow is one line of the overall latency table.
type sideRow struct {
	Side, Label                  string
	Count                        int64
	P50, P90, P99, Max, FirstP50 string
}

// routeRow is one line of the routes table.
type routeRow struct {
	Index                                      int
	Route, Protocol                            string
	Requests, Same, Noise, Regressions, NotCmp int64
	Lat                                        []latCell // captured, baseline, target
	RatioP50, RatioP99                         string
	Slower                                     bool
	NoiseFields                                string
	Plot                                       *plot
	FirstReg                                   string // anchor of the route's first regressed request shown
}

type latCell struct {
	Side, Label        string
	P50, P90, P99, Max string
}

// regView is one regressed request.
type regView struct {
	Anchor              string
	Route               string
	Session             uint64
	Pass, Copy, Request int
	RequestText         string
	Against             string
	Differences         []diffRow
	Answers             []answerView
	Hex                 bool
}

type diffRow struct {
	Field, Offset, Reference, Replayed, Missing string
}

// answerView is one side's answer, cut into marked runs (text) or hex
// lines (binary).
type answerView struct {
	Side, Title, Timing string
	Segs                []seg
	Hex                 []hexLine
	Truncated           bool
	Empty               bool
}

func newPage(rep *intercept.Report) *page {
	p := &page{Title: "tcopy-tun report", Against: "capture"}
	q := rep.Requests
	p.HasBaseline = q.Against == intercept.AgainstBaseline || rep.ResponseTime.Baseline.Count > 0
	if q.Against == intercept.AgainstBaseline {
		p.Against = "baseline"
	}
	if s := rep.Summary; s != nil {
		if !s.Start.IsZero() {
			p.Started = s.Start.UTC().Format(time.RFC3339)
		}
		p.Cards = append(p.Cards,
			card{"sessions replayed", strconv.FormatInt(s.Replayed, 10), ""},
			card{"sessions succeeded", strconv.FormatInt(s.Succeeded, 10), ""},
		)
		if f := s.Failed.Total(); f > 0 {
			p.Cards = append(p.Cards, card{"sessions failed", strconv.FormatInt(f, 10), "bad"})
		}
	}
	p.NoRequests = q.Requests == 0
	regClass := "good"
	if q.Regressions > 0 {
		regClass = "bad"
	}
	p.Cards = append(p.Cards,
		card{"requests compared", strconv.FormatInt(q.Requests, 10), ""},
		card{"same", strconv.FormatInt(q.Same, 10), ""},
		card{"noise only", strconv.FormatInt(q.Noise, 10), ""},
		card{"regressed", strconv.FormatInt(q.Regressions, 10), regClass},
		card{"not compared", strconv.FormatInt(q.NotCompared, 10), ""},
	)
	rt := rep.ResponseTime
	ref := rt.Captured
	if rt.Ratio.Against == intercept.AgainstBaseline {
		ref = rt.Baseline
	}
	if rt.Ratio.P50 > 0 {
		p.Cards = append(p.Cards, card{"target/" + p.Against + " p50", fmtRatio(rt.Ratio.P50), ratioClass(rt.Ratio.P50, rt.Replayed.P50US-ref.P50US)})
	}
	if rt.Ratio.P99 > 0 {
		p.Cards = append(p.Cards, card{"target/" + p.Against + " p99", fmtRatio(rt.Ratio.P99), ratioClass(rt.Ratio.P99, rt.Replayed.P99US-ref.P99US)})
	}
	switch {
	case q.Requests == 0:
		p.Verdict = "No request was compared."
	case q.Regressions == 0:
		p.Verdict = fmt.Sprintf("No regression: %d requests answered as the %s did (after noise and --ignore rules).", q.Requests, p.Against)
		p.VerdictOK = true
	default:
		p.Verdict = fmt.Sprintf("%d of %d requests regressed: the target answered differently from the %s beyond noise and --ignore rules.", q.Regressions, q.Requests, p.Against)
	}
	p.SummaryText = summaryText(rep)
	p.Overall = cdfPlot("plot-all", "all requests", rt)
	for _, s := range sides(rt) {
		if s.name == "baseline" && !p.HasBaseline {
			continue
		}
		st := s.stats
		row := sideRow{Side: s.name, Label: s.label, Count: st.Count}
		if st.Count > 0 {
			row.P50, row.P90, row.P99, row.Max = fmtUS(st.P50US), fmtUS(st.P90US), fmtUS(st.P99US), fmtUS(st.MaxUS)
			row.FirstP50 = fmtUS(st.FirstByte.P50US)
		}
		p.Sides = append(p.Sides, row)
	}
	p.Routes, p.RoutesLeft = routeRows(rep.Routes, p.HasBaseline)
	p.Regressions = regViews(rep.Regressions)
	first := map[string]string{}
	for _, r := range p.Regressions {
		if first[r.Route] == "" {
			first[r.Route] = r.Anchor
		}
	}
	for i := range p.Routes {
		p.Routes[i].FirstReg = first[p.Routes[i].Route]
	}
	p.RegsLeft = max(q.Regressions-int64(len(p.Regressions)), 0)
	return p
}

// summaryText is the end-of-run summary as the command prints it.
func summaryText(rep *intercept.Report) string {
	var sb strings.Builder
	if rep.Summary != nil {
		rep.Summary.WriteText(&sb)
	}
	rep.Totals.WriteText(&sb)
	rep.WriteRequestsText(&sb)
	return sb.String()
}

// routeRows orders the routes for the table: those that regressed first
// (most regressions first), then those whose target is the most slower
// than their reference (by time: a ratio of two fast answers is mostly
// jitter), then by name.
func routeRows(routes []intercept.RouteReport, baseline bool) ([]routeRow, int) {
	order := make([]int, len(routes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		a, b := &routes[order[i]], &routes[order[j]]
		if a.Regressions != b.Regressions {
			return a.Regressions > b.Regressions
		}
		if ea, eb := excess(a.ResponseTime), excess(b.ResponseTime); ea != eb {
			return ea > eb
		}
		return a.Route < b.Route
	})
	left := 0
	if len(order) > maxRoutes {
		left = len(order) - maxRoutes
		order = order[:maxRoutes]
	}
	out := make([]routeRow, 0, len(order))
	for n, i := range order {
		r := &routes[i]
		row := routeRow{
			Index: n, Route: r.Route, Protocol: r.Protocol,
			Requests: r.Requests, Same: r.Same, Noise: r.Noise, Regressions: r.Regressions, NotCmp: r.NotCompared,
			RatioP50: fmtRatio(r.ResponseTime.Ratio.P50), RatioP99: fmtRatio(r.ResponseTime.Ratio.P99),
			Slower:      slower(r.ResponseTime),
			NoiseFields: strings.Join(r.NoiseFields, ", "),
		}
		for _, s := range sides(r.ResponseTime) {
			if s.name == "baseline" && !baseline {
				continue
			}
			c := latCell{Side: s.name, Label: s.label}
			if s.stats.Count > 0 {
				c.P50, c.P90, c.P99, c.Max = fmtUS(s.stats.P50US), fmtUS(s.stats.P90US), fmtUS(s.stats.P99US), fmtUS(s.stats.MaxUS)
			}
			row.Lat = append(row.Lat, c)
		}
		if n < maxRoutePlots {
			row.Plot = cdfPlot(fmt.Sprintf("plot-route-%d", n), r.Route, r.ResponseTime)
		}
		out = append(out, row)
	}
	return out, left
}

// excess is how much later the target's p50 is than its reference's, in
// microseconds (0 when either is not measured).
func excess(rt intercept.ResponseTime) float64 {
	ref := rt.Captured
	if rt.Ratio.Against == intercept.AgainstBaseline {
		ref = rt.Baseline
	}
	if ref.Count == 0 || rt.Replayed.Count == 0 {
		return 0
	}
	return rt.Replayed.P50US - ref.P50US
}

// slower reports whether a route's target is clearly slower than its
// reference: a p50 at least 1.5 times and 1 ms above it (a few
// microseconds more on a fast route is the machine's jitter).
func slower(rt intercept.ResponseTime) bool {
	return rt.Ratio.P50 >= 1.5 && excess(rt) >= 1000
}

func fmtRatio(r float64) string {
	if r <= 0 {
		return "–"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// ratioClass colours a ratio: bad when the target is clearly slower (as
// slower tells), good when it is about as fast or faster.
func ratioClass(r, excessUS float64) string {
	switch {
	case r >= 1.5 && excessUS >= 1000:
		return "bad"
	case r > 0 && r <= 1.1:
		return "good"
	}
	return ""
}

func regViews(regs []intercept.Regression) []regView {
	if len(regs) > maxRegressions {
		regs = regs[:maxRegressions]
	}
	out := make([]regView, 0, len(regs))
	for i := range regs {
		out = append(out, regView1(i, &regs[i]))
	}
	return out
}

func regView1(i int, g *intercept.Regression) regView {
	v := regView{
		Anchor: fmt.Sprintf("reg-%d", i), Route: g.Route, Session: g.Session, Pass: g.Pass, Copy: g.Copy,
		Request: g.Request, RequestText: g.RequestText, Against: g.Against,
	}
	var refKeys, repKeys []string
	for _, d := range g.Differences {
		off := ""
		if d.Offset >= 0 {
			off = strconv.FormatInt(d.Offset, 10)
		}
		v.Differences = append(v.Differences, diffRow{Field: d.Field, Offset: off, Reference: d.Reference, Replayed: d.Replayed, Missing: d.Missing})
		refKeys = append(refKeys, keyValues(d.Reference)...)
		repKeys = append(repKeys, keyValues(d.Replayed)...)
	}
	refName := "capture"
	if g.Against == intercept.AgainstBaseline {
		refName = "baseline"
	}
	ref := answerView{Side: refName, Title: refName + " (reference)", Timing: timing(g.Reference), Truncated: g.Reference.Truncated}
	tgt := answerView{Side: "target", Title: "target", Timing: timing(g.Replayed), Truncated: g.Replayed.Truncated}
	rb, tb := unescape(g.Reference.Text), unescape(g.Replayed.Text)
	if isBinary(rb) || isBinary(tb) {
		v.Hex = true
		mr, mt := diffTokens(byteTokens(rb), byteTokens(tb))
		ref.Hex, tgt.Hex = hexDump(rb, mr), hexDump(tb, mt)
		ref.Empty, tgt.Empty = len(rb) == 0, len(tb) == 0
	} else {
		rt, tt := textTokens(g.Reference.Text), textTokens(g.Replayed.Text)
		mr, mt := diffTokens(rt, tt)
		ref.Segs, tgt.Segs = segments(rt, mr, refKeys), segments(tt, mt, repKeys)
		ref.Empty, tgt.Empty = len(rt) == 0, len(tt) == 0
	}
	v.Answers = []answerView{ref, tgt}
	if c := g.Captured; c != nil && g.Against == intercept.AgainstBaseline {
		// The capture, for context: marked against the baseline's answer
		// is not what regressed, so it is shown unmarked.
		capt := answerView{Side: "captured", Title: "capture", Timing: timing(*c), Truncated: c.Truncated}
		cb := unescape(c.Text)
		if v.Hex {
			capt.Hex = hexDump(cb, make([]bool, len(cb)))
		} else {
			capt.Segs = []seg{{Text: c.Text}}
		}
		capt.Empty = c.Text == ""
		v.Answers = append(v.Answers, capt)
	}
	return v
}

func timing(a intercept.Answer) string {
	if a.LastByteUS < 0 {
		return "not timed"
	}
	if a.FirstByteUS >= 0 {
		return fmt.Sprintf("first byte %s, last byte %s", fmtUS(a.FirstByteUS), fmtUS(a.LastByteUS))
	}
	return "last byte " + fmtUS(a.LastByteUS)
}
