package replay

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// The engine as the session builder's Sink: sessions that start before
// they end, in start order, the cross-connection rule, backpressure,
// shedding and live drops. Each test drives the Sink itself, standing in
// for a builder reading a capture as it happens.

type streamHandle struct {
	r    *Runner
	done chan struct{}
	err  error
}

// startStream runs r.Stream with produce in a goroutine.
func startStream(t *testing.T, r *Runner, produce func(ctx context.Context, sink session.Sink) error) *streamHandle {
	h := &streamHandle{r: r, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.err = r.Stream(context.Background(), produce)
	}()
	return h
}

func (h *streamHandle) mustFinish(t *testing.T) *Summary {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(20 * time.Second):
		t.Fatal("Stream did not return")
	}
	if h.err != nil {
		t.Fatalf("Stream: %v", h.err)
	}
	return h.r.Summary()
}

// newRunner is New for a config the test knows to be valid.
func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func head(id, endedBefore uint64, peers ...session.Peer) *session.Head {
	s := mkSession(id, endedBefore, session.EndClientFIN, 0)
	h := s.Head()
	h.Peers = peers
	return h
}

func tail(endSeq uint64, end session.End, serverBytes int64) *session.Tail {
	return &session.Tail{EndSeq: endSeq, End: end, ServerBytes: serverBytes}
}

func recv(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

// A long-lived connection is replayed while it happens: each request
// reaches the target before the capture has ended the session.
func TestStreamReplaysBeforeTheEnd(t *testing.T) { forEachConnKind(t, testStreamReplaysBeforeTheEnd) }

func testStreamReplaysBeforeTheEnd(t *testing.T, k connKind) {
	clock := newFakeClock()
	got := make(chan string, 4)
	d := newMemDialerKind(t, k, clock, func(c *memConn, _ dialRec) {
		for range 2 {
			got <- readN(t, c, 6)
			c.Write([]byte("+OK\r\n"))
		}
		readEOF(t, c)
	})
	r, err := New(testConfig(t, clock, d, newRecObserver()))
	if err != nil {
		t.Fatal(err)
	}
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		f := sink.Begin(head(0, 0))
		f.Chunk(chunk(0, "SET a\n", 0))
		if s := recv(t, got, "the first request"); s != "SET a\n" {
			t.Errorf("target got %q", s)
		}
		f.Server(0, []byte("+OK\r\n"))
		f.Chunk(chunk(time.Second, "SET b\n", 5))
		if s := recv(t, got, "the second request"); s != "SET b\n" {
			t.Errorf("target got %q", s)
		}
		f.Server(5, []byte("+OK\r\n"))
		f.End(tail(0, session.EndClientFIN, 10))
		return nil
	})
	sum := h.mustFinish(t)
	if sum.Succeeded != 1 || sum.ChunksSent != 2 {
		t.Fatalf("summary %+v", sum)
	}
}

// Sessions start in capture start order: a session that starts first and
// ends last runs from its start, and one that starts after it (and ends
// before it) runs alongside.
func TestStreamStartOrder(t *testing.T) { forEachConnKind(t, testStreamStartOrder) }

func testStreamStartOrder(t *testing.T, k connKind) {
	clock := newFakeClock()
	obs := newRecObserver()
	got := make(chan string, 4)
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		got <- readN(t, c, 4)
		c.Write([]byte("ok"))
		readEOF(t, c)
	})
	r := newRunner(t, testConfig(t, clock, d, obs))
	var doneB chan struct{}
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		a := sink.Begin(head(0, 0))
		a.Chunk(chunk(0, "long", 0))
		recv(t, got, "the long session's request")
		b := sink.Begin(head(1, 0))
		b.Chunk(chunk(0, "shrt", 0))
		recv(t, got, "the short session's request")
		b.End(tail(0, session.EndClientFIN, 2))
		doneB = make(chan struct{})
		go func() {
			defer close(doneB)
			for obs.eventIndex("done 1") < 0 {
				time.Sleep(time.Millisecond)
			}
		}()
		<-doneB
		a.End(tail(1, session.EndClientFIN, 2))
		return nil
	})
	sum := h.mustFinish(t)
	if sum.Succeeded != 2 {
		t.Fatalf("summary %+v", sum)
	}
	if !(obs.eventIndex("begin 0") < obs.eventIndex("begin 1") && obs.eventIndex("done 1") < obs.eventIndex("done 0")) {
		t.Errorf("events %v: want the long session begun first and done last", obs.events)
	}
}

