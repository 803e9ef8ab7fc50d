package htmlreport

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/intercept/htmlreport/browsertest"
)

func render(t *testing.T, rep *intercept.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, rep); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestDiffTokens(t *testing.T) {
	for _, tc := range []struct {
		a, b         string
		wantA, wantB string // the marked tokens, joined by |
	}{
		{`{"price":6,"id":"x"}`, `{"price":7,"id":"x"}`, "6", "7"},
		{"same", "same", "", ""},
		{"", "new", "", "new"},
		{"a b c", "a c", "b| ", ""},
		{`\x00\x01\x02`, `\x00\xee\x02`, `\x01`, `\xee`},
	} {
		ta, tb := textTokens(tc.a), textTokens(tc.b)
		ma, mb := diffTokens(ta, tb)
		pick := func(toks []string, m []bool) string {
			var out []string
			for i, x := range toks {
				if m[i] {
					out = append(out, x)
				}
			}
			return strings.Join(out, "|")
		}
		if ga, gb := pick(ta, ma), pick(tb, mb); ga != tc.wantA || gb != tc.wantB {
			t.Errorf("diff %q / %q: marked %q / %q, want %q / %q", tc.a, tc.b, ga, gb, tc.wantA, tc.wantB)
		}
	}
}

func TestUnescapeAndBinary(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   []byte
		binary bool
	}{
		{`GET\r\n`, []byte("GET\r\n"), false},
		{`a\\b\tc`, []byte("a\\b\tc"), false},
		{`\x00\x01\x02\xff` + "…", []byte{0, 1, 2, 0xff}, true},
		{`\xzz`, []byte(`\xzz`), false},
		{"héllo \\n", []byte("héllo \n"), false},
		{"", []byte{}, false},
	} {
		got := unescape(tc.in)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("unescape(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if b := isBinary(got); b != tc.binary {
			t.Errorf("isBinary(%q) = %v, want %v", got, b, tc.binary)
		}
	}
}

func TestFmtUS(t *testing.T) {
	for us, want := range map[float64]string{0: "0", 12: "12µs", 850.4: "850µs", 1500: "1.5ms", 101000: "101ms", 2e6: "2s"} {
		if got := fmtUS(us); got != want {
			t.Errorf("fmtUS(%v) = %q, want %q", us, got, want)
		}
	}
}

// TestPageEscapesHostileText: markup in a route, a request, an answer and
// a difference's values is shown as text: no element of it reaches the
// page.
func TestPageEscapesHostileText(t *testing.T) {
	rep := testReport(true)
	rep.Regressions[0].RequestText = `GET /"><script>alert(1)</script> HTTP/1.1`
	html := render(t, rep)
	for _, bad := range []string{`<script>document.title`, `<img src=x`, `<script>alert(1)`, `"><script>`} {
		if strings.Contains(html, bad) {
			t.Errorf("page holds %q unescaped", bad)
		}
	}
	for _, want := range []string{
		`&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;`, // the hostile route and answer, as text
		`&lt;img`, `src=x onerror=alert(1)&gt;`, // the answer's markup, cut by the marks
		`GET /&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt; HTTP/1.1`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks the escaped text %q", want)
		}
	}
	// The only scripts are the page's own one.
	if n := strings.Count(html, "<script>"); n != 1 {
		t.Errorf("%d <script> elements, want the page's own 1", n)
	}
}

