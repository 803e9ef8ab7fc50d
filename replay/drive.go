package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

var (
	errSessionTimeout = errors.New("session timeout")
	errDialTimeout    = errors.New("dial timeout")
	// errTargetClosed stops sending: the target closed before the capture
	// said it would (an EarlyClose deviation was counted).
	errTargetClosed = errors.New("target closed early")
)

// readBufSize is the drain buffer per session: large enough that a bulk
// download costs few Read calls, pooled so that short sessions do not
// allocate it.
const readBufSize = 32 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// sessRun drives one admitted session. The owner goroutine (schedule →
// drive → play) writes chunks and closes. The target's bytes are read by a
// reader goroutine — or, on a PollConn, by the owner itself whenever it
// waits (drain), so that an answer reaches it without a goroutine hand-off.
// Either way they are recorded in rx.
type sessRun struct {
	p     *passRun
	cfg   *Config
	clock Clock
	s     *session.Session
	info  *SessionInfo
	obs   SessionObserver
	conn  net.Conn
	ctx   context.Context // canceled by the run or by SessionTimeout
	timer Timer           // the owner's reusable wait timer
	start time.Time       // dial start; chunk offsets count from here
	res   Result

	rx         rxState
	poll       PollConn        // set when conn is one: the owner reads, no reader goroutine
	ready      <-chan struct{} // poll.ReadReady(), or nil (never ready) without poll
	buf        []byte          // the owner's read buffer with poll
	readDone   bool            // with poll: the read side has ended (owner only)
	short      int64           // captured server bytes the target did not send (quiet turns)
	sentAt     int64           // target bytes received when the last chunk was written
	closedByUs atomic.Bool     // set before Close/Abort: later read errors are ours
	readerDone chan struct{}
}

// rxState is what the reader tells the owner. need/prev describe the turn
// the owner waits in; met and answered latch when the received count passes
// them, and wake (capacity 1) carries "something changed" to the owner,
// which always re-checks under mu, so stale wake-ups are harmless and no
// wake-up is lost.
type rxState struct {
	mu       sync.Mutex
	n        int64     // bytes received so far
	last     time.Time // time of the last read
	need     int64     // turn: wait for n >= need
	prev     int64     // turn: bytes before the turn; n > prev means answered
	met      bool
	metAt    time.Time
	answered bool
	closed   bool  // the reader has ended
	err      error // why (nil: EOF from the target)
	wake     chan struct{}
}

func (rx *rxState) notify() {
	select {
	case rx.wake <- struct{}{}:
	default:
	}
}

// drive runs one admitted session and accounts for it.
func (p *passRun) drive(ctx context.Context, pl *planned, ready time.Time) {
	growStack() // before the observer and the dial, see growStack
	cfg, st := p.cfg, &p.r.stats
	sr := &sessRun{p: p, cfg: cfg, clock: p.clock, s: pl.s, info: &pl.info, readerDone: make(chan struct{})}
	sr.rx.wake = make(chan struct{}, 1)
	if cfg.Observer != nil {
		sr.obs = cfg.Observer.Begin(&pl.info)
	}
	sr.run(ctx, ready)

	r := &sr.res
	r.Finish = p.clock.Now()
	if r.Err == nil && r.Outcome == OK && r.Deviations.hard() {
		r.Outcome = Deviation
	}
	st.outcomes[r.Outcome].Add(1)
	st.bytesSent.Add(r.BytesSent)
	st.bytesReceived.Add(r.BytesReceived)
	st.chunksSent.Add(int64(r.ChunksSent))
	d := &r.Deviations
	st.turnTimeouts.Add(int64(d.TurnTimeouts))
	st.quietTurns.Add(int64(d.QuietTurns))
	st.earlyClose.Add(int64(d.EarlyClose))
	st.closeTimeouts.Add(int64(d.CloseTimeouts))
	if sr.obs != nil {
		sr.obs.Done(r)
	}
}

