package replay

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// timeWaitTarget refuses a dial whose 4-tuple it has seen before, like a
// target holding the previous connection in TIME_WAIT (Linux answers such a
// SYN with an RST or ignores it, depending on its sequence number).
type timeWaitTarget struct {
	mu   sync.Mutex
	seen map[[2]netip.AddrPort]bool
}

func (tw *timeWaitTarget) dial(_ context.Context, d dialRec) error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	k := [2]netip.AddrPort{d.Src, d.Dst}
	if tw.seen[k] {
		return syscall.ECONNREFUSED
	}
	tw.seen[k] = true
	return nil
}

// captureWithReusedPorts: 600 sessions from 30 clients, each client reusing
// its ip:port many times (which the target would reject on reuse).
func captureWithReusedPorts() []*session.Session {
	var ss []*session.Session
	for i := range 600 {
		s := mkSession(uint64(i), 0, session.EndClientFIN, 0, chunk(0, "hi", 0))
		s.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 30)}), 5555)
		ss = append(ss, s)
	}
	return ss
}

// TestBackToBackRunsDeliverAll: the same capture replayed twice against the
// same TIME_WAIT-keeping target delivers everything both times, because the
// default RunID rotates the mapping. The control, a fixed RunID reused,
// shows what the rotation prevents.
func TestBackToBackRunsDeliverAll(t *testing.T) {
	forEachConnKind(t, testBackToBackRunsDeliverAll)
}

func testBackToBackRunsDeliverAll(t *testing.T, k connKind) {
	for _, tc := range []struct {
		name   string
		runIDs [2]uint64
		second int64 // sessions delivered by the second run
	}{
		{"rotating", [2]uint64{0, 0}, 600},
		{"same run id", [2]uint64{9, 9}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			clock := newFakeClock()
			tw := &timeWaitTarget{seen: map[[2]netip.AddrPort]bool{}}
			var got [2]int64
			for run := range 2 {
				d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readN(t, c, 2); readEOF(t, c) })
				d.dial = tw.dial
				cfg := testConfig(t, clock, d, nil)
				cfg.RunID = tc.runIDs[run]
				sum := startRun(t, context.Background(), cfg, captureWithReusedPorts()...).mustFinish(t)
				got[run] = sum.Succeeded
			}
			if got[0] != 600 || got[1] != tc.second {
				t.Errorf("delivered %v, want [600 %d]", got, tc.second)
			}
		})
	}
}

// TestLoopPassesFreshTuples: passes of one Runner never reuse a tuple.
func TestLoopPassesFreshTuples(t *testing.T) {
	forEachConnKind(t, testLoopPassesFreshTuples)
}

func testLoopPassesFreshTuples(t *testing.T, k connKind) {
	clock := newFakeClock()
	tw := &timeWaitTarget{seen: map[[2]netip.AddrPort]bool{}}
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readN(t, c, 2); readEOF(t, c) })
	d.dial = tw.dial
	cfg := testConfig(t, clock, d, nil)
	cfg.RunID = 5
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		startRunner(t, context.Background(), r, captureWithReusedPorts()...).mustFinish(t)
	}
	if s := r.Summary(); s.Succeeded != 1800 || s.Passes != 3 {
		t.Errorf("summary succeeded %d passes %d", s.Succeeded, s.Passes)
	}
}

// TestMultiply: every session N times, each copy from its own address, and
// causal order holds per copy.
func TestMultiply(t *testing.T) {
	forEachConnKind(t, testMultiply)
}

func testMultiply(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readN(t, c, 2); c.Write([]byte("ok")) })
	cfg := testConfig(t, clock, d, obs)
	cfg.Multiply = 3
	a := mkSession(0, 0, session.EndServerFIN, 2, chunk(0, "aa", 0))
	b := mkSession(1, 1, session.EndServerFIN, 2, chunk(0, "bb", 0))
	sum := startRun(t, context.Background(), cfg, a, b).mustFinish(t)
	if sum.Planned != 6 || sum.Succeeded != 6 {
		t.Fatalf("summary %+v", sum)
	}
	addrs := map[netip.Addr]bool{}
	for _, rec := range d.records() {
		addrs[rec.Src.Addr()] = true
	}
	// a and b have the same captured client IP: one address per copy.
	if len(addrs) != 3 {
		t.Errorf("%d client addresses for 3 copies: %v", len(addrs), addrs)
	}
	for c := range uint64(3) {
		if obs.eventIndex(eventKey("done", 0, c)) > obs.eventIndex(eventKey("begin", 1, c)) {
			t.Errorf("copy %d: b began before a was done: %v", c, obs.events)
		}
	}
}

