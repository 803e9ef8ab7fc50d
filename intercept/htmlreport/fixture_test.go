package htmlreport

import (
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
)

// latency makes one side's statistics from response times in
// microseconds, as intercept reports them: percentiles by rank, and a
// histogram with one bucket per distinct value.
func latency(us []float64) intercept.LatencyStats {
	if len(us) == 0 {
		return intercept.LatencyStats{}
	}
	s := append([]float64(nil), us...)
	sort.Float64s(s)
	q := func(f float64) float64 { return s[max(int(math.Ceil(f*float64(len(s))))-1, 0)] }
	st := intercept.LatencyStats{Count: int64(len(s))}
	st.P50US, st.P90US, st.P99US, st.MaxUS = q(0.5), q(0.9), q(0.99), s[len(s)-1]
	st.FirstByte = st.Percentiles
	for _, v := range s {
		if n := len(st.Histogram); n > 0 && st.Histogram[n-1].UpperUS == v {
			st.Histogram[n-1].Count++
			continue
		}
		st.Histogram = append(st.Histogram, intercept.LatencyBucket{UpperUS: v, Count: 1})
	}
	return st
}

// spread is n response times around median µs (deterministic).
func spread(r *rand.Rand, n int, median float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Round(median*math.Exp(r.NormFloat64()*0.35)*100) / 100
	}
	return out
}

func responseTime(capt, base, tgt []float64) intercept.ResponseTime {
	rt := intercept.ResponseTime{Captured: latency(capt), Baseline: latency(base), Replayed: latency(tgt)}
	ref := rt.Baseline
	rt.Ratio.Against = intercept.AgainstBaseline
	if base == nil {
		ref, rt.Ratio.Against = rt.Captured, intercept.AgainstCaptured
	}
	if ref.Count > 0 && rt.Replayed.Count > 0 {
		rt.Ratio.P50 = math.Round(rt.Replayed.P50US/ref.P50US*1000) / 1000
		rt.Ratio.P90 = math.Round(rt.Replayed.P90US/ref.P90US*1000) / 1000
		rt.Ratio.P99 = math.Round(rt.Replayed.P99US/ref.P99US*1000) / 1000
	}
	return rt
}

