package session

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// logSink records the events a Builder streams, one line each, and checks
// the stream contract as they come: Heads numbered densely in start order,
// Tails densely in end order, nothing before Begin or after End.
type logSink struct {
	t      testing.TB
	events []string
	heads  []*Head
	nextID uint64
	nextEQ uint64
	open   map[uint64]bool
	after  Sink // events also go there (Collect), when set
}

func newLogSink(t testing.TB) *logSink { return &logSink{t: t, open: map[uint64]bool{}} }

func (l *logSink) Begin(h *Head) Feed {
	if h.ID != l.nextID {
		l.t.Fatalf("Head.ID %d, want %d (dense, in start order)", h.ID, l.nextID)
	}
	if h.EndedBefore != l.nextEQ {
		l.t.Fatalf("session %d: EndedBefore %d, but %d sessions have ended", h.ID, h.EndedBefore, l.nextEQ)
	}
	l.nextID++
	l.open[h.ID] = true
	l.heads = append(l.heads, h)
	l.events = append(l.events, fmt.Sprintf("begin %d", h.ID))
	f := &logFeed{l: l, id: h.ID}
	if l.after != nil {
		f.next = l.after.Begin(h)
	}
	return f
}

type logFeed struct {
	l    *logSink
	id   uint64
	next Feed
}

func (f *logFeed) check(what string) {
	if !f.l.open[f.id] {
		f.l.t.Fatalf("session %d: %s after End", f.id, what)
	}
}

func (f *logFeed) Chunk(c Chunk) {
	f.check("Chunk")
	f.l.events = append(f.l.events, fmt.Sprintf("chunk %d %q", f.id, c.Data))
	if f.next != nil {
		f.next.Chunk(c)
	}
}

func (f *logFeed) Server(off int64, data []byte) {
	f.check("Server")
	f.l.events = append(f.l.events, fmt.Sprintf("server %d @%d %q", f.id, off, data))
	if f.next != nil {
		f.next.Server(off, data)
	}
}

func (f *logFeed) Hole(h Hole) {
	f.check("Hole")
	f.l.events = append(f.l.events, fmt.Sprintf("hole %d %v@%d+%d", f.id, h.Server, h.Offset, h.Len))
	if f.next != nil {
		f.next.Hole(h)
	}
}

func (f *logFeed) End(t *Tail) {
	f.check("End")
	if t.EndSeq != f.l.nextEQ {
		f.l.t.Fatalf("session %d: EndSeq %d, want %d (dense, in end order)", f.id, t.EndSeq, f.l.nextEQ)
	}
	f.l.nextEQ++
	delete(f.l.open, f.id)
	f.l.events = append(f.l.events, fmt.Sprintf("end %d seq %d %v", f.id, t.EndSeq, t.End))
	if f.next != nil {
		f.next.End(t)
	}
}

// take returns the events so far and forgets them.
func (l *logSink) take() string {
	s := strings.Join(l.events, "\n")
	l.events = nil
	return s
}

func feedSteps(b *Builder, tuples []tuple, steps []step) {
	for _, st := range steps {
		b.Add(st.packet(tuples))
	}
}

// A session is handed over while it happens: its Head at the SYN, each
// request once the next client segment shows that nothing more merges into
// it — long before the connection closes.
func TestStreamSessionBeforeItEnds(t *testing.T) {
	l := newLogSink(t)
	b := NewBuilder(Config{}, l)
	tp := []tuple{defaultTuple}
	feedSteps(b, tp, []step{{ms: 0, dir: 'c', fl: "S"}})
	if got, want := l.take(), "begin 0"; got != want {
		t.Fatalf("after the SYN: %q, want %q", got, want)
	}
	feedSteps(b, tp, []step{
		{ms: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 2, dir: 'c', fl: "A", seq: 1, ack: 1},
		{ms: 3, dir: 'c', fl: "AP", seq: 1, ack: 1, data: "GET /1\n"},
		{ms: 4, dir: 's', fl: "AP", seq: 1, ack: 8, data: "one\n"},
	})
	if got, want := l.take(), `server 0 @0 "one\n"`; got != want {
		t.Fatalf("after the first answer: %q, want %q (the request may still merge)", got, want)
	}
	feedSteps(b, tp, []step{{ms: 5000, dir: 'c', fl: "AP", seq: 8, ack: 5, data: "GET /2\n"}})
	if got, want := l.take(), `chunk 0 "GET /1\n"`; got != want {
		t.Fatalf("after the second request: %q, want %q", got, want)
	}
	feedSteps(b, tp, []step{
		{ms: 5001, dir: 's', fl: "AP", seq: 5, ack: 15, data: "two\n"},
		{ms: 5002, dir: 'c', fl: "AF", seq: 15, ack: 9},
	})
	if got, want := l.take(), "server 0 @4 \"two\\n\""; got != want {
		t.Fatalf("after the client's FIN: %q, want %q", got, want)
	}
	feedSteps(b, tp, []step{{ms: 5003, dir: 's', fl: "AF", seq: 9, ack: 16}})
	if got, want := l.take(), "chunk 0 \"GET /2\\n\"\nend 0 seq 0 client-fin"; got != want {
		t.Fatalf("after both FINs: %q, want %q", got, want)
	}
}

