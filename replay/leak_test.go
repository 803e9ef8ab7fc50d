package replay

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakCheckTimeout is how long a finished test's goroutines get to end: a
// goroutine on its way out (a conn closing, a timer callback returning) is
// not a leak. A leaked one stays, blocked.
const leakCheckTimeout = 5 * time.Second

// checkLeaks makes the test fail if goroutines it started are still running
// at its end. Call it first in the test, so that its cleanup runs last,
// after every other cleanup (server goroutines waited for, listeners and
// stacks closed). Goroutines that existed when it was called are ignored;
// every other goroutine still alive leakCheckTimeout after the test (and
// its other cleanups) ended is reported with its stack.
//
// A goroutine-count check is only sound when no other test runs meanwhile,
// so the tests that call checkLeaks are not parallel, and this is enforced:
// checkLeaks calls t.Setenv, which panics in a test that is parallel or has
// a parallel ancestor, and makes a later t.Parallel in the test panic.
// A test without a parallel ancestor overlaps no other test: a parallel
// test resumes only once its parent's function has returned, and a
// sequential t.Run returns only once the subtest and its cleanups are done.
// Parallel subtests of the checked test are part of it, and end before its
// cleanup.
func checkLeaks(t *testing.T) {
	t.Helper()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("checkLeaks in a parallel test (%v): a leak check sees every test's goroutines", r)
			}
		}()
		t.Setenv("TCOPY_TUN_REPLAY_LEAK_CHECK", "1") // not parallel, see above
	}()
	before := goroutineIDs()
	t.Cleanup(func() {
		leaked := newGoroutines(before, leakCheckTimeout)
		if len(leaked) == 0 {
			return
		}
		failed := ""
		if t.Failed() {
			failed = " (the test had already failed, which may explain them)"
		}
		t.Errorf("%d goroutine(s) still running %v after the test ended%s:\n\n%s",
			len(leaked), leakCheckTimeout, failed, strings.Join(leaked, "\n\n"))
	})
}

// goroutineIDs returns the ids of the goroutines running now.
func goroutineIDs() map[uint64]bool {
	ids := map[uint64]bool{}
	for _, g := range goroutineStacks() {
		ids[g.id] = true
	}
	return ids
}

// newGoroutines waits up to timeout for every goroutine not in before to
// end, and returns the stacks of those still running then (nil if none).
// Goroutine ids are never reused, so a goroutine in before is the same one.
func newGoroutines(before map[uint64]bool, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		var leaked []string
		for i, g := range goroutineStacks() {
			if i > 0 && !before[g.id] { // 0 is the calling goroutine
				leaked = append(leaked, g.stack)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(delay)
	}
}

type goroutineStack struct {
	id    uint64
	stack string // the whole record, "goroutine N [state]:" line included
}

// goroutineStacks returns every goroutine's stack, the caller's first, from
// runtime.Stack: records separated by blank lines, each starting with
// "goroutine N [".
func goroutineStacks() []goroutineStack {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var gs []goroutineStack
	for rec := range bytes.SplitSeq(buf, []byte("\n\n")) {
		s := strings.TrimSpace(string(rec))
		if s == "" {
			continue
		}
		id, err := goroutineID(s)
		if err != nil {
			panic(fmt.Sprintf("leak check: %v in runtime.Stack output:\n%s", err, s))
		}
		gs = append(gs, goroutineStack{id, s})
	}
	return gs
}

// goroutineID parses the id from a record's "goroutine N [state]:" header
// (or "goroutine N gp=… [state]:", the runtime's crash format).
func goroutineID(rec string) (uint64, error) {
	rest, ok := strings.CutPrefix(rec, "goroutine ")
	if !ok {
		return 0, fmt.Errorf("no goroutine header")
	}
	idText, _, ok := strings.Cut(rest, " ")
	if !ok {
		return 0, fmt.Errorf("malformed goroutine header")
	}
	return strconv.ParseUint(idText, 10, 64)
}

// TestCheckLeaksSeesLeak checks the checker: a goroutine started after the
// baseline and blocked is reported with its stack until it ends; the
// goroutines of the baseline are not.
func TestCheckLeaksSeesLeak(t *testing.T) {
	checkLeaks(t)
	early := make(chan struct{})
	defer close(early)
	go func() { <-early }() // in the baseline: ignored
	before := goroutineIDs()
	release := make(chan struct{})
	go blockedForLeakTest(release)
	leaked := newGoroutines(before, 20*time.Millisecond)
	if len(leaked) != 1 || !strings.Contains(leaked[0], "blockedForLeakTest") {
		t.Fatalf("leaked %d goroutines, want the blocked one:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
	if !strings.HasPrefix(leaked[0], "goroutine ") || !strings.Contains(leaked[0], "[chan receive") {
		t.Errorf("stack record:\n%s", leaked[0])
	}
	close(release)
	if leaked := newGoroutines(before, leakCheckTimeout); len(leaked) != 0 {
		t.Errorf("goroutine still reported after it ended:\n%s", strings.Join(leaked, "\n\n"))
	}
}

func blockedForLeakTest(release chan struct{}) { <-release }
