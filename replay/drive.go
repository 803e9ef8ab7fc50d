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

// sessRun drives one admitted copy of a session. Everything happens on its
// owner goroutine (schedule → drive → play): it takes the chunks from the
// session's feed as the capture delivers them, writes each when due, reads
// what the target sends whenever it waits (the conn is a PollConn, plain
// conns through pollAdapter), and closes as captured.
type sessRun struct {
	p      *passRun
	cfg    *Config
	clock  Clock
	c      *copyRun
	head   *session.Head
	tail   *session.Tail // once the owner has seen it
	cut    bool          // the feed was shed or overflowed: the capture's end does not apply
	info   *SessionInfo
	obs    SessionObserver
	tobs   TimedObserver // obs, when it wants times (else nil)
	conn   PollConn
	ready  <-chan struct{} // conn.ReadReady()
	buf    []byte
	ctx    context.Context // canceled by the run or by SessionTimeout
	cancel context.CancelCauseFunc
	stimer Timer // the session timeout, armed once the tail is known
	timer  Timer // the owner's reusable wait timer
	start  time.Time
	res    Result

	rx         rxState
	readDone   bool        // the read side has ended
	short      int64       // captured server bytes the target did not send (quiet turns)
	sentAt     int64       // target bytes received when the last chunk was written
	sentEnd    int64       // client stream offset after the last chunk written
	lossy      bool        // a turn followed client bytes the capture lost (LostTurns)
	closedByUs atomic.Bool // set before Close/Abort: later read errors are ours
}

// rxState is what the owner knows of the target's side. need/prev describe
// the turn it waits in; met and answered latch when the received count
// passes them.
type rxState struct {
	n        int64     // bytes received so far
	last     time.Time // time of the last read
	need     int64     // turn: wait for n >= need
	prev     int64     // turn: bytes before the turn; n > prev means answered
	met      bool
	metAt    time.Time
	answered bool
	closed   bool  // the read side has ended
	err      error // why (nil: EOF from the target)
}

// drive runs one admitted copy and accounts for it.
func (p *passRun) drive(ctx context.Context, c *copyRun, ready time.Time) {
	growStack() // before the observer and the dial, see growStack
	cfg, st := p.cfg, &p.r.stats
	sr := &sessRun{p: p, cfg: cfg, clock: p.clock, c: c, head: c.info.Head, info: &c.info}
	if cfg.Observer != nil {
		sr.obs = cfg.Observer.Begin(&c.info)
		sr.tobs, _ = sr.obs.(TimedObserver)
	}
	sr.run(ctx, ready)

	r := &sr.res
	r.Finish = p.clock.Now()
	p.mu.Lock()
	f := c.f
	if r.Tail == nil {
		r.Tail = f.tail
	}
	r.Chunks = f.total
	if f.overflow {
		r.Dropped = f.dropped
	}
	holes := f.holes
	p.mu.Unlock()
	sr.settle(holes)
	// Bytes, chunks and deviations were counted as they happened (a
	// session may run for days); the outcome is known now.
	st.outcomes[r.Outcome].Add(1)
	if sr.obs != nil {
		sr.pumpCaptured()
		sr.obs.Done(r)
	}
}

// settle decides the outcome of a session that ran. Where the capture lost
// bytes of the session (holes, or turns that followed lost client bytes),
// what the target did differently may well be what it was never sent: a
// hard deviation, or a reset (bytes missing, or a later connection on the
// same 4-tuple whose handshake was lost, taken for more of this one), is
// then the capture's failure, Incomplete, not the target's. The error stays
// in the result.
func (sr *sessRun) settle(holes bool) {
	r := &sr.res
	captureLost := sr.lossy || holes
	switch {
	case r.Err == nil && r.Outcome == OK && r.Deviations.hard():
		r.Outcome = Deviation
		if captureLost {
			r.Outcome = Incomplete
		}
	case r.Err == nil && r.Outcome == OK && sr.lossy:
		r.Outcome = Incomplete
	case r.Outcome == Reset && captureLost:
		r.Outcome = Incomplete
	}
}