// testReport is a realistic report of comparing two builds of a JSON API
// (as the privileged end-to-end test makes one): three HTTP routes, one
// of which regressed (a price) and one the target made slower, a Redis
// route with a binary answer that regressed, and hostile text in places
// a page could be tricked by.
func testReport(baseline bool) *intercept.Report {
	r := rand.New(rand.NewPCG(1, 2))
	against := intercept.AgainstCaptured
	if baseline {
		against = intercept.AgainstBaseline
	}
	type routeSpec struct {
		name, proto              string
		n                        int
		capUS, baseUS, tgtUS     float64
		regressions, noise, same int64
		noiseFields              []string
	}
	specs := []routeSpec{
		{"GET /api/items/{n}", "http", 40, 900, 850, 870, 40, 0, 0, []string{"body $.request_id", "body $.ts", "header x-request-id"}},
		{"GET /api/slow", "http", 40, 1100, 1000, 101000, 0, 40, 0, []string{"body $.request_id", "body $.ts", "header x-request-id"}},
		{"GET /api/users/{n}", "http", 40, 1300, 1200, 1250, 0, 40, 0, []string{"body $.request_id", "body $.ts", "header x-request-id"}},
		{"HGETALL", "resp", 12, 120, 110, 115, 2, 0, 10, nil},
		{`GET /<script>document.title="pwned"</script>`, "http", 1, 500, 480, 470, 0, 0, 1, nil},
	}
	rep := &intercept.Report{
		Version: intercept.ReportVersion,
		Summary: &replay.Summary{
			RunID: 42, Passes: 1, Speed: 1, Start: time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC), Wall: 9 * time.Second,
			Read: 49, Planned: 49, Replayed: 49, Succeeded: 49, BytesSent: 12_345, BytesReceived: 98_765, ChunksSent: 133,
		},
		Requests: intercept.RequestTotals{Against: against},
	}
	rep.Totals.Sessions = 49
	var allC, allB, allT []float64
	for _, s := range specs {
		c, b, tg := spread(r, s.n, s.capUS), spread(r, s.n, s.baseUS), spread(r, s.n, s.tgtUS)
		if !baseline {
			b = nil
		}
		allC, allB, allT = append(allC, c...), append(allB, b...), append(allT, tg...)
		rep.Routes = append(rep.Routes, intercept.RouteReport{
			Route: s.name, Protocol: s.proto, Requests: int64(s.n), Same: s.same, Noise: s.noise, Regressions: s.regressions,
			NoiseFields: s.noiseFields, ResponseTime: responseTime(c, b, tg),
		})
		q := &rep.Requests
		q.Requests += int64(s.n)
		q.Same += s.same
		q.Noise += s.noise
		q.Regressions += s.regressions
	}
	if !baseline {
		allB = nil
	}
	rep.ResponseTime = responseTime(allC, allB, allT)
	sort.Slice(rep.Routes, func(i, j int) bool { return rep.Routes[i].Route < rep.Routes[j].Route })

	answer := func(text string, last float64) intercept.Answer {
		return intercept.Answer{Text: text, FirstByteUS: last * 0.8, LastByteUS: last}
	}
	itemBody := func(price int, id, ts string) string {
		return "HTTP/1.1 200\ncontent-type: application/json\nx-request-id: " + id + "\n\n" +
			`{"id":2,"name":"item 2","price":` + itoa(price) + `,"request_id":"` + id + `","ts":` + ts + `}`
	}
	reg := intercept.Regression{
		Route: "GET /api/items/{n}", Session: 7, Request: 1, Against: against,
		RequestText: "GET /api/items/2 HTTP/1.1\nHost: 10.0.0.1:8090\nUser-Agent: Go-http-client/1.1\n\n",
		Differences: []intercept.FieldDiff{{Field: "body $.price", Offset: -1, Reference: "6", Replayed: "7"}},
		Replayed:    answer(itemBody(7, "9f1c2ab0e44d7731", "1764914412345678901"), 870),
		Reference:   answer(itemBody(6, "03aa5e9d11b2c4f0", "1764914412349876543"), 850),
	}
	if baseline {
		c := answer(itemBody(6, "5b7e0c2d9a8f6e14", "1764910000000000000"), 900)
		reg.Captured = &c
	}
	rep.Regressions = append(rep.Regressions, reg)
	// A hostile answer: markup and a script in the body, and a difference
	// whose values are markup too.
	hostile := reg
	hostile.Request = 2
	hostile.Replayed = answer("HTTP/1.1 200\ncontent-type: text/html\n\n<script>document.title=\"pwned\"</script><img src=x onerror=alert(1)>", 880)
	hostile.Differences = []intercept.FieldDiff{{Field: "body", Offset: 0, Reference: `{"id":2…`, Replayed: `<script>document.title="pwned"</script>…`}}
	rep.Regressions = append(rep.Regressions, hostile)
	// A binary answer (a RESP reply carrying bytes that are not text), as
	// intercept escapes it.
	bin := intercept.Regression{
		Route: "HGETALL", Session: 31, Request: 0, Against: against,
		RequestText: `*2\r\n$7\r\nHGETALL\r\n$1\r\nh\r\n`,
		Differences: []intercept.FieldDiff{{Field: "reply[1]", Offset: -1, Reference: binRef, Replayed: binGot}},
		Reference:   answer(`*2\r\n$1\r\nf\r\n$16\r\n`+binRef+`\r\n`, 110),
		Replayed:    answer(`*2\r\n$1\r\nf\r\n$16\r\n`+binGot+`\r\n`, 115),
	}
	rep.Regressions = append(rep.Regressions, bin)
	return rep
}

// binRef and binGot are 16 bytes that are not text, escaped as intercept
// escapes them; they differ in their third byte.
const (
	binRef = `\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x10\x11\xfe\xff`
	binGot = `\x00\x01\xee\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x10\x11\xfe\xff`
)

func itoa(n int) string { return strconv.Itoa(n) }
