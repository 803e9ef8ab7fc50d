package replay

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

var (
	testServer = netip.MustParseAddrPort("10.1.2.3:80")
	testTarget = netip.MustParseAddrPort("10.9.9.9:8080")
)

// Distinct timeouts, so that a test can tell from the armed deadline which
// wait the engine is in.
const (
	tDial    = 3 * time.Second
	tTurn    = 10 * time.Second
	tQuiet   = 200 * time.Millisecond
	tClose   = 5 * time.Second
	tSession = time.Hour
)

func testConfig(t *testing.T, clock *fakeClock, d Dialer, obs Observer) Config {
	return Config{
		Dialer: d, Target: testTarget, Speed: SpeedMax, Clock: clock, Observer: obs, RunID: 1,
		DialTimeout: tDial, TurnTimeout: tTurn, QuietTimeout: tQuiet, CloseTimeout: tClose,
		SessionTimeout: tSession, Logf: t.Logf,
	}
}

func chunk(off time.Duration, data string, need int64) session.Chunk {
	return session.Chunk{Offset: off, Data: []byte(data), ServerBytesBefore: need}
}

func mkSession(id, endedBefore uint64, end session.End, serverBytes int64, chunks ...session.Chunk) *session.Session {
	var cb int64
	for _, c := range chunks {
		cb += int64(len(c.Data))
	}
	return &session.Session{
		ID: id, EndedBefore: endedBefore,
		Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), uint16(40000+id)),
		Server: testServer, ISN: uint32(1000 + id),
		Start: fakeEpoch.Add(time.Duration(id) * time.Second), StartOffset: time.Duration(id) * time.Second,
		Chunks: chunks, ClientBytes: cb, ServerBytes: serverBytes, End: end,
	}
}

// recObserver records what the engine reports, in order.
type recObserver struct {
	mu       sync.Mutex
	events   []string
	infos    map[uint64]SessionInfo
	results  map[uint64]Result
	received map[uint64]*bytes.Buffer
}

func newRecObserver() *recObserver {
	return &recObserver{infos: map[uint64]SessionInfo{}, results: map[uint64]Result{}, received: map[uint64]*bytes.Buffer{}}
}

type recSession struct {
	o   *recObserver
	key uint64
}

// key folds copy and pass into the id for tests that use them.
func obsKey(info *SessionInfo) uint64 {
	return info.Head.ID + uint64(info.Copy)*1_000_000 + uint64(info.Pass)*1_000_000_000
}

func (o *recObserver) Begin(info *SessionInfo) SessionObserver {
	k := obsKey(info)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, fmt.Sprintf("begin %d", k))
	o.infos[k] = *info
	o.received[k] = &bytes.Buffer{}
	return &recSession{o, k}
}

func (s *recSession) Captured(int64, []byte) {}

func (s *recSession) Received(p []byte) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.received[s.key].Write(p)
}

func (s *recSession) Done(r *Result) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.events = append(s.o.events, fmt.Sprintf("done %d", s.key))
	s.o.results[s.key] = *r
}

func (o *recObserver) result(t *testing.T, k uint64) Result {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.results[k]
	if !ok {
		t.Fatalf("no result for session %d", k)
	}
	return r
}

func (o *recObserver) got(k uint64) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if b := o.received[k]; b != nil {
		return b.String()
	}
	return ""
}

func (o *recObserver) eventIndex(ev string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, e := range o.events {
		if e == ev {
			return i
		}
	}
	return -1
}

// runHandle is a Run in the background.
type runHandle struct {
	r    *Runner
	done chan struct{}
	err  error
}

func startRun(t *testing.T, ctx context.Context, cfg Config, ss ...*session.Session) *runHandle {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return startRunner(t, ctx, r, ss...)
}

func startRunner(t *testing.T, ctx context.Context, r *Runner, ss ...*session.Session) *runHandle {
	ch := make(chan *session.Session, len(ss))
	for _, s := range ss {
		ch <- s
	}
	close(ch)
	h := &runHandle{r: r, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.err = r.Run(ctx, ch)
	}()
	return h
}