func (sr *sessRun) run(ctx context.Context, ready time.Time) {
	cfg, clock, info := sr.cfg, sr.clock, sr.info
	now := clock.Now()
	sr.p.r.stats.startLate.record(now.Sub(ready))
	sr.start, sr.res.Start = now, now

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	limit := cfg.scale(sr.s.Duration) + cfg.SessionTimeout
	stimer := clock.AfterFunc(limit, func() { cancel(errSessionTimeout) })
	defer stimer.Stop()
	sr.ctx = sctx

	dctx, dcancel := context.WithCancelCause(sctx)
	dtimer := clock.AfterFunc(cfg.DialTimeout, func() { dcancel(errDialTimeout) })
	conn, err := cfg.Dialer.DialTCP(dctx, info.Client, info.Target)
	dtimer.Stop()
	dialCause := context.Cause(dctx)
	dcancel(nil)
	if err == nil && sctx.Err() != nil {
		conn.Close()
		err = sctx.Err()
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		o := classify(err)
		if errors.Is(dialCause, errDialTimeout) {
			o = Timeout
			err = &dialTimeoutError{cfg.DialTimeout}
		}
		sr.fail(o, fmt.Errorf("dial %s from %s: %w", info.Target, info.Client, err))
		return
	}
	sr.conn = conn
	sr.res.Dialed = true
	if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		sr.res.Local = la.AddrPort()
	}
	stopAbort := context.AfterFunc(sctx, sr.abort)
	defer stopAbort()

	sr.timer = clock.NewTimer(time.Hour)
	sr.timer.Stop()
	if pc, ok := conn.(PollConn); ok {
		sr.poll, sr.ready = pc, pc.ReadReady()
		bp := readBufs.Get().(*[]byte)
		defer readBufs.Put(bp)
		sr.buf = *bp
	} else {
		go sr.read()
	}
	err = sr.play()
	sr.closeConn()
	if sr.poll == nil {
		<-sr.readerDone
	}
	sr.rx.mu.Lock()
	sr.res.BytesReceived = sr.rx.n
	sr.rx.mu.Unlock()
	if err != nil {
		sr.fail(classify(err), err)
	}
}

// fail records the session's failure. The session's own context decides
// first: a canceled run or a session timeout explain whatever error they
// caused.
func (sr *sessRun) fail(o Outcome, err error) {
	if sr.ctx != nil {
		switch cause := context.Cause(sr.ctx); {
		case errors.Is(cause, errSessionTimeout):
			o = Timeout
			err = fmt.Errorf("%w: aborted %v after its scaled captured duration", errSessionTimeout, sr.cfg.SessionTimeout)
		case cause != nil:
			o = Canceled
			err = fmt.Errorf("run canceled: %w", cause)
		}
	}
	if sr.res.Err == nil {
		sr.res.Outcome, sr.res.Err = o, err
	}
}

// dialTimeoutError is DialTimeout passing; it matches ETIMEDOUT.
type dialTimeoutError struct{ d time.Duration }

func (e *dialTimeoutError) Error() string   { return fmt.Sprintf("timed out after %v", e.d) }
func (e *dialTimeoutError) Unwrap() []error { return []error{errDialTimeout, syscall.ETIMEDOUT} }

// classify maps an error to an outcome through the errno it wraps.
func classify(err error) Outcome {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return Timeout
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Other
}

// read drains the target until EOF or an error (the reader goroutine, for
// conns that are not PollConns).
func (sr *sessRun) read() {
	defer close(sr.readerDone)
	growStack()
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := sr.conn.Read(buf)
		if n > 0 {
			sr.received(buf[:n])
		}
		if err != nil {
			sr.readEnded(err)
			return
		}
	}
}