func eventKey(ev string, id, copy uint64) string {
	return ev + " " + itoa(id+copy*1_000_000)
}

func itoa(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestShardsPartitionTheCapture: the union of shards i/n is every session,
// each exactly once; sampling keeps about the asked fraction, the same
// sessions every time.
func TestShardsPartitionTheCapture(t *testing.T) {
	var ss []*session.Session
	for i := range 5000 {
		s := mkSession(uint64(i), 0, session.EndClientFIN, 0)
		s.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%5000))
		ss = append(ss, s)
	}
	const n = 7
	owner := make([]int, len(ss))
	for i := range owner {
		owner[i] = -1
	}
	for shard := range n {
		count := 0
		for i, s := range ss {
			if selected(SessionHash(s), 0, Shard{shard, n}) {
				if owner[i] >= 0 {
					t.Fatalf("session %d in shards %d and %d", i, owner[i], shard)
				}
				owner[i] = shard
				count++
			}
		}
		if count < 500 || count > 930 {
			t.Errorf("shard %d/%d holds %d of 5000", shard, n, count)
		}
	}
	for i, o := range owner {
		if o < 0 {
			t.Fatalf("session %d in no shard", i)
		}
	}
	kept := 0
	for _, s := range ss {
		if selected(SessionHash(s), 0.1, Shard{}) {
			kept++
			if !selected(SessionHash(s), 0.2, Shard{}) {
				t.Fatal("a session kept at 10 % is dropped at 20 %")
			}
		}
	}
	if kept < 400 || kept > 600 {
		t.Errorf("sample 0.1 kept %d of 5000", kept)
	}
}

func TestShardInRun(t *testing.T) {
	forEachConnKind(t, testShardInRun)
}

func testShardInRun(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	total := int64(0)
	for i := range 3 {
		cfg := testConfig(t, clock, d, nil)
		cfg.Shard = Shard{i, 3}
		var ss []*session.Session
		for j := range 90 {
			ss = append(ss, mkSession(uint64(j), uint64(j), session.EndClientFIN, 0))
		}
		sum := startRun(t, context.Background(), cfg, ss...).mustFinish(t)
		if sum.Read != 90 || sum.Skipped+sum.Planned != 90 {
			t.Errorf("shard %d: %+v", i, sum)
		}
		total += sum.Succeeded
	}
	if total != 90 {
		t.Errorf("shards replayed %d of 90", total)
	}
}

// TestNoCausalOrder: with the switch, B does not wait for A.
func TestNoCausalOrder(t *testing.T) {
	forEachConnKind(t, testNoCausalOrder)
}

