package agent

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// Defaults and limits of Options.
const (
	// DefaultPort is the port agents send to when --pcap-listen names none
	// (the field's habit for PCAP-over-IP is 57012).
	DefaultPort = 57012
	// DefaultWindow is how long a frame may wait in the merge for an
	// earlier one from another agent.
	DefaultWindow = 250 * time.Millisecond
	// DefaultMaxAgents is how many agents may be connected at once.
	DefaultMaxAgents = 32
	// DefaultAgentBuffer is how many bytes of one agent's frames may wait
	// in the merge.
	DefaultAgentBuffer = 8 << 20
	// DefaultSnapLen is the most kept of one frame.
	DefaultSnapLen = capture.DefaultSnapLen
	// DefaultStallAfter: an agent that has sent nothing for this long is
	// reported as stalled (once, until it sends again).
	DefaultStallAfter = 30 * time.Second
	// maxAgentStats bounds the per-agent rows kept for Stats (the totals
	// count every agent).
	maxAgentStats = 256
)

// Options configure a Merger. The zero value takes the defaults above and
// accepts agents from loopback peers only.
type Options struct {
	Window      time.Duration
	MaxAgents   int
	AgentBuffer int
	SnapLen     int
	StallAfter  time.Duration
	// Allow lists the peers Listen accepts; empty: loopback peers only.
	Allow []netip.Prefix
	// Logf reports agents that connect, stall, resume, end or are refused.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxAgents <= 0 {
		o.MaxAgents = DefaultMaxAgents
	}
	if o.AgentBuffer <= 0 {
		o.AgentBuffer = DefaultAgentBuffer
	}
	if o.SnapLen <= 0 {
		o.SnapLen = DefaultSnapLen
	}
	if o.StallAfter <= 0 {
		o.StallAfter = DefaultStallAfter
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// AgentStats describe one agent.
type AgentStats struct {
	Name      string // the peer's address, or the address dialed
	Connected time.Time
	Ended     time.Time // zero while connected
	// End says how it ended: "" while connected, "end of stream", or the
	// error that ended it.
	End    string
	Frames int64 // frames received
	Bytes  int64 // captured bytes of those frames (after the snap length)
	Late   int64 // frames that came after a later frame had gone out
	Cut    int64 // frames cut to the snap length
	Stalls int   // times it sent nothing for Options.StallAfter
}

// Stats describe the agents of a Merger.
type Stats struct {
	Agents    []AgentStats // the first 256 agents, in connection order
	Accepted  int          // agents accepted in all
	Connected int          // connected now
	Failed    int          // ended with an error (not a clean end of stream)
	Refused   int          // connections refused: peer not allowed, or too many agents
	Stalls    int          // stalls of all agents
	Frames    int64        // frames delivered by ReadFrame
	Late      int64        // of those, late (their timestamp was raised)
	Cut       int64        // frames cut to the snap length
	MaxHeld   int64        // most bytes waiting in the merge at once
}

// Merger merges the frames of several agents into one capture.Source (see
// the package comment).
type Merger struct {
	opt  Options
	name string
	wake chan struct{}  // a frame arrived, an agent ended, or Close
	wg   sync.WaitGroup // the agents' readers

	mu       sync.Mutex
	q        frameQueue
	active   []*agentState
	rows     []*agentState // for Stats, the first maxAgentStats
	deadline time.Time
	closed   bool // Close was called: drain, then io.EOF
	noMore   bool // no agent will be added (Dial): io.EOF once all ended and drained
	pressure int  // agents waiting for room in their buffer
	held     int64
	last     time.Time // timestamp of the last frame delivered
	seq      uint64
	stats    Stats
	closers  []io.Closer // the listener
	stallChk time.Time   // next stall check
}

type agentState struct {
	name      string
	conn      io.Closer
	queued    int // frames waiting in the merge
	heldBytes int // their bytes
	space     chan struct{}
	lastRecv  time.Time
	stalled   bool
	st        AgentStats
}

type item struct {
	f       capture.Frame // Data owned by the item
	a       *agentState
	arrived time.Time
	seq     uint64
}

// frameQueue is a min-heap by capture time, then arrival order.
type frameQueue []*item

func (q frameQueue) Len() int { return len(q) }
func (q frameQueue) Less(i, j int) bool {
	if !q[i].f.Time.Equal(q[j].f.Time) {
		return q[i].f.Time.Before(q[j].f.Time)
	}
	return q[i].seq < q[j].seq
}
func (q frameQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *frameQueue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *frameQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return it
}

// NewMerger returns a Merger without agents; name names it in errors. Add
// agents with Add (Listen and Dial do).
func NewMerger(name string, opt Options) *Merger {
	return &Merger{opt: opt.withDefaults(), name: name, wake: make(chan struct{}, 1)}
}

func (m *Merger) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Add starts reading an agent's capture stream r; name names it in logs and
// Stats. If r is an io.Closer, Close closes it (which ends its reader). It
// returns false, without reading, when the Merger is closed.
func (m *Merger) Add(name string, r io.Reader) bool {
	c, _ := r.(io.Closer)
	a := &agentState{name: name, conn: c, space: make(chan struct{}, 1)}
	now := time.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	a.lastRecv = now
	a.st = AgentStats{Name: name, Connected: now}
	m.active = append(m.active, a)
	if len(m.rows) < maxAgentStats {
		m.rows = append(m.rows, a)
	}
	m.stats.Accepted++
	n, last := len(m.active), m.last
	m.mu.Unlock()
	if last.IsZero() {
		m.opt.Logf("agent %s connected (%d connected)", name, n)
	} else {
		// It joins a merge under way: what it captured before the last
		// frame merged cannot be put in order any more.
		m.opt.Logf("agent %s connected (%d connected), after the merge began: its frames older than %s are delivered late", name, n, last.Format(time.RFC3339Nano))
	}
	m.wg.Add(1)
	go m.read(a, r)
	return true
}

// read is an agent's reader goroutine: it feeds the agent's frames to the
// merge until its stream ends or fails.
func (m *Merger) read(a *agentState, r io.Reader) {
	defer m.wg.Done()
	src, err := capture.NewSource(r, a.name)
	if err == nil {
		for {
			var f capture.Frame
			f, err = src.ReadFrame()
			if err != nil {
				break
			}
			if !m.push(a, f) {
				break
			}
		}
		src.Close()
	}
	m.finish(a, err)
}

// push adds a copy of f to the merge, waiting while a's buffer is full. It
// returns false once the Merger is closed.
func (m *Merger) push(a *agentState, f capture.Frame) bool {
	data := f.Data
	cut := len(data) > m.opt.SnapLen
	if cut {
		data = data[:m.opt.SnapLen]
	}
	it := &item{f: f, a: a}
	it.f.Data = append([]byte(nil), data...)
	m.mu.Lock()
	a.lastRecv = time.Now()
	if a.stalled {
		// Said before the frame can go out, so the log reads in order.
		a.stalled = false
		m.mu.Unlock()
		m.opt.Logf("agent %s: sending again", a.name)
		m.mu.Lock()
	}
	for a.heldBytes > 0 && a.heldBytes+len(data) > m.opt.AgentBuffer && !m.closed {
		// Full: the merge must move on (ready sees the pressure) before
		// this agent is read further, which backs its connection up.
		m.pressure++
		m.mu.Unlock()
		m.signal()
		<-a.space
		m.mu.Lock()
		m.pressure--
	}
	if m.closed {
		m.mu.Unlock()
		return false
	}
	now := time.Now()
	it.arrived, it.seq = now, m.seq
	m.seq++
	heap.Push(&m.q, it)
	a.queued++
	a.heldBytes += len(data)
	m.held += int64(len(data))
	m.stats.MaxHeld = max(m.stats.MaxHeld, m.held)
	a.st.Frames++
	a.st.Bytes += int64(len(data))
	if cut {
		a.st.Cut++
		m.stats.Cut++
	}
	m.mu.Unlock()
	m.signal()
	return true
}

// finish records the end of an agent's stream.
func (m *Merger) finish(a *agentState, err error) {
	if a.conn != nil {
		a.conn.Close()
	}
	m.mu.Lock()
	for i, b := range m.active {
		if b == a {
			m.active = append(m.active[:i], m.active[i+1:]...)
			break
		}
	}
	a.st.Ended = time.Now()
	closing := m.closed
	clean := err == nil || errors.Is(err, io.EOF) || closing
	switch {
	case closing:
		a.st.End = "closed at the end of the run"
	case clean:
		a.st.End = "end of stream"
	case errors.Is(err, capture.ErrTruncated):
		a.st.End = "stream cut in a record (disconnected)"
	default:
		a.st.End = err.Error()
		m.stats.Failed++
	}
	frames, left, noMore := a.st.Frames, len(m.active), m.noMore
	m.mu.Unlock()
	m.signal()
	if closing {
		return
	}
	what := fmt.Sprintf("disconnected after %d frames", frames)
	if !clean {
		what = a.st.End + "; " + what
	}
	switch {
	case noMore:
		m.opt.Logf("agent %s: %s", a.name, what)
	case left > 0:
		m.opt.Logf("agent %s: %s (%d connected); the others go on", a.name, what, left)
	default:
		m.opt.Logf("agent %s: %s (0 connected); waiting for agents", a.name, what)
	}
}

// ReadFrame returns the next frame in merged order (see the package
// comment). It waits for one; after SetReadDeadline's time has passed it
// returns an error wrapping os.ErrDeadlineExceeded, and after Close (or,
// for Dial, once the agent has ended) it returns the frames still waiting,
// then io.EOF. Frame.Data is valid until the next call.
func (m *Merger) ReadFrame() (capture.Frame, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		m.mu.Lock()
		now := time.Now()
		stalled := m.checkStalls(now)
		if m.ready(now) {
			f := m.pop()
			m.mu.Unlock()
			m.logStalls(stalled)
			return f, nil
		}
		if m.q.Len() == 0 && (m.closed || m.noMore && len(m.active) == 0) {
			m.mu.Unlock()
			m.logStalls(stalled)
			return capture.Frame{}, io.EOF
		}
		deadline := m.deadline
		wait := time.Duration(-1)
		if m.q.Len() > 0 {
			wait = m.q[0].arrived.Add(m.opt.Window).Sub(now)
		}
		if len(m.active) > 0 {
			if d := m.stallChk.Sub(now); wait < 0 || d < wait {
				wait = d
			}
		}
		m.mu.Unlock()
		m.logStalls(stalled)
		if !deadline.IsZero() {
			d := deadline.Sub(now)
			if d <= 0 {
				return capture.Frame{}, os.ErrDeadlineExceeded
			}
			if wait < 0 || d < wait {
				wait = d
			}
		}
		var tc <-chan time.Time
		if wait >= 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		select {
		case <-m.wake:
		case <-tc:
		}
	}
}

