package replay

import (
	"bytes"
	"context"
	"net/netip"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Tests of the load-shaping controls (issue 5) on sessions rebuilt from a
// generated capture, so that the partitions and mappings are checked on
// what the session builder really emits, including the sessions TCPCopy
// loses: a captured client ip:port reused for a new connection.

// capturedSessions builds n one-request HTTP sessions through the session
// builder: from `clients` client addresses, each client port used `reuse`
// times in a row (the same 4-tuple with a new ISN).
func capturedSessions(t *testing.T, n, clients, reuse int) []*session.Session {
	t.Helper()
	t0 := replaytest.DemoStart()
	convs := make([][]capture.Packet, 0, n)
	for i := range n {
		ci := i % clients
		port := 20000 + (i/clients)/reuse
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 3, byte(ci >> 8), byte(ci)}), uint16(port))
		c := replaytest.NewConvAddr(client, testServer, t0.Add(time.Duration(i)*time.Millisecond)).
			ISN(uint32(i)*7919+1, uint32(i)*104729+3)
		c.Handshake().Send("GET /" + strconv.Itoa(i) + " HTTP/1.1\r\n\r\n").Reply(ctlResponse).CloseClient()
		convs = append(convs, c.Packets())
	}
	pkts := replaytest.Merge(convs...)
	var ss []*session.Session
	b := session.NewBuilder(session.Config{}, session.Collect(func(s *session.Session) { ss = append(ss, s) }))
	for i := range pkts {
		b.Add(&pkts[i])
	}
	b.Close()
	if len(ss) != n {
		t.Fatalf("capture of %d connections rebuilt into %d sessions", n, len(ss))
	}
	tuples := map[netip.AddrPort]int{}
	for _, s := range ss {
		tuples[s.Client]++
	}
	if reuse > 1 && len(tuples) == n {
		t.Fatal("no captured client ip:port is reused")
	}
	return ss
}

const ctlResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// serveCtl answers one request (up to its blank line) and waits for the
// client's FIN.
func serveCtl(t *testing.T) func(c *memConn, _ dialRec) {
	return func(c *memConn, _ dialRec) {
		var got []byte
		buf := make([]byte, 256)
		for !bytes.HasSuffix(got, []byte("\r\n\r\n")) {
			n, err := c.Read(buf)
			if err != nil {
				t.Errorf("server: read request: %v", err)
				return
			}
			got = append(got, buf[:n]...)
		}
		c.Write([]byte(ctlResponse))
		readEOF(t, c)
	}
}

// replayed runs ss once on conns of kind k with mod applied to the config and returns the
// summary and what each replayed copy was: SessionInfo by observer key.
func replayed(t *testing.T, k connKind, ss []*session.Session, mod func(*Config)) (*Summary, map[uint64]SessionInfo, []dialRec) {
	t.Helper()
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, serveCtl(t))
	cfg := testConfig(t, clock, d, obs)
	if mod != nil {
		mod(&cfg)
	}
	sum := startRun(t, context.Background(), cfg, ss...).mustFinish(t)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	infos := make(map[uint64]SessionInfo, len(obs.infos))
	for k, v := range obs.infos {
		infos[k] = v
	}
	return sum, infos, d.records()
}

// TestControlsShardUnionIsCapture: for several n, the shards 0/n … n-1/n,
// each replayed by its own Runner with its own run id (n machines),
// together replay every session of the capture exactly once; and the shards
// of a sample partition exactly that sample.
func TestControlsShardUnionIsCapture(t *testing.T) {
	forEachConnKind(t, testControlsShardUnionIsCapture)
}

func testControlsShardUnionIsCapture(t *testing.T, k connKind) {
	ss := capturedSessions(t, 1500, 40, 4)
	for _, sample := range []float64{1, 0.3} {
		want := map[uint64]bool{}
		if sample == 1 {
			for _, s := range ss {
				want[s.ID] = true
			}
		} else {
			sum, infos, _ := replayed(t, k, ss, func(c *Config) { c.Sample = sample })
			for _, info := range infos {
				want[info.Head.ID] = true
			}
			if sum.Skipped+sum.Planned != int64(len(ss)) || len(want) < 350 || len(want) > 550 {
				t.Fatalf("sample %v: %d of %d sessions, summary %+v", sample, len(want), len(ss), sum)
			}
		}
		for _, n := range []int{1, 2, 3, 7, 16} {
			owner := map[uint64]int{}
			for i := range n {
				sum, infos, _ := replayed(t, k, ss, func(c *Config) {
					c.Shard, c.Sample, c.RunID = Shard{i, n}, sample, uint64(1000*n+i+1)
				})
				if sum.Read != int64(len(ss)) || sum.Skipped+sum.Planned != sum.Read || sum.Succeeded != sum.Planned {
					t.Fatalf("sample %v shard %d/%d: summary %+v", sample, i, n, sum)
				}
				if int64(len(infos)) != sum.Planned {
					t.Fatalf("sample %v shard %d/%d: %d sessions observed, %d planned", sample, i, n, len(infos), sum.Planned)
				}
				for _, info := range infos {
					id := info.Head.ID
					if prev, dup := owner[id]; dup {
						t.Fatalf("sample %v: session %d replayed by shards %d/%d and %d/%d", sample, id, prev, n, i, n)
					}
					owner[id] = i
				}
			}
			for id := range want {
				if _, ok := owner[id]; !ok {
					t.Fatalf("sample %v: session %d replayed by none of the %d shards", sample, id, n)
				}
			}
			if len(owner) != len(want) {
				t.Fatalf("sample %v: the %d shards replayed %d sessions, want %d", sample, n, len(owner), len(want))
			}
		}
	}
}