// TestPageBinaryAsHex: an answer that is mostly not text is shown as a hex
// dump, the differing byte marked on both sides.
func TestPageBinaryAsHex(t *testing.T) {
	p := newPage(testReport(true))
	var bin *regView
	for i := range p.Regressions {
		if p.Regressions[i].Route == "HGETALL" {
			bin = &p.Regressions[i]
		}
	}
	if bin == nil || !bin.Hex {
		t.Fatalf("the HGETALL regression is not shown as hex: %+v", bin)
	}
	marked := func(a answerView) []string {
		var out []string
		for _, l := range a.Hex {
			for _, s := range l.Hex {
				if s.Mark != "" {
					out = append(out, strings.TrimSpace(s.Text))
				}
			}
		}
		return out
	}
	if got := marked(bin.Answers[0]); len(got) != 1 || got[0] != "02" {
		t.Errorf("baseline answer: marked %q, want the byte 02", got)
	}
	if got := marked(bin.Answers[1]); len(got) != 1 || got[0] != "ee" {
		t.Errorf("target answer: marked %q, want the byte ee", got)
	}
	html := render(t, testReport(true))
	if !regexp.MustCompile(`<pre class="hex">0000  2a 32 0d 0a`).MatchString(html) {
		t.Error("the hex dump does not start with the RESP reply's bytes (*2\\r\\n = 2a 32 0d 0a)")
	}
}

// TestPageMarksRegressedField: the regressed JSON field's values are
// marked "key" in both answers; the noise that also differs (ids,
// timestamps) is marked as a plain difference.
func TestPageMarksRegressedField(t *testing.T) {
	p := newPage(testReport(true))
	r := p.Regressions[0]
	if r.Route != "GET /api/items/{n}" || len(r.Answers) != 3 {
		t.Fatalf("first regression %s with %d answers; want GET /api/items/{n} with baseline, target and capture", r.Route, len(r.Answers))
	}
	keys := func(a answerView, mark string) []string {
		var out []string
		for _, s := range a.Segs {
			if s.Mark == mark {
				out = append(out, s.Text)
			}
		}
		return out
	}
	if got := keys(r.Answers[0], "key"); len(got) != 1 || got[0] != "6" {
		t.Errorf("baseline: key marks %q, want [6]", got)
	}
	if got := keys(r.Answers[1], "key"); len(got) != 1 || got[0] != "7" {
		t.Errorf("target: key marks %q, want [7]", got)
	}
	if got := keys(r.Answers[1], "d"); len(got) < 2 {
		t.Errorf("target: other differences marked %q, want the request id and timestamp", got)
	}
	if got := keys(r.Answers[2], "key"); len(got) != 0 || r.Answers[2].Side != "captured" {
		t.Errorf("capture column %s: marks %q, want none (it is context)", r.Answers[2].Side, got)
	}
}

// TestPageEmptyReport: a run that compared nothing still makes a page
// that says so, with no plot and no route.
func TestPageEmptyReport(t *testing.T) {
	html := render(t, &intercept.Report{Version: intercept.ReportVersion})
	for _, want := range []string{"No request was compared.", "no response time measured", "No route: no request was compared.", "No request was compared, so none regressed."} {
		if !strings.Contains(html, want) {
			t.Errorf("empty report: page lacks %q", want)
		}
	}
	if strings.Contains(html, "<polyline") {
		t.Error("empty report: a plot has a curve")
	}
}

// TestPageWithoutBaseline: capture against target, no baseline column,
// plot or answer.
func TestPageWithoutBaseline(t *testing.T) {
	p := newPage(testReport(false))
	if p.HasBaseline || p.Against != "capture" {
		t.Errorf("against %q, baseline %v; want the capture, no baseline", p.Against, p.HasBaseline)
	}
	for _, l := range p.Overall.Lines {
		if l.Side == "baseline" {
			t.Error("the overall plot draws a baseline")
		}
	}
	if len(p.Overall.Lines) != 2 {
		t.Errorf("overall plot: %d curves, want capture and target", len(p.Overall.Lines))
	}
	for _, s := range p.Sides {
		if s.Side == "baseline" {
			t.Error("the latency table has a baseline row")
		}
	}
	if r := p.Regressions[0]; len(r.Answers) != 2 || r.Answers[0].Side != "capture" {
		t.Errorf("answers %d, first %q; want the capture beside the target", len(r.Answers), r.Answers[0].Side)
	}
}

