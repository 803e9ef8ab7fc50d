package replay

import "time"

// Clock is the engine's only source of time: every schedule, turn, quiet,
// close, dial and session timeout goes through it, so tests drive the
// scheduler with a fake clock and never sleep.
//
// Implementations are safe for concurrent use.
type Clock interface {
	// Now returns the current time. The engine only subtracts times obtained
	// from the same Clock, so a monotonic reading is what matters.
	Now() time.Time
	// NewTimer returns a timer whose channel receives once d has elapsed
	// (at once if d <= 0).
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f in its own goroutine once d has elapsed. The
	// returned Timer's C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a one-shot timer of a Clock, with the semantics of time.Timer
// since Go 1.23: after Stop or Reset returns, no stale value is received
// from C. A Timer is used by one goroutine at a time.
type Timer interface {
	// C is the channel the expiry is delivered on (nil for AfterFunc).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was
	// pending.
	Stop() bool
	// Reset re-arms the timer to fire d from now; it reports whether it
	// was pending.
	Reset(d time.Duration) bool
}

// SystemClock is the Go runtime's clock. Its timers fire on the runtime's
// network poller, which sleeps in whole milliseconds: expect 0.5–1 ms of
// lateness. NewPreciseClock is the better choice for a replay at a finite
// speed.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

// AfterFunc wraps time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer {
	return sysTimer{time.AfterFunc(d, f)}
}

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time        { return t.t.C }
func (t sysTimer) Stop() bool                 { return t.t.Stop() }
func (t sysTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