// A connection that a client host opens while its other connections are
// open waits until those have received, in the replay, the server bytes
// they had in the capture at that moment: the schema connection answers
// before the worker starts.
func TestStreamPeerRule(t *testing.T) { forEachConnKind(t, testStreamPeerRule) }

func testStreamPeerRule(t *testing.T, k connKind) {
	for _, noCausal := range []bool{false, true} {
		t.Run(map[bool]string{false: "causal", true: "no-causal-order"}[noCausal], func(t *testing.T) {
			clock := newFakeClock()
			release := make(chan struct{})
			dialed := make(chan string, 4)
			d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
				req := readN(t, c, 6)
				dialed <- req
				if req == "CREATE" {
					<-release
				}
				c.Write([]byte("ok"))
				readEOF(t, c)
			})
			cfg := testConfig(t, clock, d, newRecObserver())
			cfg.NoCausalOrder = noCausal
			r := newRunner(t, cfg)
			peerWait := make(chan uint64, 1)
			r.testHook = func(ev hookEvent, id uint64) {
				if ev == hookPeerWait {
					peerWait <- id
				}
			}
			h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
				a := sink.Begin(head(0, 0))
				a.Chunk(chunk(0, "CREATE", 0))
				a.Server(0, []byte("ok"))
				recv(t, dialed, "the schema session's request")
				b := sink.Begin(head(1, 0, session.Peer{ID: 0, ServerBytes: 2}))
				b.Chunk(chunk(0, "INSERT", 0))
				if !noCausal {
					select {
					case id := <-peerWait:
						if id != 1 {
							t.Errorf("session %d waits for a peer", id)
						}
					case <-time.After(10 * time.Second):
						t.Fatal("the worker did not wait for the schema connection")
					}
					if n := len(d.records()); n != 1 {
						t.Fatalf("%d dials before the schema connection was answered", n)
					}
				} else if s := recv(t, dialed, "the worker's request"); s != "INSERT" {
					t.Fatalf("got %q", s)
				}
				close(release)
				if !noCausal {
					if s := recv(t, dialed, "the worker's request"); s != "INSERT" {
						t.Fatalf("got %q", s)
					}
				}
				b.End(tail(0, session.EndClientFIN, 2))
				a.End(tail(1, session.EndClientFIN, 2))
				return nil
			})
			if sum := h.mustFinish(t); sum.Succeeded != 2 || sum.PeerTimeouts != 0 {
				t.Fatalf("summary %+v", sum)
			}
		})
	}
}

// A peer whose target never answers does not stall the worker for ever:
// it waits TurnTimeout and goes on (counted).
func TestStreamPeerTimeout(t *testing.T) { forEachConnKind(t, testStreamPeerTimeout) }

func testStreamPeerTimeout(t *testing.T, k connKind) {
	clock := newFakeClock()
	stop := make(chan struct{})
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		if readN(t, c, 6) == "CREATE" {
			<-stop // never answers
			return
		}
		c.Write([]byte("ok"))
		readEOF(t, c)
	})
	r, err := New(testConfig(t, clock, d, newRecObserver()))
	if err != nil {
		t.Fatal(err)
	}
	peerWait := make(chan uint64, 1)
	r.testHook = func(ev hookEvent, id uint64) {
		if ev == hookPeerWait {
			peerWait <- id
		}
	}
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		a := sink.Begin(head(0, 0))
		a.Chunk(chunk(0, "CREATE", 0))
		a.Server(0, []byte("ok"))
		b := sink.Begin(head(1, 0, session.Peer{ID: 0, ServerBytes: 2}))
		b.Chunk(chunk(0, "INSERT", 0))
		<-peerWait
		clock.waitTimer(t, clock.Now().Add(tTurn))
		clock.Advance(tTurn)
		b.End(tail(0, session.EndClientFIN, 2))
		a.End(tail(1, session.EndClientFIN, 2))
		return nil
	})
	go func() {
		// A's own turn then times out as well; let it.
		<-h.done
	}()
	deadline := time.After(10 * time.Second)
	for r.Summary().Succeeded < 1 {
		select {
		case <-deadline:
			t.Fatal("the worker did not go on after the peer's timeout")
		case <-time.After(time.Millisecond):
		}
	}
	clock.Advance(tTurn)
	close(stop)
	sum := h.mustFinish(t)
	if sum.PeerTimeouts != 1 {
		t.Fatalf("summary %+v, want 1 peer timeout", sum)
	}
}