func testNoCausalOrder(t *testing.T, k connKind) {
	clock := newFakeClock()
	bDialed := make(chan struct{})
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		if rec.N == 0 {
			<-bDialed // A holds until B is up: impossible with causal order
		} else {
			close(bDialed)
		}
		readEOF(t, c)
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.NoCausalOrder = true
	sum := startRun(t, context.Background(), cfg,
		mkSession(0, 0, session.EndClientFIN, 0), mkSession(1, 1, session.EndClientFIN, 0)).mustFinish(t)
	if sum.Succeeded != 2 {
		t.Errorf("summary %+v", sum)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Dialer: &SocketDialer{}, Target: testTarget}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Dialer = nil }, "no dialer"},
		{func(c *Config) { c.Target = netip.AddrPort{} }, "no target"},
		{func(c *Config) { c.Speed = -1 }, "speed"},
		{func(c *Config) { c.Sample = 1.5 }, "sample"},
		{func(c *Config) { c.Shard = Shard{3, 3} }, "shard"},
		{func(c *Config) { c.ClientNet4 = DefaultClientNet6 }, "not IPv4"},
	} {
		c := ok
		tc.mod(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want error about %q, got %v", tc.want, err)
		}
	}
	r, err := New(ok)
	if err != nil || !math.IsInf(r.cfg.Speed, 1) || r.RunID() == 0 {
		t.Errorf("defaults: %v speed %v run id %d", err, r.cfg.Speed, r.RunID())
	}
	if v, err := ParseSpeed("max"); err != nil || !math.IsInf(v, 1) {
		t.Error("ParseSpeed(max)")
	}
	if _, err := ParseSpeed("0"); err == nil {
		t.Error("ParseSpeed(0) accepted")
	}
	if s, err := ParseShard("2/5"); err != nil || s != (Shard{2, 5}) {
		t.Errorf("ParseShard: %v %v", s, err)
	}
	if _, err := ParseShard("5/5"); err == nil {
		t.Error("ParseShard(5/5) accepted")
	}
	c, tg, err := ParseMapping("10.0.0.1:80=[::ffff:127.0.0.1]:8080")
	if err != nil || c != netip.MustParseAddrPort("10.0.0.1:80") || tg != netip.MustParseAddrPort("127.0.0.1:8080") {
		t.Errorf("ParseMapping: %v %v %v", c, tg, err)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	l := h.summary()
	if l.Count != 1000 || l.Max != time.Millisecond {
		t.Errorf("%+v", l)
	}
	near := func(got, want time.Duration) bool {
		return math.Abs(float64(got-want)) <= 0.04*float64(want)
	}
	if !near(l.P50, 500*time.Microsecond) || !near(l.P99, 990*time.Microsecond) {
		t.Errorf("p50 %v p99 %v", l.P50, l.P99)
	}
	for _, v := range []uint64{0, 1, 63, 64, 65, 1000, 1 << 40, math.MaxInt64} {
		i := histIndex(v)
		if i >= histBuckets || histLower(i) > v || (i+1 < histBuckets && histLower(i+1) <= v) {
			t.Errorf("value %d: bucket %d [%d, %d)", v, i, histLower(i), histLower(i+1))
		}
	}
}

func TestSummaryJSONAndText(t *testing.T) {
	s := &Summary{RunID: 0xabc, Passes: 1, Speed: SpeedMax, Wall: 2 * time.Second, Planned: 10, Replayed: 10,
		Succeeded: 8, Failed: Failures{Refused: 1, Deviation: 1}, BytesSent: 2048, BytesReceived: 5 << 20,
		ChunkLateness: Latency{Count: 3, P50: 45 * time.Microsecond, P99: 120 * time.Microsecond, Max: time.Millisecond}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	if m["version"] != 1.0 || m["run_id"] != "0000000000000abc" || m["speed"] != "max" || m["sessions_failed"] != 2.0 ||
		m["sessions_per_second"] != 5.0 || m["chunk_lateness"].(map[string]any)["p50_us"] != 45.0 {
		t.Errorf("json %s", b)
	}
	var sb strings.Builder
	s.WriteText(&sb)
	for _, want := range []string{"10 planned", "2 failed (refused 1", "5.0 MiB received", "p50 45µs", "5.0 sessions/s"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("text summary lacks %q:\n%s", want, sb.String())
		}
	}
}

func TestPreciseClock(t *testing.T) {
	checkLeaks(t)
	c := NewPreciseClock()
	defer c.Close()
	start := time.Now()
	t1 := c.NewTimer(20 * time.Millisecond)
	t2 := c.NewTimer(5 * time.Millisecond)
	fired := make(chan struct{})
	c.AfterFunc(10*time.Millisecond, func() { close(fired) })
	stopped := c.NewTimer(time.Millisecond)
	if !stopped.Stop() {
		t.Error("Stop of a pending timer reported false")
	}
	<-t2.C()
	if el := time.Since(start); el < 5*time.Millisecond {
		t.Errorf("5 ms timer fired after %v", el)
	}
	<-fired
	<-t1.C()
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("20 ms timer fired after %v", el)
	}
	// Reset after expiry re-arms; a zero reset fires at once.
	t1.Reset(0)
	<-t1.C()
	select {
	case <-stopped.C():
		t.Error("stopped timer fired")
	default:
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	c.Close() // idempotent
}
