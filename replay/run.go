package replay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Run replays the sessions received on the channel with a new Runner and
// returns its summary. See Runner.Run.
func Run(ctx context.Context, cfg Config, sessions <-chan *session.Session) (*Summary, error) {
	r, err := New(cfg)
	if err != nil {
		return nil, err
	}
	err = r.Run(ctx, sessions)
	return r.Summary(), err
}

// Runner replays sessions. One Runner serves one run: several Run calls
// (--loop passes) share its client-address allocation, so no 4-tuple is
// reused across passes, and its counters, so Summary covers all passes.
type Runner struct {
	cfg    Config
	runID  uint64
	mapper *clientMapper // dispatcher only
	stats  stats

	running atomic.Bool
	mu      sync.Mutex // guards the fields below
	passes  int
	start   time.Time // first Run's start
	end     time.Time // last Run's end; zero while running
	clock   Clock     // of the current or last Run
	admitBy time.Time // Duration's end; zero without a Duration

	// testHook, when set by tests, is called at points where a session
	// waits, so tests can tell "waiting" from "not there yet" without
	// sleeping.
	testHook func(ev hookEvent, id uint64)
}

type hookEvent int

const (
	hookCausalWait hookEvent = iota // a session blocks on its predecessors
	hookTimeWait                    // a session waits for its start time
)

// stats are the live counters behind Summary.
type stats struct {
	read, skipped, unmapped, planned, replayed, notStarted atomic.Int64
	outcomes                                               [len(outcomeNames)]atomic.Int64
	bytesSent, bytesReceived, chunksSent                   atomic.Int64
	turnTimeouts, quietTurns, earlyClose, closeTimeouts    atomic.Int64
	chunkLate, startLate                                   histogram
}

// New validates cfg and returns a Runner.
func New(cfg Config) (*Runner, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: c, runID: c.RunID}
	for r.runID == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("replay: run id: %w", err)
		}
		r.runID = binary.LittleEndian.Uint64(b[:])
	}
	r.mapper = newClientMapper(&r.cfg)
	return r, nil
}

// RunID returns the run's salt for the client mapping: pass it as
// Config.RunID to repeat the mapping.
func (r *Runner) RunID() uint64 { return r.runID }

// Run replays one pass: the sessions received on the channel until it is
// closed. It returns when every session it read has finished or timed out,
// without any fixed wait. Calls must not overlap; each call is one pass
// (--loop), with fresh client addresses.
//
// Sessions must arrive in increasing ID order, as the session builder emits
// them (IDs may have gaps: a missing ID counts as done). Run holds at most
// MaxPending sessions at a time: the producer blocks meanwhile, so memory
// follows sessions in flight.
//
// When ctx is canceled, Run stops reading the channel and admitting sessions,
// aborts the sessions in flight (RST where the conn supports it) and returns
// ctx's error once they are done; the summary stays valid. When Duration
// passes, Run stops reading and admitting, and returns nil once the sessions
// in flight finish. In both cases the producer must be stopped by the caller
// (for example by canceling its context) since the channel is not drained.
func (r *Runner) Run(ctx context.Context, sessions <-chan *session.Session) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("replay: Run called while another Run is in progress")
	}
	defer r.running.Store(false)

	clock := r.cfg.Clock
	if clock == nil {
		pc := NewPreciseClock()
		defer pc.Close() // after every session's goroutines are done
		clock = pc
	}
	now := clock.Now()
	r.mu.Lock()
	pass := r.passes
	r.passes++
	if pass == 0 {
		r.start = now
		if r.cfg.Duration > 0 {
			r.admitBy = now.Add(r.cfg.Duration)
		}
	}
	r.end = time.Time{}
	r.clock = clock
	admitBy := r.admitBy
	r.mu.Unlock()

	p := &passRun{
		r: r, cfg: &r.cfg, clock: clock, index: pass, start: now,
		salt:     runSalt(r.runID, pass),
		inflight: make(chan struct{}, r.cfg.MaxSessions),
		pending:  make(chan struct{}, r.cfg.MaxPending),
		stop:     make(chan struct{}),
		order:    make([]causalOrder, r.cfg.Multiply),
		rate:     newRateLimiter(r.cfg.Rate),
	}
	if !admitBy.IsZero() {
		d := admitBy.Sub(now)
		t := clock.AfterFunc(d, p.stopAdmitting)
		defer t.Stop()
	}
	err := p.dispatch(ctx, sessions)
	p.wg.Wait()

	r.mu.Lock()
	r.end = clock.Now()
	r.mu.Unlock()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// Summary returns a snapshot of the counters. It may be called at any time,