func (sr *sessRun) run(ctx context.Context, ready time.Time) {
	cfg, clock, info := sr.cfg, sr.clock, sr.info
	now := clock.Now()
	sr.p.r.stats.startLate.record(now.Sub(ready))
	if m := cfg.Metrics; m != nil {
		m.SessionStarted(now.Sub(ready))
	}
	sr.start, sr.res.Start = now, now

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sr.ctx, sr.cancel = sctx, cancel
	defer func() {
		if sr.stimer != nil {
			sr.stimer.Stop()
		}
	}()
	sr.pumpCaptured() // also learns the tail, if the capture has ended it

	dctx, dcancel := context.WithCancelCause(sctx)
	dtimer := clock.AfterFunc(cfg.DialTimeout, func() { dcancel(errDialTimeout) })
	conn, err := cfg.Dialer.DialTCP(dctx, info.Client, info.Target)
	if err == nil && cfg.WrapConn != nil {
		var wc net.Conn
		if wc, err = cfg.WrapConn(dctx, info, conn); err == nil {
			conn = wc
		}
	}
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
	sr.res.Dialed = true
	if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		sr.res.Local = la.AddrPort()
	}
	sr.conn = asPollConn(conn)
	sr.ready = sr.conn.ReadReady()
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	sr.buf = *bp
	stopAbort := context.AfterFunc(sctx, sr.abort)
	defer stopAbort()

	sr.timer = clock.NewTimer(time.Hour)
	sr.timer.Stop()
	err = sr.play()
	sr.closeConn()
	sr.res.BytesReceived = sr.rx.n
	if err != nil {
		sr.fail(classify(err), err)
	}
}

// setTail records the captured session's end once the owner sees it and
// arms the session timeout: the session may run SessionTimeout past its
// scaled captured duration. Before the end is known the session waits for
// the capture, which is no reason to abort it; every wait for the target
// has its own turn timeout.
func (sr *sessRun) setTail(t *session.Tail) {
	if sr.tail != nil || t == nil {
		return
	}
	sr.tail = t
	sr.res.Tail = t
	d := sr.start.Add(sr.cfg.scale(t.Duration) + sr.cfg.SessionTimeout).Sub(sr.clock.Now())
	cancel := sr.cancel
	sr.stimer = sr.clock.AfterFunc(max(d, 0), func() { cancel(errSessionTimeout) })
}

// pumpCaptured hands the captured server bytes that have arrived to the
// observer, and notes the tail.
func (sr *sessRun) pumpCaptured() {
	n := sr.c.f.capEvents.Load()
	if n == sr.c.capSeen {
		return
	}
	sr.c.capSeen = n
	segs, tail := sr.c.captured()
	sr.setTail(tail)
	if sr.obs == nil {
		return
	}
	for _, s := range segs {
		if sr.tobs != nil {
			sr.tobs.CapturedAt(s.off, s.data, s.at)
		} else {
			sr.obs.Captured(s.off, s.data)
		}
	}
}