// TestPageBounded: a report at intercept's bounds (1000 routes, 2000
// regressions) makes a page of bounded size.
func TestPageBounded(t *testing.T) {
	rep := testReport(true)
	base := rep.Routes[0]
	for i := len(rep.Routes); i < 1200; i++ {
		r := base
		r.Route = "GET /r/" + itoa(i)
		rep.Routes = append(rep.Routes, r)
	}
	for len(rep.Regressions) < 2000 {
		rep.Regressions = append(rep.Regressions, rep.Regressions[0])
	}
	rep.Requests.Regressions = 5000
	p := newPage(rep)
	if len(p.Routes) != maxRoutes || p.RoutesLeft != 200 || len(p.Regressions) != maxRegressions || p.RegsLeft != 5000-maxRegressions {
		t.Errorf("routes %d (+%d), regressions %d (+%d); want %d, %d", len(p.Routes), p.RoutesLeft, len(p.Regressions), p.RegsLeft, maxRoutes, maxRegressions)
	}
	plots := 0
	for _, r := range p.Routes {
		if r.Plot != nil {
			plots++
		}
	}
	if plots != maxRoutePlots {
		t.Errorf("%d route plots, want %d", plots, maxRoutePlots)
	}
	if n := len(render(t, rep)); n > 8<<20 {
		t.Errorf("page of %d bytes", n)
	}
}

// TestPageInChromium loads the page in headless Chromium and checks what
// it shows once its script ran: the verdict, the routes with their
// regression counts, the plots' curves, both answers side by side with
// the regressed value marked, and that no hostile text became markup.
func TestPageInChromium(t *testing.T) {
	browsertest.Chromium(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, []byte(render(t, testReport(true))), 0o644); err != nil {
		t.Fatal(err)
	}
	dom := browsertest.DumpDOM(t, file)
	checkDOM(t, dom)
	if !strings.Contains(dom, `<tr class="plotrow" id="route-plot-0" hidden="">`) {
		t.Error("a route's plot is shown before it is asked for")
	}
	// #plots opens every route's plot (the buttons' click handlers).
	dom = browsertest.DumpDOM(t, file+"#plots")
	if strings.Contains(dom, `class="plotrow" id="route-plot-0" hidden`) || !strings.Contains(dom, `data-plot="route-plot-0">hide</button>`) {
		t.Error("#plots did not open the route plots")
	}
	if shot := os.Getenv("TCOPY_TUN_HTML_SCREENSHOT"); shot != "" {
		browsertest.Screenshot(t, file, shot, 1280, 2000)
	}
}

func checkDOM(t *testing.T, dom string) {
	t.Helper()
	if !strings.Contains(dom, "<title>tcopy-tun report</title>") {
		t.Error("the page's title changed: a hostile script ran")
	}
	for _, want := range []string{
		"42 of 133 requests regressed",
		`data-route="GET /api/items/{n}"`, `data-route="GET /api/slow"`, `data-route="HGETALL"`,
		`<td class="bad"><a href="#reg-0">40</a></td>`, // the items route's regressions, linked to the first shown
		`<polyline class="cdf target"`, `<polyline class="cdf baseline"`, `<polyline class="cdf captured"`,
		`<mark class="key">6</mark>`, `<mark class="key">7</mark>`,
		`<div class="answer baseline">`, `<div class="answer target">`, `<div class="answer captured">`,
		`<pre class="hex">`,
		`&lt;script&gt;document.title="pwned"&lt;/script&gt;`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks %q", want)
		}
	}
	// The script showed the plot buttons (hidden until it runs).
	if !regexp.MustCompile(`<button class="plotbtn" type="button" data-plot="route-plot-0">plot</button>`).MatchString(dom) {
		t.Error("the route plot buttons are still hidden: the page's script did not run")
	}
	if n := strings.Count(dom, `<svg class="plot"`); n != 1+5 {
		t.Errorf("%d plots in the DOM, want the overall one and one per route (6)", n)
	}
}
