package replay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

func TestSpeedScaling(t *testing.T) {
	forEachConnKind(t, testSpeedScaling)
}

func testSpeedScaling(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	events := make(chan string, 8)
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		switch rec.N {
		case 0:
			readN(t, c, 2)
			events <- "A chunk at " + clock.Now().Sub(fakeEpoch).String()
			readEOF(t, c)
			events <- "A fin at " + clock.Now().Sub(fakeEpoch).String()
		case 1:
			readN(t, c, 2)
			events <- "B chunk at " + clock.Now().Sub(fakeEpoch).String()
			readEOF(t, c)
		}
	})
	a := mkSession(0, 0, session.EndClientFIN, 0, chunk(4*time.Second, "A1", 0))
	a.StartOffset, a.Duration = 0, 6*time.Second
	b := mkSession(1, 0, session.EndCaptureEnd, 0, chunk(0, "B1", 0))
	b.StartOffset = 10 * time.Second
	cfg := testConfig(t, clock, d, obs)
	cfg.Speed = 2
	h := startRun(t, context.Background(), cfg, a, b)

	expect := func(want string) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %q", want)
		}
	}
	if rec := <-d.dialed; rec.N != 0 || !rec.At.Equal(fakeEpoch) {
		t.Fatalf("first dial %+v", rec)
	}
	clock.waitTimer(t, fakeEpoch.Add(2*time.Second)) // A's chunk: 4 s / 2
	clock.waitTimer(t, fakeEpoch.Add(5*time.Second)) // B's start: 10 s / 2
	clock.Advance(2 * time.Second)
	expect("A chunk at 2s")
	clock.waitTimer(t, fakeEpoch.Add(3*time.Second)) // A's FIN: 6 s / 2
	clock.Advance(time.Second)
	expect("A fin at 3s")
	if n := len(d.records()); n != 1 {
		t.Errorf("%d dials before B's time", n)
	}
	clock.Advance(2 * time.Second)
	if rec := <-d.dialed; rec.N != 1 || !rec.At.Equal(fakeEpoch.Add(5*time.Second)) {
		t.Fatalf("second dial %+v, want at 5s", rec)
	}
	expect("B chunk at 5s")
	sum := h.mustFinish(t)
	if sum.Succeeded != 2 {
		t.Errorf("summary %+v", sum)
	}
	if info := obs.infos[1]; !info.Scheduled.Equal(fakeEpoch.Add(5 * time.Second)) {
		t.Errorf("B scheduled at %v", info.Scheduled)
	}
}

// TestCloseAsCaptured: every captured end is replayed the same way, and the
// target's answer is drained to the end in every case.
func TestCloseAsCaptured(t *testing.T) {
	forEachConnKind(t, testCloseAsCaptured)
}

func testCloseAsCaptured(t *testing.T, k connKind) {
	for _, tc := range []struct {
		end      session.End
		server   func(t *testing.T, clock *fakeClock, c *memConn)
		wantEnd  session.End
		wantRecv string
		closeTO  int
	}{
		{session.EndClientFIN, func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
			readEOF(t, c)
			c.Write([]byte("+bye")) // after the client's FIN: still drained
		}, session.EndClientFIN, "resp+bye", 0},
		{session.EndClientRST, func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("server: want RST, got %v", err)
			}
		}, session.EndClientRST, "resp", 0},
		{session.EndServerFIN, func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
		}, session.EndServerFIN, "resp", 0},
		{session.EndServerRST, func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
			c.Abort()
		}, session.EndServerRST, "resp", 0},
		{session.EndCaptureEnd, func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
			readEOF(t, c)
		}, session.EndClientFIN, "resp", 0},
		// The captured server closed, the target does not: close after
		// CloseTimeout, a soft deviation.
		{session.EndServerFIN, func(t *testing.T, clock *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("resp"))
			clock.waitTimer(t, fakeEpoch.Add(tClose))
			clock.Advance(tClose)
			readEOF(t, c)
		}, session.EndClientFIN, "resp", 1},
	} {
		t.Run(tc.end.String(), func(t *testing.T) {
			checkLeaks(t)
			clock := newFakeClock()
			obs := newRecObserver()
			d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { tc.server(t, clock, c) })
			s := mkSession(0, 0, tc.end, 4, chunk(0, "req", 0))
			startRun(t, context.Background(), testConfig(t, clock, d, obs), s).mustFinish(t)
			r := obs.result(t, 0)
			if r.Outcome != OK || r.End != tc.wantEnd || r.Deviations.CloseTimeouts != tc.closeTO {
				t.Errorf("outcome %v (%v) end %v deviations %+v, want ok end %v", r.Outcome, r.Err, r.End, r.Deviations, tc.wantEnd)
			}
			if got := obs.got(0); got != tc.wantRecv {
				t.Errorf("received %q, want %q", got, tc.wantRecv)
			}
		})
	}
}

