package replay

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a manual Clock: time moves only by Advance. Tests use
// waitTimer to learn that the engine has armed a timer (so it is waiting),
// then Advance to fire it — no sleeps.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*fakeTimer]bool
	changed chan struct{} // closed and replaced whenever timers change
}

var fakeEpoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeClock() *fakeClock {
	return &fakeClock{now: fakeEpoch, timers: map[*fakeTimer]bool{}, changed: make(chan struct{})}
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	ch   chan time.Time
	fn   func()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{c: c, fn: f}
	t.Reset(d)
	return t
}

func (c *fakeClock) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.timers[t]
	delete(c.timers, t)
	t.drain()
	c.signalLocked()
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.timers[t]
	delete(c.timers, t)
	t.drain()
	t.when = c.now.Add(d)
	if d <= 0 {
		t.fireLocked()
	} else {
		c.timers[t] = true
	}
	c.signalLocked()
	return was
}

func (t *fakeTimer) drain() {
	if t.ch != nil {
		select {
		case <-t.ch:
		default:
		}
	}
}

func (t *fakeTimer) fireLocked() {
	if t.fn != nil {
		go t.fn()
		return
	}
	select {
	case t.ch <- t.c.now:
	default:
	}
}

// Advance moves time forward by d, firing due timers in deadline order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.now.Add(d)
	for {
		var next *fakeTimer
		for t := range c.timers {
			if !t.when.After(end) && (next == nil || t.when.Before(next.when)) {
				next = t
			}
		}
		if next == nil {
			break
		}
		delete(c.timers, next)
		if next.when.After(c.now) {
			c.now = next.when
		}
		next.fireLocked()
	}
	c.now = end
	c.signalLocked()
}

// AdvanceTo moves time forward to t.
func (c *fakeClock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// waitFor blocks until pred holds for the armed deadlines. It fails the
// test after 10 s of real time: a bound for a broken engine, not a sleep.
func (c *fakeClock) waitFor(tb testing.TB, what string, pred func(deadlines []time.Time) bool) {
	tb.Helper()
	limit := time.NewTimer(10 * time.Second)
	defer limit.Stop()
	for {
		c.mu.Lock()
		ds := make([]time.Time, 0, len(c.timers))
		for t := range c.timers {
			ds = append(ds, t.when)
		}
		ok := pred(ds)
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-limit.C:
			tb.Fatalf("fake clock: gave up waiting for %s; armed: %v", what, ds)
		}
	}
}

// waitTimer blocks until a timer due at exactly at is armed.
func (c *fakeClock) waitTimer(tb testing.TB, at time.Time) {
	tb.Helper()
	c.waitFor(tb, "timer at "+at.Sub(fakeEpoch).String(), func(ds []time.Time) bool {
		for _, d := range ds {
			if d.Equal(at) {
				return true
			}
		}
		return false
	})
}

func TestFakeClockOrder(t *testing.T) {
	c := newFakeClock()
	var got []int
	var mu sync.Mutex
	done := make(chan struct{}, 3)
	for i, d := range []time.Duration{3, 1, 2} {
		c.AfterFunc(d*time.Second, func() {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			done <- struct{}{}
		})
	}
	tm := c.NewTimer(2 * time.Second)
	c.Advance(2 * time.Second)
	if at := <-tm.C(); !at.Equal(fakeEpoch.Add(2 * time.Second)) {
		t.Errorf("timer fired at %v", at)
	}
	<-done
	<-done
	if tm.Reset(time.Second) {
		t.Error("Reset of a fired timer reported pending")
	}
	if !tm.Stop() {
		t.Error("Stop of an armed timer reported not pending")
	}
	c.Advance(time.Second)
	<-done
	select {
	case <-tm.C():
		t.Error("stopped timer fired")
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("fired %v", got)
	}
}
