package replay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Streaming: the replay is the session builder's Sink. A session reaches it
// when it starts in the capture (Begin); its chunks, captured server bytes
// and end follow as the capture is read. Each session gets one feed, an
// append-only queue shared by its copies (--multiply), each with its own
// cursor; the copies' owner goroutines wait on it in the same select as
// their conn.
//
// Backpressure. The builder (and the capture reading behind it) may block
// only where that cannot deadlock: on a session whose copies are running,
// or while some slot among the sessions in flight is held by a session
// whose capture has ended (it will finish without the builder). Blocking
// on a session that waits for a slot held by sessions that themselves wait
// for the builder would never end. Where it may not block, the builder goes
// on: client bytes of sessions that are not running are held up to
// Config.Budget, past which the session is shed (never started, counted).
// A live capture never blocks: past a session's Window, or the Budget, its
// bytes are dropped and counted, and the session is marked.

// phase is where one copy of a session is.
type phase uint8

const (
	phaseWait    phase = iota // waiting: predecessors, start time, rate or a slot
	phasePeers                // waiting for peers' progress (Head.Peers), which may need more input
	phaseRunning              // holds a slot among the sessions in flight
	phaseDone
)

// feed is one session's events as the builder delivered them. Its fields
// are guarded by passRun.mu; changed, made when an owner is about to wait
// for the feed, is closed at the next event, so that owners can select on
// it (a session whose events all came before its owner looked costs no
// channel).
type feed struct {
	p       *passRun
	head    *session.Head
	changed chan struct{}

	chunks []session.Chunk // not yet taken by every copy; chunks[0] is number base
	base   int
	total  int   // chunks delivered
	queued int64 // bytes in chunks

	server []capSeg // captured server bytes not yet handed to every copy
	sbase  int

	tail     *session.Tail
	ended    bool // the input ended (tail, or the builder stopped without one)
	shed     bool // past the budget: copies that were not running never start
	overflow bool // live: bytes were dropped; the session ends where they begin
	dropped  int64
	holes    bool // the capture lost bytes of the session (so far)

	copies []*copyRun
	open   int // copies not done

	// capEvents counts Server and End calls, so that an owner can tell
	// without the lock that nothing new was captured (pumpCaptured).
	capEvents atomic.Uint64
}

type capSeg struct {
	off  int64
	data []byte
	at   time.Duration // capture time from the session's start
}

// copyRun is one copy of a session.
type copyRun struct {
	f      *feed
	idx    int
	phase  phase // guarded by passRun.mu
	next   int   // next chunk number (passRun.mu)
	snext  int   // next server segment number (passRun.mu)
	ticket int   // in passRun.order[idx]; -1 none (passRun.mu)
	info   SessionInfo

	// progress is what the target has sent on this copy, plus the captured
	// bytes of turns it gave up on: what later sessions of the same client
	// host wait for (Head.Peers). Written by the owner, read by waiters.
	capSeen  uint64 // feed.capEvents when the owner last looked (owner only)
	progress atomic.Int64
	// settled: the copy waits for the capture and the target has been
	// quiet for QuietTimeout: it has received all it will for what it was
	// sent, so peers stop waiting for its progress (its captured count
	// may hold bytes the target will never send: lost packets, a FIN the
	// capture counted as a byte). Cleared when its next chunk arrives.
	settled  atomic.Bool
	done     chan struct{} // closed when the copy is done
	wmu      sync.Mutex
	watchers []progressWatch
	watched  atomic.Bool
}

type progressWatch struct {
	need int64
	ch   chan struct{}
}