func TestFailureClassification(t *testing.T) {
	forEachConnKind(t, testFailureClassification)
}

func testFailureClassification(t *testing.T, k connKind) {
	for _, tc := range []struct {
		name    string
		end     session.End
		dial    func(ctx context.Context, clock *fakeClock) error
		server  func(t *testing.T, clock *fakeClock, c *memConn)
		want    Outcome
		errText string
		dialed  bool
	}{
		{name: "refused", dial: func(context.Context, *fakeClock) error { return syscall.ECONNREFUSED },
			want: Refused, errText: "connection refused"},
		{name: "unreachable", dial: func(context.Context, *fakeClock) error { return syscall.EHOSTUNREACH },
			want: Other, errText: "no route to host"},
		{name: "dial timeout", dial: func(ctx context.Context, clock *fakeClock) error {
			go func() {
				clock.waitTimer(t, fakeEpoch.Add(tDial))
				clock.Advance(tDial)
			}()
			<-ctx.Done()
			return ctx.Err()
		}, want: Timeout, errText: "timed out after 3s"},
		{name: "reset mid-session", end: session.EndClientFIN, server: func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("par"))
			c.Abort()
		}, want: Reset, errText: "connection reset", dialed: true},
		{name: "early close", end: session.EndClientFIN, server: func(t *testing.T, _ *fakeClock, c *memConn) {
			readN(t, c, 3)
			c.Write([]byte("par"))
		}, want: Deviation, dialed: true},
		{name: "never answers", end: session.EndClientFIN, server: func(t *testing.T, clock *fakeClock, c *memConn) {
			readN(t, c, 3)
			clock.waitTimer(t, fakeEpoch.Add(tTurn))
			clock.Advance(tTurn)
			readEOF(t, c)
		}, want: Deviation, dialed: true},
		{name: "session timeout", end: session.EndServerFIN, server: func(t *testing.T, clock *fakeClock, c *memConn) {
			readN(t, c, 3)
			// Hung target: the turn timeout would come at 2 h, the session
			// timeout at 1 h ends it first, with an RST.
			clock.waitTimer(t, fakeEpoch.Add(tSession))
			clock.Advance(tSession)
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("server: want RST, got %v", err)
			}
		}, want: Timeout, errText: "session timeout", dialed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			clock := newFakeClock()
			obs := newRecObserver()
			d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
				if tc.server != nil {
					tc.server(t, clock, c)
				}
			})
			if tc.dial != nil {
				d.dial = func(ctx context.Context, _ dialRec) error { return tc.dial(ctx, clock) }
			}
			cfg := testConfig(t, clock, d, obs)
			cfg.TurnTimeout = tTurn
			if tc.name == "session timeout" {
				cfg.TurnTimeout = 2 * tSession
			}
			s := mkSession(0, 0, tc.end, 10, chunk(0, "req", 0))
			sum := startRun(t, context.Background(), cfg, s).mustFinish(t)
			r := obs.result(t, 0)
			if r.Outcome != tc.want || r.Dialed != tc.dialed {
				t.Errorf("outcome %v dialed %v (err %v), want %v dialed %v", r.Outcome, r.Dialed, r.Err, tc.want, tc.dialed)
			}
			if tc.errText != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tc.errText)) {
				t.Errorf("error %v, want it to mention %q", r.Err, tc.errText)
			}
			if sum.Failed.Total() != 1 || sum.Succeeded != 0 {
				t.Errorf("summary failed %+v succeeded %d", sum.Failed, sum.Succeeded)
			}
		})
	}
}

// TestCancel: a canceled run aborts the session in flight with an RST, does
// not start the waiting ones, and returns promptly with its summary.
func TestCancel(t *testing.T) {
	forEachConnKind(t, testCancel)
}