// IDs number starts, EndSeq numbers ends: a long session that starts first
// and ends last is ID 0 and EndSeq 1; the short one after it is ID 1, EndSeq
// 0, and a third that starts after the short one ended has EndedBefore 1.
func TestStreamStartOrderAndEndOrder(t *testing.T) {
	l := newLogSink(t)
	b := NewBuilder(Config{}, l)
	long, short, third := defaultTuple, tuple{c: ap("10.0.0.1:40001"), s: ap("10.0.0.2:80"), ci: 7, si: 9}, tuple{c: ap("10.0.0.3:40002"), s: ap("10.0.0.2:80"), ci: 70, si: 90}
	tp := []tuple{long, short, third}
	feedSteps(b, tp, []step{
		{ms: 0, conn: 0, dir: 'c', fl: "S"},
		{ms: 1, conn: 0, dir: 's', fl: "SA", ack: 1},
		{ms: 2, conn: 0, dir: 'c', fl: "AP", seq: 1, ack: 1, data: "CREATE\n"},
		{ms: 3, conn: 0, dir: 's', fl: "AP", seq: 1, ack: 8, data: "ok\n"},
		{ms: 20, conn: 1, dir: 'c', fl: "S"},
		{ms: 21, conn: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 22, conn: 1, dir: 'c', fl: "AP", seq: 1, ack: 1, data: "INSERT\n"},
		{ms: 23, conn: 1, dir: 's', fl: "AP", seq: 1, ack: 8, data: "ok\n"},
		{ms: 24, conn: 1, dir: 'c', fl: "AR", seq: 8, ack: 4},
		{ms: 30, conn: 2, dir: 'c', fl: "S"},
		{ms: 40, conn: 0, dir: 'c', fl: "AR", seq: 8, ack: 4},
	})
	b.Close()
	if len(l.heads) != 3 {
		t.Fatalf("%d heads", len(l.heads))
	}
	if h := l.heads[1]; h.Client != short.c || h.EndedBefore != 0 {
		t.Errorf("second head %+v", h)
	}
	if h := l.heads[2]; h.Client != third.c || h.EndedBefore != 1 {
		t.Errorf("third head %+v, want EndedBefore 1", h)
	}
	ev := l.take()
	for _, want := range []string{"end 1 seq 0 client-rst", "end 0 seq 1 client-rst", "end 2 seq 2 capture-end"} {
		if !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}
	// The short session's Head names the long one as a peer: the same
	// client host had received 3 server bytes on it.
	if got := l.heads[1].Peers; !slices.Equal(got, []Peer{{ID: 0, ServerBytes: 3}}) {
		t.Errorf("peers of the second session: %+v", got)
	}
	if got := l.heads[2].Peers; len(got) != 0 {
		t.Errorf("another host's session has peers %+v", got)
	}
}