// ready reports whether the earliest waiting frame may go out now.
func (m *Merger) ready(now time.Time) bool {
	if m.q.Len() == 0 {
		return false
	}
	top := m.q[0]
	if m.closed || m.pressure > 0 || now.Sub(top.arrived) >= m.opt.Window {
		return true
	}
	for _, a := range m.active {
		if a != top.a && a.queued == 0 {
			return false // a may still send an earlier frame
		}
	}
	return true
}

// pop takes the earliest frame out of the merge.
func (m *Merger) pop() capture.Frame {
	it := heap.Pop(&m.q).(*item)
	a := it.a
	a.queued--
	a.heldBytes -= len(it.f.Data)
	m.held -= int64(len(it.f.Data))
	select {
	case a.space <- struct{}{}:
	default:
	}
	if it.f.Time.Before(m.last) {
		it.f.Time = m.last
		a.st.Late++
		m.stats.Late++
	} else {
		m.last = it.f.Time
	}
	m.stats.Frames++
	it.f.N = int(m.stats.Frames)
	return it.f
}

// checkStalls marks the agents that have sent nothing for StallAfter and
// returns their names, to be logged outside the lock.
func (m *Merger) checkStalls(now time.Time) []string {
	if now.Before(m.stallChk) {
		return nil
	}
	m.stallChk = now.Add(m.opt.StallAfter / 4)
	var names []string
	for _, a := range m.active {
		if !a.stalled && now.Sub(a.lastRecv) >= m.opt.StallAfter {
			a.stalled = true
			a.st.Stalls++
			m.stats.Stalls++
			names = append(names, a.name)
		}
	}
	return names
}