func (h *runHandle) wait(t *testing.T) (*Summary, error) {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	return h.r.Summary(), h.err
}

func (h *runHandle) mustFinish(t *testing.T) *Summary {
	t.Helper()
	s, err := h.wait(t)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return s
}

func TestTurnWaitsForServerBytes(t *testing.T) {
	forEachConnKind(t, testTurnWaitsForServerBytes)
}

func testTurnWaitsForServerBytes(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		if got := readN(t, c, 4); got != "REQ1" {
			t.Errorf("first chunk %q", got)
		}
		c.Write([]byte("01234"))
		// The engine has seen an answer and now waits in quiet mode for
		// the other 5 bytes: nothing may arrive yet.
		clock.waitTimer(t, fakeEpoch.Add(tQuiet))
		if n := c.buffered(); n != 0 {
			t.Errorf("second chunk sent after 5 of 10 server bytes (%d bytes buffered)", n)
		}
		c.Write([]byte("56789"))
		if got := readN(t, c, 4); got != "REQ2" {
			t.Errorf("second chunk %q", got)
		}
		c.Write([]byte("abcdefghij"))
		readEOF(t, c)
	})
	s := mkSession(0, 0, session.EndClientFIN, 20, chunk(0, "REQ1", 0), chunk(time.Millisecond, "REQ2", 10))
	sum := startRun(t, context.Background(), testConfig(t, clock, d, obs), s).mustFinish(t)

	r := obs.result(t, 0)
	if r.Outcome != OK || r.Err != nil || r.Deviations.Total() != 0 {
		t.Errorf("result %v %v %+v, want ok without deviations", r.Outcome, r.Err, r.Deviations)
	}
	if r.End != session.EndClientFIN || r.BytesSent != 8 || r.BytesReceived != 20 || r.ChunksSent != 2 {
		t.Errorf("result end %v sent %d received %d chunks %d", r.End, r.BytesSent, r.BytesReceived, r.ChunksSent)
	}
	if got := obs.got(0); got != "0123456789abcdefghij" {
		t.Errorf("observer received %q", got)
	}
	if sum.Succeeded != 1 || sum.Replayed != 1 || sum.BytesReceived != 20 || sum.ChunkLateness.Count != 2 {
		t.Errorf("summary %+v", sum)
	}
}

func TestPipelinedChunksGoBackToBack(t *testing.T) {
	forEachConnKind(t, testPipelinedChunksGoBackToBack)
}

func testPipelinedChunksGoBackToBack(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		// All three requests arrive before any answer: if the engine
		// waited between them, this read would never complete.
		if got := readN(t, c, 9); got != "GETaGETbG" {
			t.Errorf("pipelined chunks %q", got)
		}
		readN(t, c, 3)
		c.Write([]byte(strings.Repeat("r", 30)))
		// Server closes first, as captured.
	})
	s := mkSession(0, 0, session.EndServerFIN, 30,
		chunk(0, "GETa", 0), chunk(0, "GETb", 0), chunk(0, "GETc", 0))
	startRun(t, context.Background(), testConfig(t, clock, d, obs), s).mustFinish(t)
	r := obs.result(t, 0)
	if r.Outcome != OK || r.End != session.EndServerFIN || r.BytesReceived != 30 || r.Deviations.Total() != 0 {
		t.Errorf("result %+v", r)
	}
}

func TestQuietAndTurnTimeouts(t *testing.T) {
	forEachConnKind(t, testQuietAndTurnTimeouts)
}

