package replay

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
)

// causalOrder enforces the order between sessions: a session with
// EndedBefore = e may start only once every session with ID < e that is
// being replayed has finished in the replay.
//
// Sessions are added in ID order (the builder emits them so). IDs that never
// arrive (not selected, not mapped, filtered by the caller) count as done:
// when ID x arrives, every ID below x either arrived before or never will. So
// "every ID < e is done" is "the oldest unfinished ID is >= e", and the
// unfinished IDs form a queue in arrival order.
type causalOrder struct {
	mu      sync.Mutex
	ids     []uint64 // arrival order; ids[head:] are not yet popped
	done    []bool
	head    int
	base    int // tickets issued before ids[0]
	last    uint64
	any     bool
	waiters waiterHeap
}

type causalWaiter struct {
	e  uint64
	ch chan struct{}
}

// add registers a session that is about to be scheduled and returns its
// ticket for finish.
func (c *causalOrder) add(id uint64) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.any && id <= c.last {
		return 0, fmt.Errorf("session %d arrived after session %d: sessions must come in increasing ID order", id, c.last)
	}
	c.any, c.last = true, id
	// Compact once the popped prefix dominates, so memory follows the
	// sessions that are not done.
	if c.head > 1024 && c.head*2 > len(c.ids) {
		n := copy(c.ids, c.ids[c.head:])
		copy(c.done, c.done[c.head:])
		c.ids, c.done = c.ids[:n], c.done[:n]
		c.base += c.head
		c.head = 0
	}
	c.ids = append(c.ids, id)
	c.done = append(c.done, false)
	return c.base + len(c.ids) - 1, nil
}

// readyLocked reports whether every added ID < e is done.
func (c *causalOrder) readyLocked(e uint64) bool {
	return c.head == len(c.ids) || c.ids[c.head] >= e
}

// finish marks a ticket done and releases the waiters it unblocks.
func (c *causalOrder) finish(ticket int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done[ticket-c.base] = true
	for c.head < len(c.ids) && c.done[c.head] {
		c.head++
	}
	for len(c.waiters) > 0 && c.readyLocked(c.waiters[0].e) {
		close(heap.Pop(&c.waiters).(*causalWaiter).ch)
	}
}

// wait blocks until every added session with ID < e is done, or ctx or stop
// ends the wait (then it returns false). A waiter abandoned that way stays
// in the heap until released; it is only a closed channel then.
func (c *causalOrder) wait(ctx context.Context, stop <-chan struct{}, e uint64) bool {
	c.mu.Lock()
	if c.readyLocked(e) {
		c.mu.Unlock()
		return true
	}
	w := &causalWaiter{e: e, ch: make(chan struct{})}
	heap.Push(&c.waiters, w)
	c.mu.Unlock()
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
	case <-stop:
	}
	return false
}

type waiterHeap []*causalWaiter

func (h waiterHeap) Len() int           { return len(h) }
func (h waiterHeap) Less(i, j int) bool { return h[i].e < h[j].e }
func (h waiterHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *waiterHeap) Push(x any)        { *h = append(*h, x.(*causalWaiter)) }
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return w
}