// drain reads, on the owner goroutine, what has arrived on a PollConn.
func (sr *sessRun) drain() {
	for !sr.readDone {
		n, err := sr.poll.ReadNow(sr.buf)
		if n > 0 {
			sr.received(sr.buf[:n])
		}
		if err != nil {
			sr.readDone = true
			sr.readEnded(err)
			return
		}
		if n == 0 {
			return
		}
	}
}

// drainReady drains if the conn has signalled data since the last drain:
// before a decision that depends on what has arrived.
func (sr *sessRun) drainReady() {
	select {
	case <-sr.ready:
		sr.drain()
	default:
	}
}

// received hands bytes from the target to the observer and tells the owner
// about progress.
func (sr *sessRun) received(p []byte) {
	if sr.obs != nil {
		sr.obs.Received(p)
	}
	rx := &sr.rx
	now := sr.clock.Now()
	wake := false
	rx.mu.Lock()
	rx.n += int64(len(p))
	rx.last = now
	if !rx.met && rx.n >= rx.need {
		rx.met, rx.metAt, wake = true, now, true
	}
	if !rx.answered && rx.n > rx.prev {
		rx.answered, wake = true, true
	}
	rx.mu.Unlock()
	if wake && sr.poll == nil { // with poll the owner itself is reading
		rx.notify()
	}
}

// readEnded records the end of the read side: EOF (nil) or an error.
func (sr *sessRun) readEnded(err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	rx := &sr.rx
	rx.mu.Lock()
	rx.closed, rx.err = true, err
	rx.mu.Unlock()
	if sr.poll == nil {
		rx.notify()
	}
}

// write writes b whole. On a PollConn the owner reads while the send buffer
// is full: a target that answers as it reads must not stall the upload.
func (sr *sessRun) write(b []byte) (int, error) {
	if sr.poll == nil {
		return sr.conn.Write(b)
	}
	n := 0
	for {
		m, err := sr.poll.WriteNow(b[n:])
		n += m
		if err != nil || n == len(b) {
			return n, err
		}
		if m > 0 {
			continue // the buffer took some: try the rest before waiting
		}
		select {
		case <-sr.poll.WriteReady():
		case <-sr.ready:
			sr.drain()
		case <-sr.ctx.Done():
			return n, context.Cause(sr.ctx)
		}
	}
}

// play writes the chunks, each when due, then closes as captured.
func (sr *sessRun) play() error {
	cfg, st := sr.cfg, &sr.p.r.stats
	var prev int64
	turnStart := sr.clock.Now()
	for i := range sr.s.Chunks {
		c := &sr.s.Chunks[i]
		need := max(c.ServerBytesBefore-sr.short, prev)
		ready, err := sr.waitTurn(sr.start.Add(cfg.scale(c.Offset)), turnStart, need, prev)
		if err == errTargetClosed {
			sr.targetClosedEnd()
			return nil
		}
		if err != nil {
			return err
		}
		st.chunkLate.record(sr.clock.Now().Sub(ready))
		sr.rx.mu.Lock()
		sr.sentAt = sr.rx.n
		sr.rx.mu.Unlock()
		n, err := sr.write(c.Data)
		sr.res.BytesSent += int64(n)
		if err != nil {
			return sr.writeError(i, err)
		}
		sr.res.ChunksSent++
		prev = need
		turnStart = sr.clock.Now()
	}
	return sr.finish(prev, turnStart)
}

// writeError explains a failed write. A reset where the captured server
// reset too is the target closing early, not a failure of its own.
func (sr *sessRun) writeError(i int, err error) error {
	if sr.s.End == session.EndServerRST && classify(err) == Reset {
		sr.res.Deviations.EarlyClose++
		sr.res.End = session.EndServerRST
		return nil
	}
	return fmt.Errorf("write chunk %d of %d: %w", i+1, len(sr.s.Chunks), err)
}