// A peer that has received all its target will send for what it was sent,
// and now waits for the capture, settles after QuietTimeout: the worker goes
// on although the peer's captured count (3: the capture counted a lost FIN
// as a byte, say) is never reached, and without a peer timeout.
func TestStreamPeerSettles(t *testing.T) { forEachConnKind(t, testStreamPeerSettles) }

func testStreamPeerSettles(t *testing.T, k connKind) {
	clock := newFakeClock()
	dialed := make(chan string, 2)
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		req := readN(t, c, 6)
		c.Write([]byte("ok"))
		dialed <- req
		readEOF(t, c)
	})
	r := newRunner(t, testConfig(t, clock, d, newRecObserver()))
	peerWait := make(chan uint64, 1)
	r.testHook = func(ev hookEvent, id uint64) {
		if ev == hookPeerWait {
			peerWait <- id
		}
	}
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		a := sink.Begin(head(0, 0))
		a.Chunk(chunk(0, "CREATE", 0))
		a.Server(0, []byte("ok?"))
		recv(t, dialed, "the peer's request")
		b := sink.Begin(head(1, 0, session.Peer{ID: 0, ServerBytes: 3}))
		b.Chunk(chunk(0, "INSERT", 0))
		<-peerWait
		// The peer's quiet wait for the capture ends tQuiet after its
		// answer; nothing else moves the clock. (Before its target
		// answers, it would not settle: TestStreamPeerRule.)
		clock.waitTimer(t, clock.Now().Add(tQuiet))
		clock.Advance(tQuiet)
		if s := recv(t, dialed, "the worker's request"); s != "INSERT" {
			t.Errorf("got %q", s)
		}
		b.End(tail(0, session.EndClientFIN, 2))
		a.End(tail(1, session.EndClientFIN, 2))
		return nil
	})
	if sum := h.mustFinish(t); sum.Succeeded != 2 || sum.PeerTimeouts != 0 {
		t.Fatalf("summary %+v, want 2 succeeded and no peer timeout", sum)
	}
}

// The input waits for a running session whose window is full: memory
// stays at the window while the target holds its answers back.
func TestStreamBackpressure(t *testing.T) { forEachConnKind(t, testStreamBackpressure) }

func testStreamBackpressure(t *testing.T, k connKind) {
	clock := newFakeClock()
	release := make(chan struct{})
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		<-release
		var all bytes.Buffer
		for all.Len() < 100*100 {
			all.WriteString(readN(t, c, 100))
			c.Write([]byte("k"))
		}
		readEOF(t, c)
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.Window = 1000
	r := newRunner(t, cfg)
	var fed atomic.Int64
	blocked := make(chan int64, 1)
	r.testHook = func(ev hookEvent, id uint64) {
		if ev == hookInputWait {
			select {
			case blocked <- fed.Load():
			default:
			}
		}
	}
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		f := sink.Begin(head(0, 0))
		for i := range 100 {
			// Each chunk waits for the answer to the one before.
			f.Chunk(chunk(0, strings.Repeat("x", 100), int64(i)))
			fed.Add(1)
		}
		f.End(tail(0, session.EndClientFIN, 100))
		return nil
	})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // also on the way out of a failure: nothing stays blocked
	n := <-blocked
	// Ten chunks fill the window; the session holds two more (one written,
	// one waiting for its turn).
	if n > 12 {
		t.Fatalf("the input went on to chunk %d with a 1000-byte window of 100-byte chunks", n)
	}
	free()
	if sum := h.mustFinish(t); sum.Succeeded != 1 || sum.BytesSent != 100*100 {
		t.Fatalf("summary %+v", sum)
	}
}

// --max-sessions full of long sessions that wait for more input: the input
// must not wait for a session that cannot start (that never ends); past the
// budget it is shed and counted, and the long sessions finish.
func TestStreamShedNoDeadlock(t *testing.T) { forEachConnKind(t, testStreamShedNoDeadlock) }