// On a live capture a segment with PSH ends a write: its chunk is handed on
// at once. Without PSH, capture time passing the merge window seals it,
// also on a quiet wire (Advance). Files keep the complete-session model's
// cut (TestCollectGolden).
func TestStreamLiveSealing(t *testing.T) {
	l := newLogSink(t)
	b := NewBuilder(Config{Live: true}, l)
	tp := []tuple{defaultTuple}
	feedSteps(b, tp, []step{
		{ms: 0, dir: 'c', fl: "S"},
		{ms: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 2, dir: 'c', fl: "AP", seq: 1, ack: 1, data: "PING\n"},
	})
	if got, want := l.take(), "begin 0\nchunk 0 \"PING\\n\""; got != want {
		t.Fatalf("PSH: %q, want %q", got, want)
	}
	feedSteps(b, tp, []step{{ms: 3, dir: 'c', fl: "A", seq: 6, ack: 1, data: "PART"}})
	if got := l.take(); got != "" {
		t.Fatalf("a segment without PSH was handed on at once: %q", got)
	}
	b.Advance(t0.Add(3*time.Millisecond + DefaultMergeWindow/2))
	if got := l.take(); got != "" {
		t.Fatalf("sealed inside its merge window: %q", got)
	}
	b.Advance(t0.Add(3*time.Millisecond + 2*DefaultMergeWindow))
	if got, want := l.take(), `chunk 0 "PART"`; got != want {
		t.Fatalf("after the merge window on a quiet wire: %q, want %q", got, want)
	}
	// An idle live connection is not cut by default... unless asked.
	b.Advance(t0.Add(10 * time.Hour))
	if got := l.take(); got != "" {
		t.Fatalf("an idle live connection ended: %q", got)
	}
	b2 := NewBuilder(Config{Live: true, IdleTimeout: time.Minute}, newLogSink(t))
	feedSteps(b2, tp, []step{{ms: 0, dir: 'c', fl: "S"}})
	b2.Advance(t0.Add(2 * time.Minute))
	if st := b2.Stats(); st.Sessions != 1 || st.Open != 0 {
		t.Fatalf("with --idle-timeout 1m, after 2 quiet minutes: %+v", st)
	}
}

// Streaming events rebuilt with Collect give the same sessions as the
// events replayed from a complete session with Play.
func TestPlayRoundTrip(t *testing.T) {
	for i := range 300 {
		var direct, replayed []*Session
		cfg, pkts := fuzzPackets(goldenFuzzInput(i))
		b := NewBuilder(cfg, Collect(func(s *Session) { direct = append(direct, s) }))
		for j := range pkts {
			b.Add(&pkts[j])
		}
		b.Close()
		sink := Collect(func(s *Session) { replayed = append(replayed, s) })
		for _, s := range direct {
			s.Play(sink)
		}
		h1, h2 := sha(direct), sha(replayed)
		if h1 != h2 {
			t.Fatalf("input %d: Play then Collect changed the sessions", i)
		}
	}
}

func sha(ss []*Session) string {
	h := newDigest()
	digestSessions(h, ss)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// timedSink records ServerAt: a TimedFeed gets the capture time of each
// server segment (from the session's first packet), never Server.
type timedSink struct{ at []string }

type timedFeed struct{ s *timedSink }

func (s *timedSink) Begin(*Head) Feed  { return timedFeed{s} }
func (timedFeed) Chunk(Chunk)          {}
func (timedFeed) Hole(Hole)            {}
func (timedFeed) End(*Tail)            {}
func (timedFeed) Server(int64, []byte) { panic("Server called on a TimedFeed") }
func (f timedFeed) ServerAt(off int64, data []byte, at time.Duration) {
	f.s.at = append(f.s.at, fmt.Sprintf("%d %q %v", off, data, at))
}

func TestTimedFeed(t *testing.T) {
	s := &timedSink{}
	b := NewBuilder(Config{}, s)
	feedSteps(b, []tuple{defaultTuple}, []step{
		{ms: 0, dir: 'c', fl: "S"},
		{ms: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 2, dir: 'c', fl: "AP", seq: 1, ack: 1, data: "GET /1\n"},
		{ms: 7, dir: 's', fl: "AP", seq: 1, ack: 8, data: "one\n"},
		{ms: 9, dir: 's', fl: "AP", seq: 5, ack: 8, data: "more\n"},
		{ms: 10, dir: 'c', fl: "AF", seq: 8, ack: 10},
		{ms: 11, dir: 's', fl: "AF", seq: 10, ack: 9},
	})
	b.Close()
	if got, want := strings.Join(s.at, "|"), `0 "one\n" 7ms|4 "more\n" 9ms`; got != want {
		t.Errorf("ServerAt: %s, want %s", got, want)
	}
}