func testQuietAndTurnTimeouts(t *testing.T, k connKind) {
	for _, tc := range []struct {
		name      string
		firstPart string        // what the server answers to REQ1 before going quiet
		advance   time.Duration // the timeout that releases REQ2
		want      Outcome
		quiet     int
		turn      int
	}{
		{"quiet", "short", tQuiet, OK, 1, 0},
		{"turn", "", tTurn, Deviation, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			clock := newFakeClock()
			obs := newRecObserver()
			d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
				readN(t, c, 4)
				c.Write([]byte(tc.firstPart))
				clock.waitTimer(t, fakeEpoch.Add(tc.advance))
				if c.buffered() != 0 {
					t.Error("REQ2 sent before the timeout")
				}
				clock.Advance(tc.advance)
				if got := readN(t, c, 4); got != "REQ2" {
					t.Errorf("second chunk %q", got)
				}
				c.Write([]byte(strings.Repeat("x", 20-len(tc.firstPart))))
				readEOF(t, c)
			})
			s := mkSession(0, 0, session.EndClientFIN, 20, chunk(0, "REQ1", 0), chunk(0, "REQ2", 10))
			sum := startRun(t, context.Background(), testConfig(t, clock, d, obs), s).mustFinish(t)
			r := obs.result(t, 0)
			if r.Outcome != tc.want || r.Deviations.QuietTurns != tc.quiet || r.Deviations.TurnTimeouts != tc.turn {
				t.Errorf("outcome %v deviations %+v, want %v quiet %d turn %d", r.Outcome, r.Deviations, tc.want, tc.quiet, tc.turn)
			}
			if r.BytesReceived != 20 || r.ChunksSent != 2 {
				t.Errorf("received %d, chunks %d", r.BytesReceived, r.ChunksSent)
			}
			if sum.Deviations.QuietTurns != int64(tc.quiet) || sum.Deviations.TurnTimeouts != int64(tc.turn) {
				t.Errorf("summary deviations %+v", sum.Deviations)
			}
			// The chunk released by the timeout is due at the timeout, not
			// when the turn began: its lateness is 0 on a fake clock.
			if sum.ChunkLateness.Max != 0 {
				t.Errorf("lateness %+v", sum.ChunkLateness)
			}
		})
	}
}

// TestCausalOrderAtMaxSpeed: B and C began after A had ended in the capture,
// so both wait for A at any speed; B and C overlapped, so they may overlap.
func TestCausalOrderAtMaxSpeed(t *testing.T) {
	forEachConnKind(t, testCausalOrderAtMaxSpeed)
}

func testCausalOrderAtMaxSpeed(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	waiting := make(chan uint64, 4)
	bothDialed := make(chan struct{})
	var once sync.Once
	var dialedBC sync.WaitGroup
	dialedBC.Add(2)
	go func() { dialedBC.Wait(); once.Do(func() { close(bothDialed) }) }()
	var d *memDialer
	d = newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		readN(t, c, 3)
		switch rec.N {
		case 0: // A: hold it until B and C are provably waiting for it.
			<-waiting
			<-waiting
			if n := len(d.records()); n != 1 {
				t.Errorf("%d sessions dialed while A runs, want only A", n)
			}
			c.Write([]byte("ok"))
		default: // B, C: each holds its answer until both are dialed.
			dialedBC.Done()
			<-bothDialed
			c.Write([]byte("ok"))
		}
	})
	sa := mkSession(0, 0, session.EndServerFIN, 2, chunk(0, "rqA", 0))
	sb := mkSession(1, 1, session.EndServerFIN, 2, chunk(0, "rqB", 0))
	sc := mkSession(2, 1, session.EndServerFIN, 2, chunk(0, "rqC", 0))
	r, err := New(testConfig(t, clock, d, obs))
	if err != nil {
		t.Fatal(err)
	}
	r.testHook = func(ev hookEvent, id uint64) {
		if ev == hookCausalWait {
			waiting <- id
		}
	}
	sum := startRunner(t, context.Background(), r, sa, sb, sc).mustFinish(t)
	if sum.Succeeded != 3 {
		t.Fatalf("summary %+v", sum)
	}
	if obs.eventIndex("done 0") > obs.eventIndex("begin 1") || obs.eventIndex("done 0") > obs.eventIndex("begin 2") {
		t.Errorf("B or C began before A was done: %v", obs.events)
	}
}
