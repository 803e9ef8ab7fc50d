package main

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testSpec is a search with the full workload's shape.
var testSpec = liveSpec{Start: 1000, Factor: 2, MinRate: 100, MaxRate: 64000, MaxGrow: 7, Bisect: 2,
	Trial: 4 * time.Second, LagBound: 500 * time.Millisecond}

// capacity returns a try function for a copy that follows every rate up
// to limit, recording the rates asked.
func capacity(limit float64, asked *[]float64) func(float64) (*liveStep, error) {
	return func(rate float64) (*liveStep, error) {
		*asked = append(*asked, rate)
		return &liveStep{RateAsked: rate, RateAchieved: rate * 0.99, Follows: rate <= limit}, nil
	}
}

// TestSearchRate: the search grows geometrically to the first step that
// does not follow, bisects between that and the highest that did, and
// never runs more than its bound of steps.
func TestSearchRate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		spec      liveSpec
		limit     float64
		asked     []float64
		followed  float64
		failed    float64
		atCeiling bool
	}{
		{"bracket then bisect", testSpec, 5000,
			[]float64{1000, 2000, 4000, 8000, 5700, 4800}, 4800, 5700, false},
		{"limit between bisection points", testSpec, 6000,
			[]float64{1000, 2000, 4000, 8000, 5700, 6800}, 5700, 6800, false},
		{"first step fails: go down, then bisect", testSpec, 300,
			[]float64{1000, 500, 250, 350, 300}, 300, 350, false},
		{"nothing follows: stops at the minimum rate", testSpec, 10,
			[]float64{1000, 500, 250, 130}, 0, 130, false},
		{"everything follows: stops at the ceiling", testSpec, math.Inf(1),
			[]float64{1000, 2000, 4000, 8000, 16000, 32000, 64000}, 64000, 0, true},
		{"grow bound reached without a failure", liveSpec{Start: 1000, Factor: 2, MinRate: 100, MaxRate: 64000, MaxGrow: 3, Bisect: 1}, 1e9,
			[]float64{1000, 2000, 4000}, 4000, 0, false},
		{"quick: one bisection", liveSpec{Start: 1000, Factor: 2, MinRate: 100, MaxRate: 64000, MaxGrow: 3, Bisect: 1}, 1500,
			[]float64{1000, 2000, 1400}, 1400, 2000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []float64
			ls, err := searchRate(tc.spec, capacity(tc.limit, &asked))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(asked, tc.asked) {
				t.Errorf("rates asked %v, want %v", asked, tc.asked)
			}
			if len(asked) > tc.spec.maxSteps() {
				t.Errorf("%d steps, more than the bound %d", len(asked), tc.spec.maxSteps())
			}
			if ls.MaxFollowed != tc.followed || ls.FirstFailed != tc.failed || ls.AtCeiling != tc.atCeiling {
				t.Errorf("followed %v, first failed %v, at ceiling %v; want %v, %v, %v",
					ls.MaxFollowed, ls.FirstFailed, ls.AtCeiling, tc.followed, tc.failed, tc.atCeiling)
			}
			if len(ls.Steps) != len(asked) {
				t.Errorf("%d steps recorded, %d run", len(ls.Steps), len(asked))
			}
			if tc.followed > 0 {
				if b := ls.best(); b == nil || b.RateAsked != tc.followed || ls.Achieved != b.RateAchieved {
					t.Errorf("best step %+v, achieved %v", b, ls.Achieved)
				}
			} else if ls.best() != nil || ls.Achieved != 0 {
				t.Errorf("nothing followed, yet best %+v, achieved %v", ls.best(), ls.Achieved)
			}
		})
	}
}