func testCancel(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	gotRST := make(chan error, 1)
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		readN(t, c, 3)
		_, err := c.Read(make([]byte, 1)) // hangs until the engine aborts
		gotRST <- err
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A hangs; B and C wait for A (causal); D waits for its start time.
	a := mkSession(0, 0, session.EndClientFIN, 10, chunk(0, "req", 0))
	b := mkSession(1, 1, session.EndClientFIN, 0)
	c := mkSession(2, 1, session.EndClientFIN, 0)
	dd := mkSession(3, 0, session.EndClientFIN, 0)
	dd.StartOffset = 2 * time.Hour // not 1 h: that is A's session timeout
	cfg := testConfig(t, clock, d, obs)
	cfg.Speed = 1
	h := startRun(t, ctx, cfg, a, b, c, dd)
	clock.waitTimer(t, fakeEpoch.Add(tTurn)) // A waits for its answer
	clock.waitTimer(t, fakeEpoch.Add(2*time.Hour))
	cancel()
	sum, err := h.wait(t)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run error %v, want context.Canceled", err)
	}
	if err := <-gotRST; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("in-flight session ended with %v, want an RST", err)
	}
	if sum.Planned != 4 || sum.Replayed != 1 || sum.NotStarted != 3 || sum.Failed.Canceled != 1 {
		t.Errorf("summary planned %d replayed %d not started %d failed %+v", sum.Planned, sum.Replayed, sum.NotStarted, sum.Failed)
	}
	if r := obs.result(t, 0); r.Outcome != Canceled {
		t.Errorf("A: %v %v", r.Outcome, r.Err)
	}
}

// TestSessionTimeoutEndsRun: a hung session does not keep Run from returning
// (no other waits), and the wall time is the session timeout.
func TestSessionTimeoutEndsRun(t *testing.T) {
	forEachConnKind(t, testSessionTimeoutEndsRun)
}

func testSessionTimeoutEndsRun(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		c.Read(make([]byte, 1))
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.SessionTimeout = 7 * time.Second
	cfg.Speed = 1
	s := mkSession(0, 0, session.EndServerFIN, 0)
	s.Duration = 3 * time.Second
	h := startRun(t, context.Background(), cfg, s)
	clock.waitTimer(t, fakeEpoch.Add(10*time.Second)) // 3 s captured + 7 s
	clock.Advance(10 * time.Second)
	sum := h.mustFinish(t)
	if sum.Failed.Timeout != 1 || sum.Wall != 10*time.Second {
		t.Errorf("failed %+v wall %v", sum.Failed, sum.Wall)
	}
}

func TestDurationStopsAdmitting(t *testing.T) {
	forEachConnKind(t, testDurationStopsAdmitting)
}

func testDurationStopsAdmitting(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	cfg := testConfig(t, clock, d, obs)
	cfg.Speed, cfg.Duration = 1, 5*time.Second
	a := mkSession(0, 0, session.EndClientFIN, 0)
	b := mkSession(1, 0, session.EndClientFIN, 0)
	b.StartOffset = 10 * time.Second
	h := startRun(t, context.Background(), cfg, a, b)
	clock.waitTimer(t, fakeEpoch.Add(10*time.Second))
	<-d.dialed // a has started: the stop must not overtake it
	clock.Advance(5 * time.Second)
	sum := h.mustFinish(t)
	if sum.Replayed != 1 || sum.Succeeded != 1 || sum.NotStarted != 1 {
		t.Errorf("summary %+v", sum)
	}
}

func TestRateLimit(t *testing.T) {
	forEachConnKind(t, testRateLimit)
}

func testRateLimit(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	cfg := testConfig(t, clock, d, nil)
	cfg.Rate = 10 // one session per 100 ms
	var ss []*session.Session
	for i := range 4 {
		ss = append(ss, mkSession(uint64(i), 0, session.EndClientFIN, 0))
	}
	h := startRun(t, context.Background(), cfg, ss...)
	var at []time.Duration
	at = append(at, (<-d.dialed).At.Sub(fakeEpoch))
	for i := 1; i < 4; i++ {
		// Every later session has its slot reserved: 100, 200, 300 ms.
		// Wait until all the remaining ones are armed before moving the
		// clock: a session reserves its slot, then arms a timer for the
		// time left, and an Advance in between would push its timer
		// later (the test's race, not the engine's).
		for j := i; j < 4; j++ {
			clock.waitTimer(t, fakeEpoch.Add(time.Duration(j)*100*time.Millisecond))
		}
		if n := len(d.records()); n != i {
			t.Fatalf("%d dials before %d ms", n, i*100)
		}
		clock.Advance(100 * time.Millisecond)
		at = append(at, (<-d.dialed).At.Sub(fakeEpoch))
	}
	h.mustFinish(t)
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	if fmt.Sprint(at) != fmt.Sprint(want) {
		t.Errorf("dial times %v, want %v", at, want)
	}
}

// TestMaxSessions: never more sessions in flight than allowed.
func TestMaxSessions(t *testing.T) {
	forEachConnKind(t, testMaxSessions)
}