func (m *Merger) logStalls(names []string) {
	for _, n := range names {
		m.opt.Logf("agent %s: nothing received for %v (stalled, or a quiet wire); the others go on", n, m.opt.StallAfter)
	}
}

// SetReadDeadline makes a ReadFrame still waiting at t return an error
// wrapping os.ErrDeadlineExceeded; the zero time: no deadline.
func (m *Merger) SetReadDeadline(t time.Time) error {
	m.mu.Lock()
	m.deadline = t
	m.mu.Unlock()
	m.signal()
	return nil
}

// Close stops accepting agents and closes their connections; ReadFrame
// then delivers the frames still waiting and returns io.EOF. It may be
// called from any goroutine, also while ReadFrame waits. It is idempotent.
func (m *Merger) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	closers := m.closers
	var conns []io.Closer
	for _, a := range m.active {
		if a.conn != nil {
			conns = append(conns, a.conn)
		}
		select {
		case a.space <- struct{}{}:
		default:
		}
	}
	m.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	m.signal()
	// The readers end once their connections are closed; waiting for them
	// (briefly: a reader of something that Close cannot close may not end)
	// makes Stats say how each agent ended.
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
	}
	return nil
}

// closeWait bounds how long Close waits for the agents' readers.
const closeWait = time.Second

// Stats returns the counters so far (a copy).
func (m *Merger) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Connected = len(m.active)
	s.Agents = make([]AgentStats, len(m.rows))
	for i, a := range m.rows {
		s.Agents[i] = a.st
	}
	return s
}

// String names the merger, for messages.
func (m *Merger) String() string { return m.name }

// refused counts a refused connection.
func (m *Merger) refused() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.Refused++
	return m.stats.Refused
}

// count is the number of connected agents.
func (m *Merger) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.active)
}

var _ capture.Source = (*Merger)(nil)