// TestControlsSampleDeterministic: the sample is the same sessions whatever
// the run id (another machine, another day), and a smaller fraction is a
// subset of a larger one.
func TestControlsSampleDeterministic(t *testing.T) {
	forEachConnKind(t, testControlsSampleDeterministic)
}

func testControlsSampleDeterministic(t *testing.T, k connKind) {
	ss := capturedSessions(t, 1000, 25, 2)
	ids := func(sample float64, runID uint64) []uint64 {
		_, infos, _ := replayed(t, k, ss, func(c *Config) { c.Sample, c.RunID = sample, runID })
		var out []uint64
		for _, info := range infos {
			out = append(out, info.Head.ID)
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	a, b := ids(0.25, 1), ids(0.25, 99)
	if len(a) < 180 || len(a) > 320 {
		t.Errorf("sample 0.25 kept %d of 1000", len(a))
	}
	if !equalIDs(a, b) {
		t.Errorf("sample differs between run ids: %d vs %d sessions", len(a), len(b))
	}
	big := map[uint64]bool{}
	for _, id := range ids(0.5, 7) {
		big[id] = true
	}
	for _, id := range a {
		if !big[id] {
			t.Fatalf("session %d is in the 0.25 sample but not in the 0.5 sample", id)
		}
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestControlsMultiplyOwnClientAddress: every copy of a session is dialed
// from its own client address: within one copy a captured client keeps one
// mapped address (the target sees one client as one), the copies of a
// client differ, and no 4-tuple is used twice.
func TestControlsMultiplyOwnClientAddress(t *testing.T) {
	forEachConnKind(t, testControlsMultiplyOwnClientAddress)
}

func testControlsMultiplyOwnClientAddress(t *testing.T, k connKind) {
	ss := capturedSessions(t, 300, 30, 3)
	const copies = 5
	sum, infos, dials := replayed(t, k, ss, func(c *Config) { c.Multiply = copies })
	if sum.Planned != copies*300 || sum.Succeeded != copies*300 || len(infos) != copies*300 {
		t.Fatalf("summary %+v, %d observed", sum, len(infos))
	}
	type cc struct {
		client netip.Addr
		copy   int
	}
	mapped := map[cc]netip.Addr{}
	for _, info := range infos {
		k := cc{info.Head.Client.Addr(), info.Copy}
		if a, ok := mapped[k]; ok && a != info.Client.Addr() {
			t.Fatalf("copy %d of client %v dialed from %v and %v", info.Copy, k.client, a, info.Client.Addr())
		}
		mapped[k] = info.Client.Addr()
	}
	for ci := range 30 {
		client := netip.AddrFrom4([4]byte{10, 3, 0, byte(ci)})
		seen := map[netip.Addr]int{}
		for c := range copies {
			a := mapped[cc{client, c}]
			if prev, dup := seen[a]; dup {
				t.Errorf("client %v: copies %d and %d both from %v", client, prev, c, a)
			}
			seen[a] = c
		}
	}
	tuples := map[netip.AddrPort]bool{}
	for _, d := range dials {
		if tuples[d.Src] {
			t.Fatalf("4-tuple from %v used twice", d.Src)
		}
		tuples[d.Src] = true
		if d.Dst != testTarget {
			t.Fatalf("dialed %v", d.Dst)
		}
	}
}

// TestControlsMultiplyBeyondTCPCopyLimit: TCPCopy's -n stops at 1023 copies
// and shifts ports; here 3000 copies of one session each get a tuple never
// used before, nearly all from distinct addresses (a hash of the copy: a
// few collide in a /15, and then differ by port).
func TestControlsMultiplyBeyondTCPCopyLimit(t *testing.T) {
	forEachConnKind(t, testControlsMultiplyBeyondTCPCopyLimit)
}

func testControlsMultiplyBeyondTCPCopyLimit(t *testing.T, k connKind) {
	ss := capturedSessions(t, 1, 1, 1)
	const copies = 3000
	sum, _, dials := replayed(t, k, ss, func(c *Config) { c.Multiply = copies; c.MaxSessions = 64 })
	if sum.Planned != copies || sum.Succeeded != copies {
		t.Fatalf("summary %+v", sum)
	}
	tuples := map[netip.AddrPort]bool{}
	addrs := map[netip.Addr]bool{}
	for _, d := range dials {
		if tuples[d.Src] {
			t.Fatalf("4-tuple from %v used twice", d.Src)
		}
		tuples[d.Src] = true
		addrs[d.Src.Addr()] = true
		if !DefaultClientNet4.Contains(d.Src.Addr()) {
			t.Fatalf("copy dialed from %v, outside %v", d.Src, DefaultClientNet4)
		}
	}
	if len(addrs) < copies*98/100 {
		t.Errorf("%d copies from only %d addresses", copies, len(addrs))
	}
}

// TestControlsLoopFreshAddresses: each --loop pass maps every captured
// client to a new address, so the target sees new clients and no 4-tuple
// is ever reused across passes; the summary covers all passes.
func TestControlsLoopFreshAddresses(t *testing.T) {
	forEachConnKind(t, testControlsLoopFreshAddresses)
}

func testControlsLoopFreshAddresses(t *testing.T, k connKind) {
	ss := capturedSessions(t, 200, 20, 2)
	clock := newFakeClock()
	obs := newRecObserver()
	d := newMemDialerKind(t, k, clock, serveCtl(t))
	cfg := testConfig(t, clock, d, obs)
	cfg.RunID = 42
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const passes = 4
	for range passes {
		startRunner(t, context.Background(), r, ss...).mustFinish(t)
	}
	if s := r.Summary(); s.Passes != passes || s.Succeeded != passes*200 || s.Planned != passes*200 {
		t.Fatalf("summary %+v", s)
	}
	type cp struct {
		client netip.Addr
		pass   int
	}
	mapped := map[cp]netip.Addr{}
	obs.mu.Lock()
	for _, info := range obs.infos {
		k := cp{info.Head.Client.Addr(), info.Pass}
		if a, ok := mapped[k]; ok && a != info.Client.Addr() {
			t.Errorf("pass %d: client %v dialed from %v and %v", info.Pass, k.client, a, info.Client.Addr())
		}
		mapped[k] = info.Client.Addr()
	}
	obs.mu.Unlock()
	if len(mapped) != passes*20 {
		t.Fatalf("%d (client, pass) pairs, want %d", len(mapped), passes*20)
	}
	for ci := range 20 {
		client := netip.AddrFrom4([4]byte{10, 3, 0, byte(ci)})
		seen := map[netip.Addr]int{}
		for p := range passes {
			a := mapped[cp{client, p}]
			if prev, dup := seen[a]; dup {
				t.Errorf("client %v: passes %d and %d both from %v", client, prev, p, a)
			}
			seen[a] = p
		}
	}
	tuples := map[netip.AddrPort]bool{}
	for _, rec := range d.records() {
		if tuples[rec.Src] {
			t.Fatalf("4-tuple from %v reused across passes", rec.Src)
		}
		tuples[rec.Src] = true
	}
}

// TestControlsRateCapsSessionsPerSecond: with --rate 50 and --multiply 3,
// 120 new connections start exactly 20 ms apart on the fake clock, none
// early, so no one-second window holds more than 50; copies count against
// the rate like sessions.
func TestControlsRateCapsSessionsPerSecond(t *testing.T) {
	forEachConnKind(t, testControlsRateCapsSessionsPerSecond)
}

func testControlsRateCapsSessionsPerSecond(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) { readEOF(t, c) })
	cfg := testConfig(t, clock, d, nil)
	cfg.Rate, cfg.Multiply = 50, 3
	var ss []*session.Session
	for i := range 40 {
		ss = append(ss, mkSession(uint64(i), 0, session.EndClientFIN, 0))
	}
	h := startRun(t, context.Background(), cfg, ss...)
	const n, interval = 120, 20 * time.Millisecond
	at := []time.Time{(<-d.dialed).At}
	// Every later connection reserves its slot at once and arms a timer
	// for it. Wait for all of them before moving time: a timer is armed
	// relative to the clock's reading when armed, so one armed after an
	// Advance would be due late by that Advance.
	clock.waitFor(t, "every rate slot armed", func(ds []time.Time) bool {
		slots := map[time.Duration]bool{} // distinct: other timers may share a slot's time
		for _, d := range ds {
			if off := d.Sub(fakeEpoch); off > 0 && off%interval == 0 && off < n*interval {
				slots[off] = true
			}
		}
		return len(slots) == n-1
	})
	for i := 1; i < n; i++ {
		slot := fakeEpoch.Add(time.Duration(i) * interval)
		clock.waitTimer(t, slot)
		if got := len(d.records()); got != i {
			t.Fatalf("%d connections before %v, want %d", got, slot.Sub(fakeEpoch), i)
		}
		clock.AdvanceTo(slot)
		at = append(at, (<-d.dialed).At)
	}
	sum := h.mustFinish(t)
	if sum.Succeeded != n {
		t.Fatalf("summary %+v", sum)
	}
	for i, a := range at {
		if want := fakeEpoch.Add(time.Duration(i) * interval); !a.Equal(want) {
			t.Fatalf("connection %d at %v, want %v", i, a.Sub(fakeEpoch), want.Sub(fakeEpoch))
		}
	}
	for i := range at {
		in := 0
		for j := i; j < len(at) && at[j].Sub(at[i]) < time.Second; j++ {
			in++
		}
		if in > 50 {
			t.Fatalf("%d connections in the second from %v", in, at[i].Sub(fakeEpoch))
		}
	}
}