func testMaxSessions(t *testing.T, k connKind) {
	clock := newFakeClock()
	release := make(chan struct{})
	inflight := make(chan int, 100)
	var mu = make(chan struct{}, 1)
	cur, peak := 0, 0
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		mu <- struct{}{}
		cur++
		peak = max(peak, cur)
		inflight <- cur
		<-mu
		<-release
		readEOF(t, c)
		mu <- struct{}{}
		cur--
		<-mu
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.MaxSessions = 3
	var ss []*session.Session
	for i := range 10 {
		ss = append(ss, mkSession(uint64(i), 0, session.EndClientFIN, 0))
	}
	h := startRun(t, context.Background(), cfg, ss...)
	for range 3 {
		<-inflight
	}
	close(release)
	sum := h.mustFinish(t)
	if peak != 3 || sum.Succeeded != 10 {
		t.Errorf("peak %d succeeded %d", peak, sum.Succeeded)
	}
}

func TestOutOfOrderSessionsError(t *testing.T) {
	forEachConnKind(t, testOutOfOrderSessionsError)
}

func testOutOfOrderSessionsError(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	h := startRun(t, context.Background(), testConfig(t, clock, d, nil),
		mkSession(5, 0, session.EndClientFIN, 0), mkSession(3, 0, session.EndClientFIN, 0))
	_, err := h.wait(t)
	if err == nil || !strings.Contains(err.Error(), "session 3 arrived after session 5") {
		t.Errorf("err %v", err)
	}
}

// TestCausalGaps: IDs that never arrive (filtered by the caller) count as
// done, so a session waiting for them is not stuck.
func TestCausalGaps(t *testing.T) {
	forEachConnKind(t, testCausalGaps)
}

func testCausalGaps(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	s := mkSession(7, 7, session.EndClientFIN, 0) // sessions 0..6 never come
	sum := startRun(t, context.Background(), testConfig(t, clock, d, nil), s).mustFinish(t)
	if sum.Succeeded != 1 {
		t.Errorf("summary %+v", sum)
	}
}

func TestUnmappedServer(t *testing.T) {
	forEachConnKind(t, testUnmappedServer)
}

func testUnmappedServer(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	cfg := testConfig(t, clock, d, nil)
	cfg.Target = netipAP("")
	other := mkSession(0, 0, session.EndClientFIN, 0)
	other.Server = netipAP("10.7.7.7:25")
	mapped := mkSession(1, 0, session.EndClientFIN, 0)
	cfg.Map = map[netipAddrPort]netipAddrPort{testServer: testTarget}
	sum := startRun(t, context.Background(), cfg, other, mapped).mustFinish(t)
	if sum.Unmapped != 1 || sum.Succeeded != 1 || len(d.records()) != 1 || d.records()[0].Dst != testTarget {
		t.Errorf("summary %+v, dials %+v", sum, d.records())
	}
}

var _ net.Conn = (*memConn)(nil)

type netipAddrPort = netip.AddrPort

func netipAP(s string) netip.AddrPort {
	if s == "" {
		return netip.AddrPort{}
	}
	return netip.MustParseAddrPort(s)
}

// TestServerFirst: the client's first chunk waits for the greeting (SMTP,
// MySQL), and a session without chunks still waits for the whole answer
// before it closes.
func TestServerFirst(t *testing.T) {
	forEachConnKind(t, testServerFirst)
}

func testServerFirst(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		if rec.N == 0 {
			clock.waitTimer(t, fakeEpoch.Add(tTurn)) // the client waits for the greeting
			if c.buffered() != 0 {
				t.Error("client spoke before the greeting")
			}
			c.Write([]byte("220 ready\r\n"))
			readN(t, c, 6)
			c.Write([]byte("221 bye\r\n"))
			return
		}
		c.Write([]byte("banner\n"))
		readEOF(t, c)
	})
	smtp := mkSession(0, 0, session.EndServerFIN, 20, chunk(0, "QUIT\r\n", 11))
	smtp.Flags = session.ServerFirst
	banner := mkSession(1, 1, session.EndClientFIN, 7) // after smtp: dial order is known
	sum := startRun(t, context.Background(), testConfig(t, clock, d, obs), smtp, banner).mustFinish(t)
	if sum.Succeeded != 2 || obs.got(0) != "220 ready\r\n221 bye\r\n" || obs.got(1) != "banner\n" {
		t.Errorf("summary %+v, got %q %q", sum, obs.got(0), obs.got(1))
	}
}