// TestSearchRateNotMonotonic: a noisy machine may fail a rate and pass a
// higher one; the search still ends within its bound and reports the
// highest rate that followed below the lowest that did not.
func TestSearchRateNotMonotonic(t *testing.T) {
	var asked []float64
	ls, err := searchRate(testSpec, func(rate float64) (*liveStep, error) {
		asked = append(asked, rate)
		return &liveStep{RateAsked: rate, RateAchieved: rate, Follows: rate != 2000 && rate <= 4000}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1000, 2000, 1400, 1700}
	if !reflect.DeepEqual(asked, want) || ls.MaxFollowed != 1700 || ls.FirstFailed != 2000 {
		t.Errorf("asked %v (want %v), followed %v, failed %v", asked, want, ls.MaxFollowed, ls.FirstFailed)
	}
}

// TestSearchRateError: a step that cannot be run ends the search with its
// error; the steps before it are kept.
func TestSearchRateError(t *testing.T) {
	boom := errors.New("no tcopy-tun")
	n := 0
	ls, err := searchRate(testSpec, func(rate float64) (*liveStep, error) {
		if n++; n == 3 {
			return nil, boom
		}
		return &liveStep{RateAsked: rate, RateAchieved: rate, Follows: true}, nil
	})
	if !errors.Is(err, boom) || len(ls.Steps) != 2 || ls.MaxFollowed != 2000 {
		t.Errorf("err %v, %d steps, followed %v", err, len(ls.Steps), ls.MaxFollowed)
	}
}

func TestRoundRate(t *testing.T) {
	for in, want := range map[float64]float64{5657: 5700, 4762: 4800, 1000: 1000, 353.6: 350, 125: 130, 99.4: 99, 0: 0, 64000: 64000} {
		if got := roundRate(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("roundRate(%v) = %v, want %v", in, got, want)
		}
	}
}

// TestJudge: each condition of "follows" fails a step on its own, and
// says why.
func TestJudge(t *testing.T) {
	good := liveStep{RateAsked: 2000, RateAchieved: 1990, LoadStarted: 8000, LoadOK: 8000, Replayed: 8000, Succeeded: 8000,
		Lag: lateness{Count: 8000, P50us: 900, P99us: 40000}}
	st := good
	st.judge(500 * time.Millisecond)
	if !st.Follows || st.Why != "" {
		t.Fatalf("a clean step does not follow: %s", st.Why)
	}
	for _, tc := range []struct {
		change func(*liveStep)
		why    string
	}{
		{func(s *liveStep) { s.CaptureDrops = 17 }, "kernel dropped 17 packets"},
		{func(s *liveStep) { s.Incomplete, s.Succeeded = 3, 7997 }, "3 sessions capture-incomplete"},
		{func(s *liveStep) { s.NotStarted = 2 }, "2 sessions not started"},
		{func(s *liveStep) { s.Failed, s.Succeeded = 1, 7999 }, "1 sessions failed"},
		{func(s *liveStep) { s.Replayed, s.Succeeded = 7990, 7990 }, "7990 replayed, 7990 succeeded of the load's 8000"},
		{func(s *liveStep) { s.Lag.P99us = 600000 }, "live lag p99 600ms > 500ms"},
		{func(s *liveStep) { s.Lag = lateness{} }, "no live lag"},
		{func(s *liveStep) { s.RateAchieved, s.LoadMissed = 1500, 40 }, "the load reached 1500/s of 2000/s (40 starts missed)"},
		{func(s *liveStep) { s.LoadFailed, s.LoadError = 5, "session 3: connection refused" }, "5 of the load's sessions failed at the source (session 3: connection refused)"},
		{func(s *liveStep) { s.LoadOK = 0 }, "the load made no session"},
		{func(s *liveStep) { s.Error = "tcopy-tun: exit status 3" }, "error: tcopy-tun: exit status 3"},
	} {
		st := good
		tc.change(&st)
		st.judge(500 * time.Millisecond)
		if st.Follows || !strings.Contains(st.Why, tc.why) {
			t.Errorf("follows %v, why %q; want not, %q", st.Follows, st.Why, tc.why)
		}
		if !strings.Contains(st.line(), st.Why) {
			t.Errorf("the step's line does not say why: %s", st.line())
		}
	}
}

// TestLoadGenerator: the load opens the sessions it planned at the rate
// asked against the bench's own server, each one request and answer, and
// reports them.
func TestLoadGenerator(t *testing.T) {
	s := startTestServer(t)
	o := loadOpts{addr: s.ln.Addr().String(), rate: 400, duration: 500 * time.Millisecond, max: 1000,
		maxInflight: 1000, body: 256, sessionTimeout: 10 * time.Second}
	res := generateLoad(o, make(chan struct{}))
	if res.Planned != 200 || res.Started != 200 || res.OK != 200 || res.Failed != 0 || res.Missed != 0 {
		t.Fatalf("load %+v", res)
	}
	if got := s.stats(); got.Requests != 200 || got.Conns != 200 || got.Bad != 0 {
		t.Errorf("server counted %+v", got)
	}
	// The rate is the schedule's when the generator keeps up (it may fall
	// behind on a loaded machine, never run ahead).
	if res.Achieved > 400*1.01 || res.Achieved <= 0 {
		t.Errorf("achieved %v/s, asked 400/s", res.Achieved)
	}
}

// TestLoadGeneratorBounds: the count bounds the load before the duration
// does, and failures are counted with the first error.
func TestLoadGeneratorBounds(t *testing.T) {
	s := startTestServer(t)
	o := loadOpts{addr: s.ln.Addr().String(), rate: 1000, duration: time.Minute, max: 50,
		maxInflight: 100, body: 10, sessionTimeout: 10 * time.Second}
	start := time.Now()
	if res := generateLoad(o, make(chan struct{})); res.Started != 50 || res.OK != 50 {
		t.Fatalf("load %+v", res)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("a load bounded to 50 sessions ran %v", took)
	}
	s.close()
	res := generateLoad(o, make(chan struct{}))
	if res.Failed != 50 || res.OK != 0 || res.FirstErr == "" {
		t.Errorf("load against a closed server: %+v", res)
	}
}

// TestLoadGeneratorInflightBound: a start due while -max-inflight
// sessions are open is missed, not queued, and sessions that get no answer
// end at their deadline.
func TestLoadGeneratorInflightBound(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Accept and never answer; the conns close with the listener's
		// test.
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	o := loadOpts{addr: ln.Addr().String(), rate: 1000, duration: time.Minute, max: 20,
		maxInflight: 5, body: 10, sessionTimeout: 2 * time.Second}
	res := generateLoad(o, make(chan struct{}))
	if res.Started != 5 || res.Missed != 15 || res.Failed != 5 || res.OK != 0 || !strings.Contains(res.FirstErr, "timeout") {
		t.Errorf("load %+v", res)
	}
}

func TestLoadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-addr", "127.0.0.1:1", "-rate", "0"},
		{"-addr", "127.0.0.1:1", "-duration", "0s"},
		{"-addr", "127.0.0.1:1", "-n", "0"},
		{"-addr", "127.0.0.1:1", "-max-inflight", "-1"},
	} {
		var stderr strings.Builder
		if code := runLoad(args, &strings.Builder{}, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "tcopy-tun-bench load: ") {
			t.Errorf("load %v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// TestWriteLive: the table shows each path's result and every step.
func TestWriteLive(t *testing.T) {
	ls, _ := searchRate(testSpec, capacity(5000, new([]float64)))
	ls.Via, ls.Offline, ls.Ratio = "tun", 6000, 4800*0.99/6000
	rep := &benchReport{Workloads: []*workloadResult{{Name: "live", Live: []*liveSearch{ls}}}}
	var b strings.Builder
	writeTable(&b, rep)
	out := b.String()
	for _, want := range []string{"lag p99 < 500ms, in steps of 4s", "4800/s", "5700/s", "0.79", "6. asked 4800/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "no completed run") {
		t.Errorf("the live workload shows as a replay without runs:\n%s", out)
	}
}

// TestLoadSessionChecksTheAnswer: a session whose answer is not the
// convention's 200 of the expected length counts as failed.
func TestLoadSessionChecksTheAnswer(t *testing.T) {
	for _, answer := range []string{notFound, "HTTP/1.1 200 OK\r\nContent-Length: 256\r\n\r\nshort", "HTTP/1"} {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 512))
			c.Write([]byte(answer))
			c.Close()
		}()
		expect := int64(len(appendResponseHeader(nil, 256, true))) + 256
		err = loadSession(ln.Addr().String(), netip.Addr{}, 256, 1, expect, 10*time.Second)
		ln.Close()
		if err == nil {
			t.Errorf("answer %q taken for a good one", answer)
		}
	}
}

func TestClientAddrs(t *testing.T) {
	got, err := clientAddrs("10.98.0.0/16", 3)
	if err != nil || len(got) != 3 || got[0].String() != "10.98.0.1" || got[2].String() != "10.98.0.3" {
		t.Errorf("clientAddrs = %v, %v", got, err)
	}
	if _, err := clientAddrs("10.98.0.0/30", 4); err == nil {
		t.Error("a /30 gave 4 client addresses")
	}
	if _, err := clientAddrs("nonsense", 4); err == nil {
		t.Error("a bad prefix was taken")
	}
}

func TestMachineTicks(t *testing.T) {
	b0, t0 := machineTicks()
	if t0 == 0 || b0 > t0 {
		t.Fatalf("machineTicks = %d busy of %d", b0, t0)
	}
	for i := 0; i < 5e7; i++ { // some busy time
		_ = i * i
	}
	time.Sleep(30 * time.Millisecond)
	b1, t1 := machineTicks()
	if t1 < t0 || b1 < b0 || b1-b0 > t1-t0 {
		t.Errorf("ticks went from %d/%d to %d/%d", b0, t0, b1, t1)
	}
}