// also concurrently with Run.
func (r *Runner) Summary() *Summary {
	st := &r.stats
	o := func(x Outcome) int64 { return st.outcomes[x].Load() }
	s := &Summary{
		RunID: r.runID, Speed: r.cfg.Speed,
		Read: st.read.Load(), Skipped: st.skipped.Load(), Unmapped: st.unmapped.Load(),
		Planned: st.planned.Load(), Replayed: st.replayed.Load(), NotStarted: st.notStarted.Load(),
		Succeeded: o(OK),
		Failed: Failures{Refused: o(Refused), Reset: o(Reset), Timeout: o(Timeout),
			Deviation: o(Deviation), Canceled: o(Canceled), Other: o(Other)},
		BytesSent: st.bytesSent.Load(), BytesReceived: st.bytesReceived.Load(), ChunksSent: st.chunksSent.Load(),
		Deviations: DeviationTotals{TurnTimeouts: st.turnTimeouts.Load(), QuietTurns: st.quietTurns.Load(),
			EarlyClose: st.earlyClose.Load(), CloseTimeouts: st.closeTimeouts.Load()},
		ChunkLateness: st.chunkLate.summary(), StartLateness: st.startLate.summary(),
	}
	r.mu.Lock()
	s.Passes, s.Start = r.passes, r.start
	switch {
	case r.start.IsZero():
	case !r.end.IsZero():
		s.Wall = r.end.Sub(r.start)
	case r.clock != nil:
		s.Wall = r.clock.Now().Sub(r.start)
	}
	r.mu.Unlock()
	return s
}

// passRun is the state of one Run call.
type passRun struct {
	r     *Runner
	cfg   *Config
	clock Clock
	index int
	start time.Time
	salt  uint64

	inflight chan struct{} // semaphore: MaxSessions
	pending  chan struct{} // semaphore: MaxPending
	stop     chan struct{} // closed when admitting must stop (Duration)
	stopOnce sync.Once
	order    []causalOrder // per copy
	rate     *rateLimiter
	wg       sync.WaitGroup
}

func (p *passRun) stopAdmitting() { p.stopOnce.Do(func() { close(p.stop) }) }

// planned is one copy of a session on its way through the scheduler.
type planned struct {
	s      *session.Session
	copy   int
	ticket int // in p.order[copy]; -1 without causal order
	info   SessionInfo
}

// dispatch reads sessions and starts one goroutine per planned copy. It is
// the only user of the client mapper, which keeps the mapping deterministic.
func (p *passRun) dispatch(ctx context.Context, sessions <-chan *session.Session) error {
	cfg, st := p.cfg, &p.r.stats
	warned := map[string]bool{}
	var lastID uint64
	for n := 0; ; n++ {
		var s *session.Session
		var ok bool
		select {
		case s, ok = <-sessions:
		case <-ctx.Done():
			return nil
		case <-p.stop:
			return nil
		}
		if !ok {
			return nil
		}
		if s == nil {
			continue
		}
		if n > 0 && s.ID <= lastID {
			return fmt.Errorf("replay: session %d arrived after session %d: sessions must come in increasing ID order", s.ID, lastID)
		}
		lastID = s.ID
		st.read.Add(1)
		if !selected(SessionHash(s), cfg.Sample, cfg.Shard) {
			st.skipped.Add(1)
			continue
		}
		target, ok := cfg.targetFor(s.Server)
		if !ok {
			st.unmapped.Add(1)
			if k := s.Server.String(); !warned[k] {
				warned[k] = true
				cfg.Logf("sessions of captured server %s are not replayed: no --target or --map for it", k)
			}
			continue
		}
		for c := range cfg.Multiply {
			select {
			case p.pending <- struct{}{}:
			case <-ctx.Done():
				return nil
			case <-p.stop:
				return nil
			}
			client, err := p.r.mapper.mapClient(p.salt, s.Client, target, c)
			if err != nil {
				<-p.pending
				return fmt.Errorf("replay: session %d: %w", s.ID, err)
			}
			pl := &planned{s: s, copy: c, ticket: -1, info: SessionInfo{
				Session: s, Pass: p.index, Copy: c, Client: client, Target: target,
			}}
			if !cfg.NoCausalOrder {
				t, err := p.order[c].add(s.ID)
				if err != nil {
					<-p.pending
					return fmt.Errorf("replay: %w", err)
				}
				pl.ticket = t
			}
			st.planned.Add(1)
			p.wg.Add(1)
			go p.schedule(ctx, pl)
		}
	}
}