func testStreamShedNoDeadlock(t *testing.T, k connKind) {
	clock := newFakeClock()
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		for {
			b := make([]byte, 512)
			n, err := c.Read(b)
			if err != nil {
				return
			}
			c.Write(b[:n])
		}
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.MaxSessions, cfg.MaxPending = 2, 2
	cfg.Window, cfg.Budget = 1000, 2000
	r := newRunner(t, cfg)
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		l1, l2 := sink.Begin(head(0, 0)), sink.Begin(head(1, 0))
		l1.Chunk(chunk(0, "a", 0))
		l2.Chunk(chunk(0, "b", 0))
		for r.Summary().Replayed < 2 {
			time.Sleep(time.Millisecond)
		}
		// Both slots are held by sessions whose capture goes on. A third
		// session with more than the budget cannot start until they end.
		s3 := sink.Begin(head(2, 0))
		for range 50 {
			s3.Chunk(chunk(0, strings.Repeat("y", 100), 0))
		}
		s3.End(tail(0, session.EndClientFIN, 5000))
		l1.End(tail(1, session.EndClientFIN, 1))
		l2.End(tail(2, session.EndClientFIN, 1))
		return nil
	})
	sum := h.mustFinish(t)
	if sum.Succeeded != 2 || sum.Shed != 1 {
		t.Fatalf("summary %+v: want the two long sessions done and the third shed", sum)
	}
}

// Live input never waits: bytes past a session's window are dropped,
// counted, and the session is marked and ends where they begin.
func TestStreamLiveDrops(t *testing.T) { forEachConnKind(t, testStreamLiveDrops) }

func testStreamLiveDrops(t *testing.T, k connKind) {
	clock := newFakeClock()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		// Each chunk waits for a one-byte answer to the one before; the
		// answers wait until the capture has gone on past the window.
		<-release
		for {
			b := make([]byte, 100)
			if _, err := io.ReadFull(c, b); err != nil {
				return
			}
			c.Write([]byte("k"))
		}
	})
	obs := newRecObserver()
	cfg := testConfig(t, clock, d, obs)
	cfg.Live, cfg.Window = true, 500
	r := newRunner(t, cfg)
	fedAll := make(chan struct{})
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		f := sink.Begin(head(0, 0))
		for i := range 20 {
			f.Chunk(chunk(0, strings.Repeat("z", 100), int64(i))) // never blocks
		}
		close(fedAll)
		f.End(tail(0, session.EndClientFIN, 20))
		return nil
	})
	select {
	case <-fedAll:
	case <-time.After(10 * time.Second):
		t.Fatal("live input waited for the replay")
	}
	free()
	sum := h.mustFinish(t)
	// Five chunks fit the window; the session may have held two more
	// (one written, one waiting for its turn) when the capture went on.
	if sum.ChunksSent < 5 || sum.ChunksSent > 7 || sum.ChunksSent+sum.DroppedBytes/100 != 20 {
		t.Errorf("%d chunks sent, %d bytes dropped: want 5 to 7 sent and the rest of the 20 dropped", sum.ChunksSent, sum.DroppedBytes)
	}
	if sum.DroppedSessions != 1 {
		t.Fatalf("summary %+v: want one session with dropped bytes", sum)
	}
	if res := obs.result(t, 0); res.Dropped != sum.DroppedBytes {
		t.Fatalf("result %+v", res)
	}
}

// StopAdmitting (the first Ctrl-C of a live copy) cancels the input, which
// ends the sessions still open in the capture; the one in flight finishes
// with what it has, and the one waiting for a slot never starts.
func TestStreamStopAdmitting(t *testing.T) { forEachConnKind(t, testStreamStopAdmitting) }

func testStreamStopAdmitting(t *testing.T, k connKind) {
	clock := newFakeClock()
	got := make(chan string, 4)
	d := newMemDialerKind(t, k, clock, func(c *memConn, rec dialRec) {
		got <- readN(t, c, 4)
		c.Write([]byte("ok"))
		readEOF(t, c)
	})
	cfg := testConfig(t, clock, d, nil)
	cfg.MaxSessions = 1
	r := newRunner(t, cfg)
	h := startStream(t, r, func(ctx context.Context, sink session.Sink) error {
		a := sink.Begin(head(0, 0))
		a.Chunk(chunk(0, "long", 0))
		recv(t, got, "the open session's request")
		b := sink.Begin(head(1, 0))
		b.Chunk(chunk(0, "next", 0))
		r.StopAdmitting()
		<-ctx.Done() // as a Builder's reader sees it
		if f := sink.Begin(head(2, 0)); f != nil {
			t.Error("a session began after StopAdmitting")
		}
		// Builder.Close: the sessions still open end as capture end.
		a.End(tail(0, session.EndCaptureEnd, 2))
		b.End(tail(1, session.EndCaptureEnd, 2))
		return nil
	})
	sum := h.mustFinish(t)
	if sum.Succeeded != 1 || sum.NotStarted != 1 || sum.Read != 2 {
		t.Fatalf("summary %+v: want the open session done and the waiting one not started", sum)
	}
}