// nextChunk waits for the session's next chunk from the capture, reading
// the target meanwhile. ok is false once the capture has no more for it;
// waited reports whether it had to wait for the capture.
//
// While it waits, a target that answered the last chunk and has then been
// quiet for QuietTimeout settles the copy (see copyRun.settled): sessions
// of the same client host waiting for its progress go on.
func (sr *sessRun) nextChunk() (ch session.Chunk, ok, waited bool, err error) {
	var since time.Time // when the wait began
	for {
		sr.pumpCaptured()
		var st feedState
		ch, ok, st = sr.c.take()
		sr.setTail(st.tail)
		if ok {
			if sr.c.settled.Load() {
				sr.c.settled.Store(false) // a new turn: peers wait for it again
			}
			return ch, true, waited, nil
		}
		if !st.more {
			sr.cut = st.cut
			return ch, false, waited, nil
		}
		if !waited {
			waited, since = true, sr.clock.Now()
		}
		// Only a target that answered the last chunk settles: one still
		// working on it (a slow schema change) must hold the peers.
		var quiet <-chan time.Time
		if !sr.c.settled.Load() && sr.timer != nil && sr.rx.n > sr.sentAt {
			d := later(since, sr.rx.last).Add(sr.cfg.QuietTimeout).Sub(sr.clock.Now())
			if d <= 0 {
				sr.c.settle()
				continue
			}
			sr.timer.Reset(d)
			quiet = sr.timer.C()
		}
		select {
		case <-st.wait:
		case <-sr.ready:
			sr.drain()
		case <-quiet:
		case <-sr.ctx.Done():
			if quiet != nil {
				sr.timer.Stop()
			}
			return ch, false, waited, context.Cause(sr.ctx)
		}
		if quiet != nil {
			sr.timer.Stop()
		}
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

// drain reads what has arrived.
func (sr *sessRun) drain() {
	for !sr.readDone {
		n, err := sr.conn.ReadNow(sr.buf)
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

// received hands bytes from the target to the observer and notes progress.
func (sr *sessRun) received(p []byte) {
	now := sr.clock.Now()
	switch {
	case sr.tobs != nil:
		sr.tobs.ReceivedAt(p, now)
	case sr.obs != nil:
		sr.obs.Received(p)
	}
	rx := &sr.rx
	rx.n += int64(len(p))
	sr.p.r.stats.bytesReceived.Add(int64(len(p)))
	rx.last = now
	if !rx.met && rx.n >= rx.need {
		rx.met, rx.metAt = true, now
	}
	if !rx.answered && rx.n > rx.prev {
		rx.answered = true
	}
	sr.c.advance(int64(len(p)))
}

// deviate counts one deviation of the session in its result and, at once,
// in the run's totals: a session that runs for days shows its deviations
// in Summary (and the metrics) while it runs.
func (sr *sessRun) deviate(n *int, total *atomic.Int64) {
	*n++
	total.Add(1)
}

// readEnded records the end of the read side: EOF (nil) or an error.
func (sr *sessRun) readEnded(err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	sr.rx.closed, sr.rx.err = true, err
}

// write writes b whole. The owner reads while the send buffer is full: a
// target that answers as it reads must not stall the upload.
func (sr *sessRun) write(b []byte) (int, error) {
	n := 0
	for {
		m, err := sr.conn.WriteNow(b[n:])
		n += m
		if err != nil || n == len(b) {
			return n, err
		}
		if m > 0 {
			continue // the buffer took some: try the rest before waiting
		}
		select {
		case <-sr.conn.WriteReady():
		case <-sr.ready:
			sr.drain()
		case <-sr.ctx.Done():
			return n, context.Cause(sr.ctx)
		}
	}
}

// play writes the chunks as the capture delivers them, each when due, then
// closes as captured.
func (sr *sessRun) play() error {
	cfg, st := sr.cfg, &sr.p.r.stats
	var prev int64
	turnStart := sr.clock.Now()
	for i := 0; ; i++ {
		c, ok, waited, err := sr.nextChunk()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if waited {
			// The turn starts when the capture delivered the chunk: its
			// timeouts do not count the time the client took.
			turnStart = later(turnStart, sr.clock.Now())
		}
		need := max(c.ServerBytesBefore-sr.short, prev)
		lost := c.StreamOffset > sr.sentEnd // client bytes before it were never captured
		ready, err := sr.waitTurn(sr.start.Add(cfg.scale(c.Offset)), turnStart, need, prev, lost)
		if err == errTargetClosed {
			sr.targetClosedEnd()
			return nil
		}
		if err != nil {
			return err
		}
		now := sr.clock.Now()
		late, lag := now.Sub(ready), time.Duration(-1)
		st.chunkLate.record(late)
		if cfg.Live {
			lag = now.Sub(sr.head.Start.Add(c.Offset))
			st.liveLag.record(lag)
		}
		if m := cfg.Metrics; m != nil {
			m.ChunkWritten(late, lag)
		}
		if sr.rx.closed {
			// The target closed (its FIN came with the answer this chunk
			// waited for) while the capture has more to send: an early
			// close, not the reset that writing into it would cause.
			if err := sr.closedWhileWaiting(sr.rx.err); err != errTargetClosed {
				return err
			}
			sr.targetClosedEnd()
			return nil
		}
		sr.sentAt = sr.rx.n
		n, err := sr.write(c.Data)
		sr.res.BytesSent += int64(n)
		st.bytesSent.Add(int64(n))
		if err != nil {
			return sr.writeError(i, err)
		}
		sr.res.ChunksSent++
		sr.sentEnd = c.StreamOffset + int64(len(c.Data))
		st.chunksSent.Add(1)
		prev = need
		turnStart = sr.clock.Now()
		if sr.tobs != nil {
			sr.tobs.Sent(c, turnStart)
		}
	}
	return sr.finish(prev, turnStart)
}

// capturedEnd is how the captured session ended, as far as the replay can
// use it: unknown (EndCaptureEnd) while the capture has not said.
func (sr *sessRun) capturedEnd() session.End {
	if sr.tail == nil || sr.cut {
		return session.EndCaptureEnd
	}
	return sr.tail.End
}

// writeError explains a failed write. A reset where the captured server
// reset too is the target closing early, not a failure of its own.
func (sr *sessRun) writeError(i int, err error) error {
	if sr.capturedEnd() == session.EndServerRST && classify(err) == Reset {
		sr.deviate(&sr.res.Deviations.EarlyClose, &sr.p.r.stats.earlyClose)
		sr.res.End = session.EndServerRST
		return nil
	}
	return fmt.Errorf("write chunk %d: %w", i+1, err)
}

// waitTurn blocks until a chunk (or the close) may go: its time at has come
// (not at speed max) and the target has sent need bytes — or, having
// answered part of the turn (more than prev), has been quiet for
// QuietTimeout, or has answered nothing for TurnTimeout. It returns when the
// chunk became due, for the lateness measure.
//
// lost says that client bytes before this turn were never captured: the
// need may count answers to them, which the target was never asked for.
// Such a turn gives up after QuietTimeout whether or not the target
// answered part of it (a LostTurn), so that a session hurt by capture loss
// does not hold its peers and successors for a TurnTimeout.
func (sr *sessRun) waitTurn(at, turnStart time.Time, need, prev int64, lost bool) (time.Time, error) {
	cfg, rx := sr.cfg, &sr.rx
	sr.drainReady()
	// A target whose earlier answers were shorter than captured is behind
	// prev: what answers this turn is any byte beyond what it had sent when
	// the last chunk went out (not beyond what it has sent now: the answer
	// may already be here).
	rx.need, rx.prev = need, min(prev, sr.sentAt)
	rx.met = rx.n >= need
	rx.metAt = turnStart
	rx.answered = rx.n > rx.prev

	timeReady := turnStart
	if cfg.paced() {
		if d := at.Sub(sr.clock.Now()); d > 0 {
			if err := sr.sleep(d); err != nil {
				return time.Time{}, err
			}
		}
		timeReady = later(turnStart, at)
	}
	for {
		sr.drainReady()
		sr.pumpCaptured()
		if rx.met {
			return later(timeReady, rx.metAt), nil
		}
		if rx.closed {
			return time.Time{}, sr.closedWhileWaiting(rx.err)
		}
		quiet := rx.answered
		deadline := timeReady.Add(cfg.TurnTimeout)
		switch {
		case lost && quiet:
			deadline = later(timeReady, rx.last).Add(cfg.QuietTimeout)
		case lost:
			deadline = timeReady.Add(cfg.QuietTimeout)
		case quiet:
			deadline = rx.last.Add(cfg.QuietTimeout)
		}
		now := sr.clock.Now()
		if !now.Before(deadline) {
			if quiet || lost {
				if lost {
					sr.deviate(&sr.res.Deviations.LostTurns, &sr.p.r.stats.lostTurns)
					sr.lossy = true
				} else {
					sr.deviate(&sr.res.Deviations.QuietTurns, &sr.p.r.stats.quietTurns)
				}
				if rx.n < need {
					sr.short += need - rx.n
					sr.c.advance(need - rx.n) // peers waiting for this turn go on too
				}
			} else {
				sr.deviate(&sr.res.Deviations.TurnTimeouts, &sr.p.r.stats.turnTimeouts)
			}
			return later(timeReady, deadline), nil
		}
		sr.timer.Reset(deadline.Sub(now))
		select {
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
	if err != nil && sr.capturedEnd() != session.EndServerRST {
		return fmt.Errorf("read: %w", err)
	}
	sr.deviate(&sr.res.Deviations.EarlyClose, &sr.p.r.stats.earlyClose)
	return errTargetClosed
}

// targetClosedEnd records that the target closed first.
func (sr *sessRun) targetClosedEnd() {
	sr.res.End = session.EndServerFIN
	if sr.rx.err != nil {
		sr.res.End = session.EndServerRST
	}
}

// finish waits for the rest of the target's answer and closes the way the
// captured session closed, at its scaled end time. A session whose capture
// did not say how it ended (it was cut: shed, bytes dropped, or the input
// stopped) closes politely after its last turn.
func (sr *sessRun) finish(prev int64, turnStart time.Time) error {
	cfg := sr.cfg
	end := sr.capturedEnd()
	need, at := prev, turnStart
	lost := false // client bytes after the last chunk were never captured
	if t := sr.tail; t != nil && !sr.cut {
		// A client that closed first waits only for what it had received
		// when it closed; what the server sent after the client's FIN is
		// drained after ours.
		need = max(t.ServerBytes-t.ServerBytesAfterClose-sr.short, prev)
		at = sr.start.Add(cfg.scale(t.Duration))
		lost = t.ClientBytes > sr.sentEnd
	}
	if lost && sr.res.BytesSent == 0 {
		// The capture lost every client byte: the target was sent nothing
		// and has nothing to answer, and the session changed nothing that
		// later sessions could wait for. Close now (at its time).
		sr.deviate(&sr.res.Deviations.LostTurns, &sr.p.r.stats.lostTurns)
		sr.lossy = true
		if cfg.paced() {
			if d := at.Sub(sr.clock.Now()); d > 0 {
				if err := sr.sleep(d); err != nil {
					return err
				}
			}
		}
		sr.res.End = session.EndClientFIN
		return nil
	}
	_, err := sr.waitTurn(at, turnStart, need, prev, lost)
	if err == errTargetClosed {
		sr.targetClosedEnd()
		return nil
	}
	if err != nil {
		return err
	}
	sr.drainReady() // a FIN that came with the answer
	if sr.rx.closed {
		// The target closed after its full answer, before we did.
		if sr.rx.err != nil && end != session.EndServerRST {
			return fmt.Errorf("read: %w", sr.rx.err)
		}
		sr.targetClosedEnd()
		return nil
	}

	switch end {
	case session.EndServerFIN, session.EndServerRST:
		if sr.lossy && sr.rx.n == 0 {
			// Nothing the target was sent asked it to answer or close
			// (the capture lost the client's bytes): close ourselves.
			sr.res.End = session.EndClientFIN
			break
		}
		if sr.waitClosed() {
			if sr.rx.err != nil && end != session.EndServerRST {
				return fmt.Errorf("read: %w", sr.rx.err)
			}
			sr.targetClosedEnd()
			return nil
		}
		if err := context.Cause(sr.ctx); err != nil {
			return err
		}
		// The target kept the connection open (a longer idle timeout than
		// the captured server's, say): close it ourselves.
		sr.deviate(&sr.res.Deviations.CloseTimeouts, &sr.p.r.stats.closeTimeouts)
		sr.res.End = session.EndClientFIN
	case session.EndClientRST:
		sr.res.End = session.EndClientRST
		sr.abort()
	case session.EndClientFIN:
		sr.res.End = session.EndClientFIN
		if err := sr.conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			if errors.Is(err, errNoCloseWrite) {
				break // closeConn sends the FIN with Close
			}
			return fmt.Errorf("close write: %w", err)
		}
		// Drain until the target closes its side too.
		if !sr.waitClosed() {
			if err := context.Cause(sr.ctx); err != nil {
				return err
			}
			sr.deviate(&sr.res.Deviations.CloseTimeouts, &sr.p.r.stats.closeTimeouts)
			break
		}
		if sr.rx.err != nil {
			return fmt.Errorf("read after our FIN: %w", sr.rx.err)
		}
	default: // EndCaptureEnd: the capture does not say; close politely.
		sr.res.End = session.EndClientFIN
	}
	return nil
}

// waitClosed waits up to CloseTimeout for the read side to end.
func (sr *sessRun) waitClosed() bool {
	sr.timer.Reset(sr.cfg.CloseTimeout)
	defer sr.timer.Stop()
	for {
		sr.drain()
		if sr.readDone {
			return true
		}
		select {
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
	sr.conn.Close()
}
