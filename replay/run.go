package replay

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
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
	warned  map[netip.AddrPort]bool
	pass    *passRun // the pass in progress, for StopAdmitting
	stopped bool     // StopAdmitting was called

	// testHook, when set by tests, is called at points where a session
	// waits, so tests can tell "waiting" from "not there yet" without
	// sleeping.
	testHook func(ev hookEvent, id uint64)
}

type hookEvent int

const (
	hookCausalWait hookEvent = iota // a session blocks on its predecessors
	hookTimeWait                    // a session waits for its start time
	hookPeerWait                    // a session waits for a peer's progress
	hookInputWait                   // the input waits for a session's window (p.mu held: do not block)
)

// stats are the live counters behind Summary.
type stats struct {
	read, skipped, unmapped, planned, replayed, notStarted atomic.Int64
	outcomes                                               [len(outcomeNames)]atomic.Int64
	bytesSent, bytesReceived, chunksSent                   atomic.Int64
	turnTimeouts, quietTurns, earlyClose, closeTimeouts    atomic.Int64
	lostTurns                                              atomic.Int64
	chunkLate, startLate, liveLag                          histogram
	shed, droppedSessions, droppedBytes, peerTimeouts      atomic.Int64
	inFlight                                               atomic.Int64
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

// Run replays one pass of complete sessions: those received on the channel
// until it is closed, each handed to the engine as the events of a session
// that starts and ends at once (session.Session.Play). Sessions must arrive
// in increasing ID order (end order), as session.Collect emits them; IDs may
// have gaps (a missing ID counts as done). See Stream for the rest.
func (r *Runner) Run(ctx context.Context, sessions <-chan *session.Session) error {
	return r.Stream(ctx, func(ctx context.Context, sink session.Sink) error {
		var last uint64
		for n := 0; ; {
			select {
			case s, ok := <-sessions:
				if !ok {
					return nil
				}
				if s == nil {
					continue
				}
				if n > 0 && s.ID <= last {
					return fmt.Errorf("replay: session %d arrived after session %d: sessions must come in increasing ID order", s.ID, last)
				}
				last = s.ID
				n++
				s.Play(sink)
			case <-ctx.Done():
				return nil
			}
		}
	})
}

// Stream replays one pass: produce is called on the caller's goroutine with
// the Sink that takes the pass's sessions (a session.Builder fed from a
// capture, typically) and returns when its input ends. Sessions start in
// the replay as they start in the capture; Stream returns when produce has
// returned and every session has finished or timed out, without any fixed
// wait. Calls must not overlap; each call is one pass (--loop), with fresh
// client addresses. produce's error is returned (after the sessions in
// flight finish); a session the builder had not ended when produce
// returned finishes with the chunks it has.
//
// The Sink's calls may block: that is the replay's backpressure (see
// feed.go), so memory follows what is in flight, not session length or
// capture size. With Config.Live they never block.
//
// When ctx is canceled, Stream stops admitting sessions, cancels produce's
// context, aborts the sessions in flight (RST where the conn supports it)
// and returns ctx's error once they are done; the summary stays valid. When
// Duration passes, it stops admitting and cancels produce's context (the
// producer should then end its sessions, as Builder.Close does), and
// returns nil once the sessions in flight finish.
func (r *Runner) Stream(ctx context.Context, produce func(ctx context.Context, sink session.Sink) error) error {
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

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &passRun{
		r: r, cfg: &r.cfg, clock: clock, index: pass, start: now, ctx: ctx, cancelInput: cancel,
		salt:     runSalt(r.runID, pass),
		inflight: make(chan struct{}, r.cfg.MaxSessions),
		stop:     make(chan struct{}),
		order:    make([]causalOrder, r.cfg.copies()),
		rate:     newRateLimiter(r.cfg.Rate),
		feeds:    make(map[uint64]*feed),
	}
	p.cond = sync.NewCond(&p.mu)
	r.mu.Lock()
	r.pass = p
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		p.stopAdmitting()
	}
	defer func() {
		r.mu.Lock()
		r.pass = nil
		r.mu.Unlock()
	}()
	stopWake := context.AfterFunc(ctx, p.wake)
	defer stopWake()
	if !admitBy.IsZero() {
		d := admitBy.Sub(now)
		t := clock.AfterFunc(d, p.stopAdmitting)
		defer t.Stop()
	}
	err := produce(pctx, p)
	p.mu.Lock()
	for _, f := range p.feeds {
		f.endInputLocked()
	}
	p.inputDone = true
	if err == nil {
		err = p.err
	}
	p.mu.Unlock()
	p.wg.Wait()

	r.mu.Lock()
	r.end = clock.Now()
	r.mu.Unlock()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// StopAdmitting ends the current pass's input the way Duration does: no
// session starts any more (those waiting count as not started), the
// producer's context is canceled (a Builder is then closed, which ends the
// sessions still open in the capture as capture end), and the sessions in
// flight finish with what they have. It is for the first Ctrl-C of a live
// copy. It may be called at any time, from any goroutine; a pass that
// starts after it admits nothing.
func (r *Runner) StopAdmitting() {
	r.mu.Lock()
	p := r.pass
	r.stopped = true
	r.mu.Unlock()
	if p != nil {
		p.stopAdmitting()
	}
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
		Succeeded: o(OK), Incomplete: o(Incomplete),
		Failed: Failures{Refused: o(Refused), Reset: o(Reset), Timeout: o(Timeout),
			Deviation: o(Deviation), Canceled: o(Canceled), Other: o(Other)},
		BytesSent: st.bytesSent.Load(), BytesReceived: st.bytesReceived.Load(), ChunksSent: st.chunksSent.Load(),
		Deviations: DeviationTotals{TurnTimeouts: st.turnTimeouts.Load(), QuietTurns: st.quietTurns.Load(),
			EarlyClose: st.earlyClose.Load(), CloseTimeouts: st.closeTimeouts.Load(), LostTurns: st.lostTurns.Load()},
		ChunkLateness: st.chunkLate.summary(), StartLateness: st.startLate.summary(),
		LiveLag: st.liveLag.summary(),
		Shed:    st.shed.Load(), DroppedSessions: st.droppedSessions.Load(), DroppedBytes: st.droppedBytes.Load(),
		PeerTimeouts: st.peerTimeouts.Load(), InFlight: st.inFlight.Load(),
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

// passRun is the state of one Stream call. It is the pass's session.Sink.
type passRun struct {
	r           *Runner
	cfg         *Config
	clock       Clock
	index       int
	start       time.Time
	salt        uint64
	ctx         context.Context
	cancelInput context.CancelFunc

	inflight chan struct{} // semaphore: MaxSessions
	stop     chan struct{} // closed when admitting must stop (Duration)
	stopOnce sync.Once
	order    []causalOrder // per copy
	rate     *rateLimiter
	wg       sync.WaitGroup

	// mu guards the feeds and the counts below; cond is where the builder
	// waits (backpressure), woken by wakeLocked.
	mu                sync.Mutex
	cond              *sync.Cond
	waiting           bool
	feeds             map[uint64]*feed // by Head.ID, while a copy is not done
	pending           int              // copies begun and not done
	completePending   int              // of those, the ones whose capture has ended
	incompleteRunning int              // copies holding a slot whose capture has not ended
	held              int64            // client bytes queued in feeds
	inputDone         bool
	lastID            uint64
	begun             bool
	err               error
}

func (p *passRun) stopAdmitting() {
	p.stopOnce.Do(func() {
		close(p.stop)
		p.cancelInput()
		p.wake()
	})
}

func (p *passRun) wake() {
	p.mu.Lock()
	p.wakeLocked()
	p.mu.Unlock()
}

func (p *passRun) wakeLocked() {
	if p.waiting {
		p.waiting = false
		p.cond.Broadcast()
	}
}

func (p *passRun) waitLocked() {
	p.waiting = true
	p.cond.Wait()
}

func (p *passRun) stoppedLocked() bool {
	if p.ctx.Err() != nil {
		return true
	}
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func (p *passRun) setErrLocked(err error) {
	if p.err == nil {
		p.err = fmt.Errorf("replay: %w", err)
		p.cancelInput()
	}
}

// Begin takes a session that has started in the capture and plans its
// copies. It may wait (offline input) while MaxPending copies are pending
// and one of them can finish without more input; see feed.go.
func (p *passRun) Begin(h *session.Head) session.Feed {
	cfg, st := p.cfg, &p.r.stats
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil || p.stoppedLocked() {
		return nil
	}
	if p.begun && h.ID <= p.lastID {
		p.setErrLocked(fmt.Errorf("session %d began after session %d: sessions must begin in increasing ID order", h.ID, p.lastID))
		return nil
	}
	p.begun, p.lastID = true, h.ID
	st.read.Add(1)
	if !selected(HeadHash(h), cfg.Sample, cfg.Shard) {
		st.skipped.Add(1)
		return nil
	}
	target, ok := cfg.targetFor(h.Server)
	if !ok {
		st.unmapped.Add(1)
		if p.r.warned == nil {
			p.r.warned = map[netip.AddrPort]bool{}
		}
		if !p.r.warned[h.Server] {
			p.r.warned[h.Server] = true
			cfg.Logf("sessions of captured server %s are not replayed: no --target or --map for it", h.Server)
		}
		return nil
	}
	if !cfg.Live {
		for p.pending >= cfg.MaxPending && p.completePending > 0 && p.incompleteRunning < cfg.MaxSessions && !p.stoppedLocked() {
			p.waitLocked()
		}
		if p.stoppedLocked() {
			return nil
		}
	}
	if p.held > cfg.Budget {
		// Nothing can wait for room and the budget is spent: this
		// session is given up before it starts.
		st.shed.Add(1)
		return nil
	}
	f := &feed{p: p, head: h, copies: make([]*copyRun, cfg.copies())}
	for c := range f.copies {
		// A baseline copy (c >= Multiply) is the twin of copy
		// c-Multiply, with its own client address (mapped as copy c).
		dst, n, base := target, c, c >= cfg.Multiply
		if base {
			dst, n = cfg.Baseline, c-cfg.Multiply
		}
		client, err := p.r.mapper.mapClient(p.salt, h.Client, dst, c)
		if err != nil {
			p.setErrLocked(fmt.Errorf("session %d: %w", h.ID, err))
			return nil
		}
		f.copies[c] = &copyRun{f: f, idx: c, ticket: -1, done: make(chan struct{}), info: SessionInfo{
			Head: h, Pass: p.index, Copy: n, Client: client, Target: dst, Baseline: base,
		}}
	}
	f.open = len(f.copies)
	p.feeds[h.ID] = f
	for _, c := range f.copies {
		p.pending++
		st.planned.Add(1)
		p.wg.Add(1)
		go p.schedule(c)
	}
	return f
}

// finishCopy marks a copy done: it leaves the causal order and releases
// what it holds of the feed.
func (p *passRun) finishCopy(c *copyRun) {
	f := c.f
	p.mu.Lock()
	p.setPhaseLocked(c, phaseDone)
	ticket := c.ticket
	c.ticket = -1
	p.pending--
	f.open--
	if f.open == 0 {
		delete(p.feeds, f.head.ID)
	}
	f.releaseLocked()
	p.wakeLocked()
	p.mu.Unlock()
	close(c.done)
	if ticket >= 0 {
		p.order[c.idx].finish(ticket)
	}
}

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

// schedule waits until a copy may start, runs it, and releases what it
// holds. It is the copy's owner goroutine.
func (p *passRun) schedule(c *copyRun) {
	defer p.wg.Done()
	defer p.finishCopy(c)
	ctx := p.ctx
	cfg, st, h := p.cfg, &p.r.stats, c.info.Head
	notStarted := func() { st.notStarted.Add(1) }

	// ready tracks when the session became startable, for StartLateness:
	// the latest of its dispatch, its predecessors' end, its start time, its
	// rate slot and a free concurrency slot.
	ready := p.clock.Now()

	// 1. Causal order: every session that had ended before this one began
	// in the capture must have ended in the replay, and the same client
	// host's open connections must have received what they had then.
	if !cfg.NoCausalOrder {
		if h.EndedBefore > 0 {
			o := &p.order[c.idx]
			o.mu.Lock()
			wait := !o.readyLocked(h.EndedBefore)
			o.mu.Unlock()
			if wait {
				if hk := p.r.testHook; hk != nil {
					hk(hookCausalWait, h.ID)
				}
				if !o.wait(ctx, p.stop, h.EndedBefore) {
					notStarted()
					return
				}
				ready = p.clock.Now()
			}
		}
		if len(h.Peers) > 0 {
			p.mu.Lock()
			p.setPhaseLocked(c, phasePeers)
			p.mu.Unlock()
			ok := p.waitPeers(c)
			p.mu.Lock()
			p.setPhaseLocked(c, phaseWait)
			p.mu.Unlock()
			if !ok {
				notStarted()
				return
			}
			ready = later(ready, p.clock.Now())
		}
	}
	// 2. Start time.
	if cfg.paced() {
		at := p.start.Add(cfg.scale(h.StartOffset))
		c.info.Scheduled = at
		if d := at.Sub(p.clock.Now()); d > 0 {
			if hk := p.r.testHook; hk != nil {
				hk(hookTimeWait, h.ID)
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
	select {
	case <-p.stop: // the slot and the stop came together: stop wins
		notStarted()
		return
	default:
	}
	p.mu.Lock()
	shed := c.f.shed
	if !shed {
		p.setPhaseLocked(c, phaseRunning)
	}
	p.mu.Unlock()
	if shed {
		return // counted when it was shed
	}
	if ctx.Err() != nil {
		notStarted()
		return
	}
	if c.info.Scheduled.IsZero() {
		c.info.Scheduled = ready
	}
	st.replayed.Add(1)
	st.inFlight.Add(1)
	defer st.inFlight.Add(-1)
	p.drive(ctx, c, ready)
}

// waitPeers waits until the sessions of the same client host that were open
// when this one started in the capture have received, in this copy of the
// replay, as many server bytes as they had then — or have ended, or have
// made no progress for TurnTimeout (a deviating target must not stall the
// run; counted as PeerTimeouts). False when the run stopped first.
func (p *passRun) waitPeers(c *copyRun) bool {
	for _, peer := range c.info.Head.Peers {
		p.mu.Lock()
		pf := p.feeds[peer.ID]
		p.mu.Unlock()
		if pf == nil {
			continue // done, or not replayed
		}
		pc := pf.copies[c.idx]
		if pc.progress.Load() >= peer.ServerBytes || pc.settled.Load() {
			continue
		}
		if hk := p.r.testHook; hk != nil {
			hk(hookPeerWait, c.info.Head.ID)
		}
		met := pc.watch(peer.ServerBytes)
		t := p.clock.NewTimer(p.cfg.TurnTimeout)
		for waiting := true; waiting; {
			last := pc.progress.Load()
			select {
			case <-met:
				waiting = false
			case <-pc.done:
				waiting = false
			case <-t.C():
				if pc.progress.Load() != last {
					t.Reset(p.cfg.TurnTimeout) // it moves: keep waiting
					continue
				}
				p.r.stats.peerTimeouts.Add(1)
				waiting = false
			case <-p.ctx.Done():
				t.Stop()
				return false
			case <-p.stop:
				t.Stop()
				return false
			}
		}
		t.Stop()
	}
	return true
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