// waitTurn blocks until a chunk (or the close) may go: its time at has come
// (not at speed max) and the target has sent need bytes — or, having
// answered part of the turn (more than prev), has been quiet for
// QuietTimeout, or has answered nothing for TurnTimeout. It returns when the
// chunk became due, for the lateness measure.
func (sr *sessRun) waitTurn(at, turnStart time.Time, need, prev int64) (time.Time, error) {
	cfg, rx := sr.cfg, &sr.rx
	rx.mu.Lock()
	// A target whose earlier answers were shorter than captured is behind
	// prev: what answers this turn is any byte beyond what it had sent when
	// the last chunk went out (not beyond what it has sent now: the answer
	// may already be here).
	rx.need, rx.prev = need, min(prev, sr.sentAt)
	rx.met = rx.n >= need
	rx.metAt = turnStart
	rx.answered = rx.n > rx.prev
	rx.mu.Unlock()

	timeReady := turnStart
	if !cfg.maxSpeed() {
		if d := at.Sub(sr.clock.Now()); d > 0 {
			if err := sr.sleep(d); err != nil {
				return time.Time{}, err
			}
		}
		timeReady = later(turnStart, at)
	}
	for {
		sr.drainReady()
		rx.mu.Lock()
		if rx.met {
			ready := later(timeReady, rx.metAt)
			rx.mu.Unlock()
			return ready, nil
		}
		if rx.closed {
			err := rx.err
			rx.mu.Unlock()
			return time.Time{}, sr.closedWhileWaiting(err)
		}
		quiet := rx.answered
		deadline := timeReady.Add(cfg.TurnTimeout)
		if quiet {
			deadline = rx.last.Add(cfg.QuietTimeout)
		}
		rx.mu.Unlock()
		now := sr.clock.Now()
		if !now.Before(deadline) {
			if quiet {
				sr.res.Deviations.QuietTurns++
				rx.mu.Lock()
				if rx.n < need {
					sr.short += need - rx.n
				}
				rx.mu.Unlock()
			} else {
				sr.res.Deviations.TurnTimeouts++
			}
			return later(timeReady, deadline), nil
		}
		sr.timer.Reset(deadline.Sub(now))
		select {
		case <-rx.wake:
		case <-sr.ready:
			sr.drain()
		case <-sr.timer.C():
		case <-sr.ctx.Done():
			sr.timer.Stop()
			return time.Time{}, context.Cause(sr.ctx)
		}
		sr.timer.Stop()
	}
}

// sleep waits d on the clock unless the session ends first.
func (sr *sessRun) sleep(d time.Duration) error {
	sr.timer.Reset(d)
	for {
		select {
		case <-sr.timer.C():
			return nil
		case <-sr.ready:
			sr.drain() // keep reading meanwhile (PollConn)
		case <-sr.ctx.Done():
			sr.timer.Stop()
			return context.Cause(sr.ctx)
		}
	}
}

// closedWhileWaiting handles the target closing while the capture still had
// bytes from it: a deviation (stop sending) — or a failure when it reset the
// connection and the captured server did not.
func (sr *sessRun) closedWhileWaiting(err error) error {
	if sr.closedByUs.Load() {
		return net.ErrClosed // the session's context ended; fail says why
	}
	if err != nil && sr.s.End != session.EndServerRST {
		return fmt.Errorf("read: %w", err)
	}
	sr.res.Deviations.EarlyClose++
	return errTargetClosed
}

// targetClosedEnd records that the target closed first.
func (sr *sessRun) targetClosedEnd() {
	sr.rx.mu.Lock()
	err := sr.rx.err
	sr.rx.mu.Unlock()
	sr.res.End = session.EndServerFIN
	if err != nil {
		sr.res.End = session.EndServerRST
	}
}

