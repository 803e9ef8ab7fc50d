package intercept

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestRulesParse: the YAML form, JSON paths, and errors that name the
// place.
func TestRulesParse(t *testing.T) {
	r, err := ParseRules(strings.NewReader(`
headers: [X-Request-Id]
json: ["$.meta.ts", "$..trace", "$.items[*].seen"]
body: ['id=[0-9]+']
fields: ["reply[1]"]
routes:
  - route: "GET /api/items/{n}"
    json: ["$.stock"]
  - route: "GET /api/*"
    headers: [x-cache]
`))
	if err != nil {
		t.Fatal(err)
	}
	a := r.apply("GET /api/items/{n}", map[string]bool{"date": true})
	for _, tc := range []struct {
		path []string
		keep bool
	}{
		{[]string{"meta", "ts"}, false},
		{[]string{"meta", "other"}, true},
		{[]string{"a", "b", "trace"}, false},
		{[]string{"items", "[3]", "seen"}, false},
		{[]string{"items", "[3]", "name"}, true},
		{[]string{"stock"}, false},
	} {
		if got := a.keepJSON(tc.path); got != tc.keep {
			t.Errorf("keep %v = %v, want %v", tc.path, got, tc.keep)
		}
	}
	if !a.headers["x-request-id"] || !a.headers["x-cache"] || !a.headers["date"] {
		t.Errorf("headers %v", a.headers)
	}
	if other := r.apply("POST /x", nil); other.headers["x-cache"] || !other.keepJSON([]string{"stock"}) {
		t.Error("a route's rules applied to another route")
	}
	if got := string(a.blank([]byte("x id=123 y"))); got != "x <ignored> y" {
		t.Errorf("blank: %q", got)
	}
	if a.keepField("reply[1]") || !a.keepField("reply[0]") {
		t.Error("fields rule")
	}
	for _, bad := range []string{"headerz: [a]", "json: [a.b]", "body: ['(']", "routes: [{json: [$.a]}]", "json: ['$.a[x]']"} {
		if _, err := ParseRules(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// play drives one session copy through the timed observer: requests
// (client chunks), captured answers and the target's, with times.
func playTimed(r *Recorder, id uint64, base bool, reqs []string, capd, got []string, slow time.Duration) {
	h := &session.Head{ID: id, Client: netip.MustParseAddrPort("192.0.2.1:1000"), Server: netip.MustParseAddrPort("10.0.0.1:80")}
	o := r.Begin(&replay.SessionInfo{Head: h, Baseline: base}).(*sessionObs)
	now := time.Unix(1000, 0)
	var cliOff, capOff int64
	for i, q := range reqs {
		o.CapturedAt(capOff, []byte(capd[i]), time.Duration(i)*time.Second+time.Millisecond)
		capOff += int64(len(capd[i]))
		o.Sent(session.Chunk{Offset: time.Duration(i) * time.Second, Data: []byte(q), StreamOffset: cliOff, ServerBytesBefore: capOff - int64(len(capd[i]))}, now)
		cliOff += int64(len(q))
		now = now.Add(2 * time.Millisecond)
		if strings.Contains(q, "/slow") {
			now = now.Add(slow)
		}
		o.ReceivedAt([]byte(got[i]), now)
	}
	tail := &session.Tail{End: session.EndClientFIN, ServerBytes: capOff, ClientBytes: cliOff}
	o.Done(&replay.Result{Dialed: true, End: session.EndClientFIN, Tail: tail})
}

func jsonResp(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: x\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
}

// TestPerRequestBaseline: with a baseline, what differs between the
// baseline and the capture (a request id) is noise; the candidate's
// changed field is a regression on its route only; the slow route's
// response time is told apart.
func TestPerRequestBaseline(t *testing.T) {
	r := New(Options{Baseline: true, MaxRows: -1})
	reqs := []string{"GET /api/items/1 HTTP/1.1\r\n\r\n", "GET /api/slow HTTP/1.1\r\n\r\n", "GET /api/users/7 HTTP/1.1\r\n\r\n"}
	capd := []string{jsonResp(`{"id":"aaa","price":3}`), jsonResp(`{"id":"bbb","ok":true}`), jsonResp(`{"id":"ccc","name":"x"}`)}
	base := []string{jsonResp(`{"id":"b1","price":3}`), jsonResp(`{"id":"b2","ok":true}`), jsonResp(`{"id":"b3","name":"x"}`)}
	cand := []string{jsonResp(`{"id":"c1","price":4}`), jsonResp(`{"id":"c2","ok":true}`), jsonResp(`{"id":"c3","name":"x"}`)}
	for i := range uint64(5) {
		playTimed(r, i, true, reqs, capd, base, 0)
		playTimed(r, i, false, reqs, capd, cand, 50*time.Millisecond)
	}
	rep := r.Report(nil)
	if rep.Requests.Requests != 15 || rep.Requests.Regressions != 5 || rep.Requests.Noise != 10 || rep.Requests.Against != AgainstBaseline {
		t.Fatalf("requests %+v", rep.Requests)
	}
	routes := map[string]RouteReport{}
	for _, rr := range rep.Routes {
		routes[rr.Route] = rr
	}
	if rr := routes["GET /api/items/{n}"]; rr.Regressions != 5 {
		t.Errorf("items route %+v", rr)
	}
	if rr := routes["GET /api/slow"]; rr.Regressions != 0 || rr.ResponseTime.Replayed.P50US < 50000 || rr.ResponseTime.Baseline.P50US > 10000 || rr.ResponseTime.Ratio.P50 < 5 {
		t.Errorf("slow route %+v", rr.ResponseTime)
	}
	if rr := routes["GET /api/users/{n}"]; rr.Regressions != 0 || rr.ResponseTime.Captured.Count != 5 || rr.ResponseTime.Captured.P50US < 900 {
		t.Errorf("users route %+v", rr)
	}
	if len(rep.Regressions) == 0 {
		t.Fatal("no regression kept")
	}
	g := rep.Regressions[0]
	if len(g.Differences) != 1 || g.Differences[0].Field != "body $.price" || g.Differences[0].Reference != "3" || g.Differences[0].Replayed != "4" || g.Differences[0].Offset != -1 || g.Captured == nil {
		t.Errorf("regression %+v", g)
	}
}

// TestPerRequestCaptured: without a baseline the capture is the
// reference; a rule removes the request id, the changed field remains.
func TestPerRequestCaptured(t *testing.T) {
	rules, err := ParseRules(strings.NewReader(`json: ["$.id"]`))
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{Rules: rules, MaxRows: -1})
	reqs := []string{"GET /a/1 HTTP/1.1\r\n\r\n", "GET /b HTTP/1.1\r\n\r\n"}
	capd := []string{jsonResp(`{"id":"a","v":1}`), jsonResp(`{"id":"b","v":1}`)}
	got := []string{jsonResp(`{"id":"x","v":1}`), jsonResp(`{"v":2,"id":"y"}`)}
	playTimed(r, 0, false, reqs, capd, got, 0)
	rep := r.Report(nil)
	if rep.Requests.Requests != 2 || rep.Requests.Same != 1 || rep.Requests.Regressions != 1 {
		t.Fatalf("requests %+v", rep.Requests)
	}
	if d := rep.Regressions[0].Differences; len(d) != 1 || d[0].Field != "body $.v" {
		t.Errorf("differences %+v", d)
	}
}

// TestPerRequestRESPAndBytes: RESP by reply (route = command), other
// protocols by turn, binary shown escaped.
func TestPerRequestRESPAndBytes(t *testing.T) {
	r := New(Options{MaxRows: -1})
	playTimed(r, 0, false,
		[]string{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "*1\r\n$4\r\nPING\r\n"},
		[]string{"$1\r\nv\r\n", "+PONG\r\n"},
		[]string{"$1\r\nw\r\n", "+PONG\r\n"}, 0)
	playTimed(r, 1, false, []string{"\x01\x02hello"}, []string{"\x00\xffabc"}, []string{"\x00\xfeabc"}, 0)
	rep := r.Report(nil)
	var regs []string
	for _, g := range rep.Regressions {
		for _, d := range g.Differences {
			regs = append(regs, g.Route+" "+d.Field+" "+d.Reference+" "+d.Replayed)
		}
	}
	want := `GET reply "v" "w"|turn 1 bytes \x00\xffabc \x00\xfeabc`
	if s := strings.Join(regs, "|"); s != want {
		t.Errorf("regressions\n%s\nwant\n%s", s, want)
	}
}

// BenchmarkPerRequestHTTP: what the per-request comparison costs for a
// keep-alive session of 50 JSON answers that differ from the capture in a
// request id (the session-level comparison included).
func BenchmarkPerRequestHTTP(b *testing.B) {
	const n = 50
	reqs, capd, got := make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		reqs[i] = "GET /api/items/" + itoa(i) + " HTTP/1.1\r\nHost: x\r\n\r\n"
		capd[i] = jsonResp(`{"id":` + itoa(i) + `,"request_id":"aaaaaaaa","name":"item","tags":["a","b","c"],"price":12.5}`)
		got[i] = jsonResp(`{"id":` + itoa(i) + `,"request_id":"bbbbbbbb","name":"item","tags":["a","b","c"],"price":12.5}`)
	}
	r := New(Options{MaxRows: -1})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		playTimed(r, uint64(i), false, reqs, capd, got, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/request")
}

// TestPerRequestBroken: a target that stops speaking the protocol, or
// sends no answer, regresses; a capture that cannot be decoded leaves the
// requests without a verdict.
func TestPerRequestBroken(t *testing.T) {
	r := New(Options{MaxRows: -1})
	reqs := []string{"GET /a HTTP/1.1\r\n\r\n", "GET /b HTTP/1.1\r\n\r\n"}
	capd := []string{jsonResp(`{"v":1}`), jsonResp(`{"v":2}`)}
	playTimed(r, 0, false, reqs, capd, []string{"garbage\x00\r\n\r\n", ""}, 0)
	playTimed(r, 1, false, reqs, []string{"SSH-2.0\r\n", ""}, []string{jsonResp(`{"v":1}`), jsonResp(`{"v":2}`)}, 0)
	rep := r.Report(nil)
	if q := rep.Requests; q.Requests != 4 || q.Regressions != 2 || q.NotCompared != 2 {
		t.Fatalf("requests %+v", q)
	}
	var got []string
	for _, g := range rep.Regressions {
		got = append(got, g.Differences[0].Field+":"+g.Differences[0].Missing)
	}
	if s := strings.Join(got, " "); s != "answer: answer:replayed" {
		t.Errorf("differences %s", s)
	}
}

// FuzzPerRequest: any requests and answers, cut anywhere, pair without
// a panic, and every request is counted once.
func FuzzPerRequest(f *testing.F) {
	f.Add([]byte("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), []byte(jsonResp(`{"a":1}`)+jsonResp(`{"b":1}`)), []byte(jsonResp(`{"a":2}`)), uint8(7), true)
	f.Add([]byte("*1\r\n$4\r\nPING\r\n"), []byte("+PONG\r\n"), []byte("-ERR\r\n"), uint8(3), false)
	f.Add([]byte("\x01\x02"), []byte("\x00"), []byte("\xff"), uint8(1), true)
	f.Fuzz(func(t *testing.T, req, capd, got []byte, cut uint8, base bool) {
		piece := int(cut%16) + 1
		split := func(b []byte) []string {
			var out []string
			for len(b) > 0 {
				n := min(piece, len(b))
				out = append(out, string(b[:n]))
				b = b[n:]
			}
			return out
		}
		rq, cp, gt := split(req), split(capd), split(got)
		n := max(len(rq), len(cp), len(gt))
		for len(rq) < n {
			rq = append(rq, "")
		}
		for len(cp) < n {
			cp = append(cp, "")
		}
		for len(gt) < n {
			gt = append(gt, "")
		}
		// Empty chunks are not in the engine's contract: drop them.
		var r2, c2, g2 []string
		for i := range n {
			if rq[i] != "" {
				r2, c2, g2 = append(r2, rq[i]), append(c2, cp[i]), append(g2, gt[i])
			}
		}
		r := New(Options{MaxRows: -1, Baseline: base, RecordLimit: 256})
		playTimed(r, 0, false, r2, c2, g2, 0)
		if base {
			playTimed(r, 0, true, r2, c2, c2, 0)
		}
		rep := r.Report(nil)
		q := rep.Requests
		if q.Same+q.Noise+q.Regressions+q.NotCompared != q.Requests {
			t.Fatalf("requests %+v do not add up", q)
		}
	})
}

// TestPerRequestConcurrent: copies and their twins finish on many
// goroutines at once (run with -race): the counts add up.
func TestPerRequestConcurrent(t *testing.T) {
	r := New(Options{Baseline: true, MaxRows: -1})
	reqs := []string{"GET /api/items/1 HTTP/1.1\r\n\r\n", "GET /api/items/1 HTTP/1.1\r\n\r\n"}
	capd := []string{jsonResp(`{"id":"a","p":1}`), jsonResp(`{"id":"b","p":1}`)}
	base := []string{jsonResp(`{"id":"c","p":1}`), jsonResp(`{"id":"d","p":1}`)}
	cand := []string{jsonResp(`{"id":"e","p":2}`), jsonResp(`{"id":"f","p":1}`)}
	var wg sync.WaitGroup
	for i := range uint64(16) {
		wg.Add(2)
		go func() { defer wg.Done(); playTimed(r, i, true, reqs, capd, base, 0) }()
		go func() { defer wg.Done(); playTimed(r, i, false, reqs, capd, cand, 0) }()
	}
	wg.Wait()
	q := r.Report(nil).Requests
	if q.Requests != 32 || q.Regressions != 16 || q.Noise != 16 {
		t.Errorf("requests %+v; want 32, 16 regressed (p), 16 noise (id)", q)
	}
}

// TestPerRequestTwinMissing: a baseline copy that never connected leaves
// its twin's requests without a verdict, judged as they come (nothing is
// held for it).
func TestPerRequestTwinMissing(t *testing.T) {
	r := New(Options{Baseline: true, MaxRows: -1})
	h := &session.Head{ID: 0, Server: netip.MustParseAddrPort("10.0.0.1:80")}
	r.Begin(&replay.SessionInfo{Head: h, Baseline: true}).Done(&replay.Result{Outcome: replay.Refused})
	reqs := []string{"GET /a HTTP/1.1\r\n\r\n", "GET /b HTTP/1.1\r\n\r\n"}
	capd := []string{jsonResp(`{"v":1}`), jsonResp(`{"v":2}`)}
	playTimed(r, 0, false, reqs, capd, capd, 0)
	r.reqs.mu.Lock()
	held := len(r.reqs.joins)
	r.reqs.mu.Unlock()
	if q := r.Report(nil).Requests; q.Requests != 2 || q.NotCompared != 2 || held != 0 {
		t.Errorf("requests %+v, %d joins held; want 2 not compared, none held", q, held)
	}
}

// BenchmarkPerRequestHTTPSame: the same, with answers whose bodies agree
// (only the volatile Date header differs): no JSON is decoded.
func BenchmarkPerRequestHTTPSame(b *testing.B) {
	const n = 50
	reqs, capd, got := make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		reqs[i] = "GET /api/items/" + itoa(i) + " HTTP/1.1\r\nHost: x\r\n\r\n"
		body := `{"id":` + itoa(i) + `,"name":"item","tags":["a","b","c"],"price":12.5}`
		capd[i] = jsonResp(body)
		got[i] = strings.Replace(jsonResp(body), "Date: x", "Date: y", 1)
	}
	r := New(Options{MaxRows: -1})
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		playTimed(r, uint64(i), false, reqs, capd, got, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/request")
}

// TestPerRequestHoldsNothingPaired: in a long keep-alive session, once an
// answer has arrived on both sides nothing of it is held (memory follows
// what is unpaired, not the session's length); with a baseline, a copy
// holds its requests only until its twin's arrive.
func TestPerRequestHoldsNothingPaired(t *testing.T) {
	r := New(Options{Baseline: true, MaxRows: -1})
	h := &session.Head{ID: 0, Server: netip.MustParseAddrPort("10.0.0.1:80")}
	cand := r.Begin(&replay.SessionInfo{Head: h}).(*sessionObs)
	base := r.Begin(&replay.SessionInfo{Head: h, Baseline: true}).(*sessionObs)
	now := time.Unix(0, 0)
	var cliOff, capOff int64
	for i := range 2000 {
		q := "GET /api/items/" + itoa(i) + " HTTP/1.1\r\n\r\n"
		a := jsonResp(`{"id":` + itoa(i) + `}`)
		for _, o := range []*sessionObs{cand, base} {
			o.CapturedAt(capOff, []byte(a), time.Duration(i)*time.Millisecond)
			o.Sent(session.Chunk{Offset: time.Duration(i) * time.Millisecond, Data: []byte(q), StreamOffset: cliOff, ServerBytesBefore: capOff}, now)
			o.ReceivedAt([]byte(a), now)
		}
		cliOff += int64(len(q))
		capOff += int64(len(a))
		for _, o := range []*sessionObs{cand, base} {
			if tr := o.trk; len(tr.queue) != 0 || tr.capS.n != 0 || tr.repS.n != 0 || tr.cli.n != 0 || len(tr.capS.marks) != 0 {
				t.Fatalf("request %d: the tracker holds %d requests, %d+%d+%d bytes", i, len(tr.queue), tr.capS.n, tr.repS.n, tr.cli.n)
			}
		}
		r.reqs.mu.Lock()
		j := r.reqs.joins[joinKey{id: 0}]
		held := len(j.cand) + len(j.base)
		r.reqs.mu.Unlock()
		if held != 0 {
			t.Fatalf("request %d: %d requests held for their twins", i, held)
		}
	}
	if q := r.Report(nil).Requests; q.Requests != 2000 || q.Same != 2000 {
		t.Errorf("requests %+v", q)
	}
}
