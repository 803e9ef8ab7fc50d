package replay

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

var testBaseline = netip.MustParseAddrPort("10.9.9.8:8080")

// timedObserver records what a TimedObserver is told.
type timedObserver struct {
	mu    sync.Mutex
	infos []SessionInfo
	sent  map[uint64][]string  // by obsKey, baseline copies + 1e12
	recvd map[uint64]int       // bytes by ReceivedAt
	capAt map[uint64][]float64 // CapturedAt times (ms)
}

type timedSession struct {
	o   *timedObserver
	key uint64
}

func (o *timedObserver) Begin(info *SessionInfo) SessionObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.infos = append(o.infos, *info)
	k := obsKey(info)
	if info.Baseline {
		k += 1e12
	}
	return &timedSession{o, k}
}

func (s *timedSession) Captured(int64, []byte) { panic("Captured called on a TimedObserver") }
func (s *timedSession) Received([]byte)        { panic("Received called on a TimedObserver") }
func (s *timedSession) Done(*Result)           {}
func (s *timedSession) CapturedAt(_ int64, _ []byte, at time.Duration) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.capAt[s.key] = append(s.o.capAt[s.key], float64(at)/1e6)
}
func (s *timedSession) ReceivedAt(p []byte, _ time.Time) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.recvd[s.key] += len(p)
}
func (s *timedSession) Sent(c session.Chunk, _ time.Time) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.sent[s.key] = append(s.o.sent[s.key], string(c.Data))
}

// TestBaselineTwins: with a baseline every copy has a twin dialed to the
// baseline from its own client address, with the same requests; a
// TimedObserver gets Sent, ReceivedAt and CapturedAt (never the untimed
// calls).
func TestBaselineTwins(t *testing.T) {
	clock := newFakeClock()
	obs := &timedObserver{sent: map[uint64][]string{}, recvd: map[uint64]int{}, capAt: map[uint64][]float64{}}
	d := newMemDialerKind(t, pollConns, clock, func(c *memConn, _ dialRec) {
		readN(t, c, 3)
		c.Write([]byte("ok!"))
		io.Copy(io.Discard, c)
	})
	cfg := testConfig(t, clock, d, obs)
	cfg.Baseline, cfg.Multiply = testBaseline, 2
	s := mkSession(0, 0, session.EndClientFIN, 3, chunk(0, "GET", 0))
	s.ServerData = []byte("ok!")
	h := startRun(t, context.Background(), cfg, s)
	sum := h.mustFinish(t)
	if sum.Planned != 4 || sum.Succeeded != 4 {
		t.Fatalf("planned %d, succeeded %d; want 4 copies (2 × target, 2 × baseline)", sum.Planned, sum.Succeeded)
	}
	srcs := map[netip.AddrPort]bool{}
	byDst := map[netip.AddrPort]int{}
	for _, r := range d.records() {
		srcs[r.Src] = true
		byDst[r.Dst]++
	}
	if len(srcs) != 4 || byDst[testTarget] != 2 || byDst[testBaseline] != 2 {
		t.Errorf("dials by target %v from %d addresses; want 2 + 2 from 4", byDst, len(srcs))
	}
	copies := map[[2]int]bool{}
	for _, in := range obs.infos {
		want := testTarget
		if in.Baseline {
			want = testBaseline
		}
		if in.Target != want {
			t.Errorf("copy %d (baseline %v) dialed %s", in.Copy, in.Baseline, in.Target)
		}
		b := 0
		if in.Baseline {
			b = 1
		}
		copies[[2]int{in.Copy, b}] = true
	}
	if len(copies) != 4 {
		t.Errorf("copies %v: want copies 0 and 1, each to the target and the baseline", copies)
	}
	for k, sent := range obs.sent {
		if len(sent) != 1 || sent[0] != "GET" || obs.recvd[k] != 3 {
			t.Errorf("copy %d: sent %q, received %d bytes", k, sent, obs.recvd[k])
		}
	}
	if len(obs.sent) != 4 {
		t.Errorf("Sent seen by %d copies, want 4", len(obs.sent))
	}
}