// finish waits for the rest of the target's answer and closes the way the
// captured session closed, at its scaled end time.
func (sr *sessRun) finish(prev int64, turnStart time.Time) error {
	cfg, s := sr.cfg, sr.s
	// A client that closed first waits only for what it had received when
	// it closed; what the server sent after the client's FIN is drained
	// after ours.
	need := max(s.ServerBytes-s.ServerBytesAfterClose-sr.short, prev)
	_, err := sr.waitTurn(sr.start.Add(cfg.scale(s.Duration)), turnStart, need, prev)
	if err == errTargetClosed {
		sr.targetClosedEnd()
		return nil
	}
	if err != nil {
		return err
	}
	sr.drainReady() // a FIN that came with the answer
	sr.rx.mu.Lock()
	closed, rerr := sr.rx.closed, sr.rx.err
	sr.rx.mu.Unlock()
	if closed {
		// The target closed after its full answer, before we did.
		if rerr != nil && s.End != session.EndServerRST {
			return fmt.Errorf("read: %w", rerr)
		}
		sr.targetClosedEnd()
		return nil
	}

	switch s.End {
	case session.EndServerFIN, session.EndServerRST:
		if sr.waitClosed() {
			sr.rx.mu.Lock()
			rerr = sr.rx.err
			sr.rx.mu.Unlock()
			if rerr != nil && s.End != session.EndServerRST {
				return fmt.Errorf("read: %w", rerr)
			}
			sr.targetClosedEnd()
			return nil
		}
		if err := context.Cause(sr.ctx); err != nil {
			return err
		}
		// The target kept the connection open (a longer idle timeout than
		// the captured server's, say): close it ourselves.
		sr.res.Deviations.CloseTimeouts++
		sr.res.End = session.EndClientFIN
	case session.EndClientRST:
		sr.res.End = session.EndClientRST
		sr.abort()
	case session.EndClientFIN:
		sr.res.End = session.EndClientFIN
		cw, ok := sr.conn.(interface{ CloseWrite() error })
		if !ok {
			break // closeConn sends the FIN with Close
		}
		if err := cw.CloseWrite(); err != nil {
			return fmt.Errorf("close write: %w", err)
		}
		// Drain until the target closes its side too.
		if !sr.waitClosed() {
			if err := context.Cause(sr.ctx); err != nil {
				return err
			}
			sr.res.Deviations.CloseTimeouts++
			break
		}
		sr.rx.mu.Lock()
		rerr = sr.rx.err
		sr.rx.mu.Unlock()
		if rerr != nil {
			return fmt.Errorf("read after our FIN: %w", rerr)
		}
	default: // EndCaptureEnd: the capture does not say; close politely.
		sr.res.End = session.EndClientFIN
	}
	return nil
}

// waitClosed waits up to CloseTimeout for the reader to end.
func (sr *sessRun) waitClosed() bool {
	sr.timer.Reset(sr.cfg.CloseTimeout)
	defer sr.timer.Stop()
	done := sr.readerDone
	if sr.poll != nil {
		done = nil // the owner reads: it sees the end itself
	}
	for {
		if sr.poll != nil {
			sr.drain()
			if sr.readDone {
				return true
			}
		}
		select {
		case <-done:
			return true
		case <-sr.ready:
		case <-sr.timer.C():
			return false
		case <-sr.ctx.Done():
			return false
		}
	}
}

// closeConn closes the connection (FIN, or RST with unread data). A session
// whose context ended is aborted instead: the abort from context.AfterFunc
// runs in its own goroutine and must not lose the race to a polite FIN.
func (sr *sessRun) closeConn() {
	if sr.ctx.Err() != nil {
		sr.abort()
		return
	}
	sr.closedByUs.Store(true)
	sr.conn.Close()
}

// abort resets the connection where the conn can, else closes it. It is
// called by the owner (captured client RST) or, concurrently, when the
// session's context ends; conns tolerate the double close.
func (sr *sessRun) abort() {
	sr.closedByUs.Store(true)
	if a, ok := sr.conn.(interface{ Abort() error }); ok {
		a.Abort()
		return
	}
	if tc, ok := sr.conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	sr.conn.Close()
}
