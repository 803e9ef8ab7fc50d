package replay

import (
	"container/heap"
	"sync"
	"time"
)

// PreciseClock is a Clock whose timers wake within microseconds rather than
// the runtime's millisecond steps. On Linux all its timers share one timerfd
// that the Go network poller watches: the poller wakes as soon as the fd is
// readable, so the time.Sleep rounding (the poller's epoll_wait timeout is in
// whole milliseconds) never applies. This is what keeps chunk lateness at
// --speed 1 far below a millisecond. Where timerfd is unavailable it falls
// back to runtime timers, with SystemClock's precision.
//
// A PreciseClock runs one goroutine until Close. Timers still pending at
// Close never fire, so close it only after everything using it is done.
type PreciseClock struct {
	mu       sync.Mutex
	timers   timerHeap
	armed    time.Time   // deadline the wake-up source is set to; zero when idle
	src      wakeSource  // timerfd (Linux) or a runtime timer
	fallback *time.Timer // used instead of src when src is nil or failed
	closed   bool
}

// wakeSource arms one wake-up at a time and calls fire on expiry.
type wakeSource interface {
	arm(d time.Duration) error
	close()
}

// NewPreciseClock starts a PreciseClock. It does not fail: without timerfd
// it uses runtime timers.
func NewPreciseClock() *PreciseClock {
	c := &PreciseClock{}
	src, err := newTimerfdSource(c.fire)
	if err == nil {
		c.src = src
	}
	return c
}

// Close stops the clock's goroutine. It is idempotent.
func (c *PreciseClock) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	src := c.src
	c.src = nil
	if c.fallback != nil {
		c.fallback.Stop()
	}
	c.mu.Unlock()
	if src != nil {
		src.close()
	}
	return nil
}

// Now returns time.Now().
func (c *PreciseClock) Now() time.Time { return time.Now() }

// NewTimer returns a timer firing after d.
func (c *PreciseClock) NewTimer(d time.Duration) Timer {
	t := &preciseTimer{c: c, idx: -1, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc calls f in its own goroutine after d.
func (c *PreciseClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &preciseTimer{c: c, idx: -1, fn: f}
	t.Reset(d)
	return t
}

type preciseTimer struct {
	c    *PreciseClock
	when time.Time
	idx  int // index in the heap; -1 when not pending
	ch   chan time.Time
	fn   func()
}

func (t *preciseTimer) C() <-chan time.Time { return t.ch }

func (t *preciseTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(t)
}

func (t *preciseTimer) Reset(d time.Duration) bool {
	c := t.c
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.stopLocked(t)
	t.when = now.Add(d)
	if d <= 0 {
		c.deliverLocked(t, now)
		return was
	}
	heap.Push(&c.timers, t)
	if c.armed.IsZero() || t.when.Before(c.armed) {
		c.armLocked(now)
	}
	return was
}

// stopLocked removes t from the heap and drains a delivered but unreceived
// expiry, so that no stale value is seen after Stop or Reset.
func (c *PreciseClock) stopLocked(t *preciseTimer) bool {
	was := t.idx >= 0
	if was {
		heap.Remove(&c.timers, t.idx)
	}
	if t.ch != nil {
		select {
		case <-t.ch:
		default:
		}
	}
	return was
}

// deliverLocked fires t. Delivery happens under the lock so that Stop and
// Reset never race with a late send.
func (c *PreciseClock) deliverLocked(t *preciseTimer, now time.Time) {
	if t.fn != nil {
		go t.fn()
		return
	}
	select {
	case t.ch <- now:
	default:
	}
}

// armLocked sets the wake-up source to the earliest pending deadline.
func (c *PreciseClock) armLocked(now time.Time) {
	if c.closed || len(c.timers) == 0 {
		c.armed = time.Time{}
		return
	}
	when := c.timers[0].when
	c.armed = when
	d := max(when.Sub(now), time.Nanosecond)
	if c.src != nil {
		if err := c.src.arm(d); err == nil {
			return
		}
		// The fd is unusable: the runtime timer takes over for good.
		src := c.src
		c.src = nil
		go src.close()
	}
	if c.fallback == nil {
		c.fallback = time.AfterFunc(d, c.fire)
	} else {
		c.fallback.Reset(d)
	}
}

// fire delivers every due timer and re-arms for the next one. Spurious calls
// (a deadline that was stopped meanwhile) are harmless.
func (c *PreciseClock) fire() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for len(c.timers) > 0 && !c.timers[0].when.After(now) {
		t := heap.Pop(&c.timers).(*preciseTimer)
		c.deliverLocked(t, now)
	}
	c.armed = time.Time{}
	c.armLocked(now)
}

type timerHeap []*preciseTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*preciseTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