// schedule waits until the session may start, runs it, and releases what it
// holds. It is the session's owner goroutine.
// wait sleeps d on the clock; false when the run was canceled or stopped
// admitting sessions first.
func (p *passRun) wait(ctx context.Context, d time.Duration) bool {
	t := p.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
	case <-p.stop:
	}
	return false
}

func (p *passRun) schedule(ctx context.Context, pl *planned) {
	defer p.wg.Done()
	defer func() { <-p.pending }()
	if pl.ticket >= 0 {
		defer p.order[pl.copy].finish(pl.ticket)
	}
	cfg, st, s := p.cfg, &p.r.stats, pl.s
	notStarted := func() { st.notStarted.Add(1) }

	// ready tracks when the session became startable, for StartLateness:
	// the latest of its dispatch, its predecessors' end, its start time, its
	// rate slot and a free concurrency slot.
	ready := p.clock.Now()

	// 1. Causal order: every session that had ended before this one began
	// in the capture must have ended in the replay.
	if pl.ticket >= 0 && s.EndedBefore > 0 {
		o := &p.order[pl.copy]
		o.mu.Lock()
		wait := !o.readyLocked(s.EndedBefore)
		o.mu.Unlock()
		if wait {
			if h := p.r.testHook; h != nil {
				h(hookCausalWait, s.ID)
			}
			if !o.wait(ctx, p.stop, s.EndedBefore) {
				notStarted()
				return
			}
			ready = p.clock.Now()
		}
	}
	// 2. Start time.
	if !cfg.maxSpeed() {
		at := p.start.Add(cfg.scale(s.StartOffset))
		pl.info.Scheduled = at
		if d := at.Sub(p.clock.Now()); d > 0 {
			if h := p.r.testHook; h != nil {
				h(hookTimeWait, s.ID)
			}
			if !p.wait(ctx, d) {
				notStarted()
				return
			}
		}
		ready = later(ready, at)
	}
	// 3. Rate limit.
	if at, ok := p.rate.reserve(p.clock.Now()); ok {
		if d := at.Sub(p.clock.Now()); d > 0 && !p.wait(ctx, d) {
			notStarted()
			return
		}
		ready = later(ready, at)
	}
	// 4. A slot among the sessions in flight.
	select {
	case p.inflight <- struct{}{}:
	default:
		select {
		case p.inflight <- struct{}{}:
			ready = later(ready, p.clock.Now())
		case <-ctx.Done():
			notStarted()
			return
		case <-p.stop:
			notStarted()
			return
		}
	}
	defer func() { <-p.inflight }()
	if ctx.Err() != nil {
		notStarted()
		return
	}
	if pl.info.Scheduled.IsZero() {
		pl.info.Scheduled = ready
	}
	st.replayed.Add(1)
	p.drive(ctx, pl, ready)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// rateLimiter spaces session starts 1/rate apart. Reservations are handed
// out in call order; nil means no limit.
type rateLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newRateLimiter(rate float64) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	return &rateLimiter{interval: time.Duration(float64(time.Second) / rate)}
}

// reserve returns the time the caller may start at.
func (l *rateLimiter) reserve(now time.Time) (time.Time, bool) {
	if l == nil {
		return time.Time{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := later(now, l.next)
	l.next = at.Add(l.interval)
	return at, true
}