// advance adds n to progress and releases the waiters it satisfies.
func (c *copyRun) advance(n int64) {
	v := c.progress.Add(n)
	if !c.watched.Load() {
		return
	}
	c.wmu.Lock()
	kept := c.watchers[:0]
	for _, w := range c.watchers {
		if v >= w.need {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(c.watchers[len(kept):])
	c.watchers = kept
	c.watched.Store(len(kept) > 0)
	c.wmu.Unlock()
}

// settle marks the copy settled (see copyRun.settled) and releases every
// waiter.
func (c *copyRun) settle() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.settled.Store(true)
	for _, w := range c.watchers {
		close(w.ch)
	}
	clear(c.watchers)
	c.watchers = c.watchers[:0]
	c.watched.Store(false)
}

// watch returns a channel closed once progress reaches need, or the copy
// settles.
func (c *copyRun) watch(need int64) <-chan struct{} {
	ch := make(chan struct{})
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.progress.Load() >= need || c.settled.Load() {
		close(ch)
		return ch
	}
	c.watchers = append(c.watchers, progressWatch{need, ch})
	c.watched.Store(true)
	return ch
}

// notifyLocked wakes the copies' owners.
func (f *feed) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// Chunk takes a sealed chunk from the builder.
func (f *feed) Chunk(c session.Chunk) {
	p := f.p
	n := int64(len(c.Data))
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.shed || f.overflow || f.open == 0 {
		f.dropLocked(n)
		return
	}
	if p.cfg.Live {
		if f.queued+n > p.cfg.Window || p.held+n > p.cfg.Budget {
			f.overflow = true
			p.r.stats.droppedSessions.Add(1)
			f.dropLocked(n)
			f.notifyLocked()
			return
		}
	} else {
		for f.queued >= p.cfg.Window && !f.shed && f.open > 0 && f.blockableLocked() && !p.stoppedLocked() {
			if hk := p.r.testHook; hk != nil {
				hk(hookInputWait, f.head.ID)
			}
			p.waitLocked()
		}
		if f.open == 0 || f.shed {
			f.dropLocked(n)
			return
		}
		if !f.blockableLocked() && p.held+n > p.cfg.Budget {
			f.shedLocked()
			f.dropLocked(n)
			return
		}
	}
	f.chunks = append(f.chunks, c)
	f.total++
	f.queued += n
	p.held += n
	f.notifyLocked()
}

// dropLocked counts client bytes that are not kept.
func (f *feed) dropLocked(n int64) {
	f.dropped += n
	if f.overflow {
		f.p.r.stats.droppedBytes.Add(n)
	}
}

// blockableLocked reports whether the builder may wait for this session's
// copies to take its chunks (see the package comment on backpressure).
func (f *feed) blockableLocked() bool {
	p := f.p
	for _, c := range f.copies {
		if c.phase == phasePeers {
			return false
		}
	}
	if p.incompleteRunning < p.cfg.MaxSessions {
		return true
	}
	for _, c := range f.copies {
		if c.phase == phaseWait {
			return false
		}
	}
	return true
}

// A copy waiting for its peers is never waited for, whatever the slots: a
// peer may need a chunk that the builder has not handed over yet (offline,
// a chunk is sealed by the client's next segment), so waiting for it could
// stall the run for a turn timeout. See blockableLocked and Begin.

// shedLocked gives the session up: copies that are not running never
// start. Running ones end after the chunks they have.
func (f *feed) shedLocked() {
	if f.shed {
		return
	}
	f.shed = true
	f.p.r.stats.shed.Add(1)
	f.releaseLocked()
	f.notifyLocked()
}

var _ session.TimedFeed = (*feed)(nil)

// Server takes captured server bytes, for the observer (the Builder calls
// ServerAt; Server is for Feeds driven without times).
func (f *feed) Server(off int64, data []byte) { f.ServerAt(off, data, -1) }

// ServerAt takes captured server bytes and their capture time, for the
// observer.
func (f *feed) ServerAt(off int64, data []byte, at time.Duration) {
	p := f.p
	if p.cfg.Observer == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.open == 0 {
		return
	}
	f.server = append(f.server, capSeg{off, append([]byte(nil), data...), at})
	f.capEvents.Add(1)
	f.notifyLocked()
}

// Hole: the replay sends the bytes around a hole as captured (the chunks'
// stream offsets show it); the observer sees it as a jump in Captured's
// offsets. It is noted for the outcome: a session that departs from a
// capture with holes is Incomplete, also before its Tail says so.
func (f *feed) Hole(session.Hole) {
	f.p.mu.Lock()
	f.holes = true
	f.p.mu.Unlock()
}

// End takes the session's Tail: the copies may now decide what needs it,
// and the session joins the causal order by its end.
func (f *feed) End(t *session.Tail) {
	p := f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	f.tail, f.ended = t, true
	f.capEvents.Add(1)
	for _, c := range f.copies {
		switch c.phase {
		case phaseWait:
			p.completePending++
		case phasePeers:
		case phaseRunning:
			p.incompleteRunning--
			p.completePending++
		default:
			continue // done already: counts as done in the causal order
		}
		if !p.cfg.NoCausalOrder {
			if tk, err := p.order[c.idx].add(t.EndSeq); err == nil {
				c.ticket = tk
			} else {
				p.setErrLocked(err)
			}
		}
	}
	f.notifyLocked()
	p.wakeLocked()
}

// endInputLocked marks a session whose capture stopped without an end (the
// builder was stopped): its copies finish with what they have.
func (f *feed) endInputLocked() {
	if f.ended {
		return
	}
	f.ended = true
	f.notifyLocked()
}

// feedState is what a copy's owner learns of its feed when it has no chunk
// to take: the tail (once the capture has ended the session), whether more
// may come, whether the session was cut (shed, or live bytes dropped), and
// a channel closed at the next event.
type feedState struct {
	tail *session.Tail
	more bool
	cut  bool
	wait <-chan struct{}
}

// take returns the copy's next chunk, or ok false and the feed's state.
func (c *copyRun) take() (ch session.Chunk, ok bool, st feedState) {
	f, p := c.f, c.f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	st.tail = f.tail
	if c.next < f.total && c.next >= f.base {
		ch = f.chunks[c.next-f.base]
		c.next++
		f.releaseLocked()
		return ch, true, st
	}
	st.cut = f.shed || f.overflow
	st.more = !f.ended && !st.cut
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	st.wait = f.changed
	return ch, false, st
}

// captured returns the server segments the copy has not seen yet, and the
// tail once there is one.
func (c *copyRun) captured() ([]capSeg, *session.Tail) {
	f, p := c.f, c.f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	i := c.snext - f.sbase
	if i >= len(f.server) {
		return nil, f.tail
	}
	segs := append([]capSeg(nil), f.server[i:]...) // releaseLocked clears the originals
	c.snext = f.sbase + len(f.server)
	f.releaseLocked()
	return segs, f.tail
}

// releaseLocked drops what every copy has taken.
func (f *feed) releaseLocked() {
	lo, slo := f.total, f.sbase+len(f.server)
	if !f.shed {
		for _, c := range f.copies {
			if c.phase != phaseDone {
				lo, slo = min(lo, c.next), min(slo, c.snext)
			}
		}
	}
	if k := lo - f.base; k > 0 {
		for i := range k {
			n := int64(len(f.chunks[i].Data))
			f.queued -= n
			f.p.held -= n
			f.chunks[i] = session.Chunk{}
		}
		f.chunks = f.chunks[k:]
		f.base = lo
		f.p.wakeLocked()
	}
	if k := slo - f.sbase; k > 0 {
		clear(f.server[:k])
		f.server = f.server[k:]
		f.sbase = slo
	}
}

// setPhaseLocked moves a copy on and keeps the counts the backpressure
// decisions read.
func (p *passRun) setPhaseLocked(c *copyRun, ph phase) {
	if c.phase == ph {
		return
	}
	complete := c.f.tail != nil
	switch c.phase {
	case phaseWait:
		if complete {
			p.completePending--
		}
	case phaseRunning:
		if complete {
			p.completePending--
		} else {
			p.incompleteRunning--
		}
	}
	switch ph {
	case phaseWait:
		if complete {
			p.completePending++
		}
	case phaseRunning:
		if complete {
			p.completePending++
		} else {
			p.incompleteRunning++
		}
	}
	c.phase = ph
	p.wakeLocked()
}
