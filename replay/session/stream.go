package session

import (
	"net/netip"
	"time"
)

// Head is what is known of a session when it starts in the capture: at its
// first packet (the SYN), or at its first client byte for a partial session.
// The Builder hands it to Sink.Begin; it is never changed afterwards, so the
// consumer may keep and share it.
type Head struct {
	// ID numbers sessions in the order they started in the capture (from
	// 0, dense).
	ID uint64
	// EndedBefore is how many sessions had ended in the capture (had their
	// Tail) before this one started: every session whose Tail.EndSeq is
	// below it must have ended in the replay before this one starts.
	EndedBefore uint64

	Client, Server netip.AddrPort
	// ISN: client stream offset 0 is ISN+1 (see Session.ISN).
	ISN uint32
	// Start is the capture time of the session's first packet;
	// StartOffset the same from the first packet of the whole capture.
	Start       time.Time
	StartOffset time.Duration
	Partial     bool
	// Peers are the other sessions of the same client host (client IP)
	// that were open when this one started and had received server bytes
	// by then: a client that opens a connection while others are open may
	// depend on what it has received on them (create the schema on one,
	// use it from the others). The replay starts this session once each
	// peer has received as many server bytes (or has ended, or given up
	// on its turn). At most 64 of the host's open sessions are looked at
	// (mostly the most recently started), so that a host with thousands
	// of open connections does not make each start cost as many.
	Peers []Peer
}

// Peer is an open session of the same client host at a Head.
type Peer struct {
	ID          uint64 // the peer's Head.ID
	ServerBytes int64  // server bytes captured for the peer so far (by sequence space)
}

// Tail is what is known of a session when it ends in the capture.
type Tail struct {
	// EndSeq numbers sessions in the order they ended (from 0, dense over
	// every session that had a Head, wanted or not).
	EndSeq   uint64
	End      End
	Duration time.Duration
	// ClientBytes, ServerBytes and ServerBytesAfterClose are as in
	// Session.
	ClientBytes, ServerBytes, ServerBytesAfterClose int64
	ServerISN                                       uint32
	Flags                                           Flags
}

// Sink receives the sessions of a capture as they happen. The Builder
// calls it synchronously, on its own goroutine, in capture order.
type Sink interface {
	// Begin announces a session. It returns the Feed that receives the
	// session's events, or nil when the session is not wanted (it still
	// counts for EndedBefore and EndSeq). h stays valid and unchanged.
	Begin(h *Head) Feed
}

// Feed receives one session's events after Begin: Chunk, Server and Hole in
// stream order (each direction in order; the two directions interleave as
// captured), then End exactly once. A Feed's methods may block (the
// consumer's backpressure): the Builder, and the capture reading behind
// it, waits.
type Feed interface {
	// Chunk hands a sealed chunk: no later segment will merge into it.
	// c.Data is owned by the callee.
	Chunk(c Chunk)
	// Server hands captured server bytes at server stream offset off
	// (holes skipped: see Hole), at most Config.ServerDataLimit bytes in
	// all. data is only valid during the call.
	Server(off int64, data []byte)
	// Hole reports bytes that were not captured. Adjacent holes of one
	// direction may come as several events.
	Hole(h Hole)
	// End is the last call: how and when the session ended.
	End(t *Tail)
}

// TimedFeed is a Feed that also wants to know when the server bytes were
// captured (for the captured server's response times): the Builder calls
// ServerAt instead of Server on a Feed that implements it.
type TimedFeed interface {
	Feed
	// ServerAt is Server with the capture time of the segment that carried
	// data, measured from the session's start (Head.Start).
	ServerAt(off int64, data []byte, at time.Duration)
}

// Collect returns a Sink that rebuilds complete sessions from the events and
// calls emit with each when it ends, in end order, with Session.ID set to
// its EndSeq: the model that inspect, the step tables and the tests use.
// The sessions equal those the Builder emitted before it streamed.
func Collect(emit func(*Session)) Sink {
	return collector(emit)
}

type collector func(*Session)

func (emit collector) Begin(h *Head) Feed {
	s := &Session{
		EndedBefore: h.EndedBefore,
		Client:      h.Client,
		Server:      h.Server,
		ISN:         h.ISN,
		Start:       h.Start,
		StartOffset: h.StartOffset,
	}
	if h.Partial {
		s.Flags |= Partial
	}
	return &collected{s: s, emit: emit, lastHole: [2]int{-1, -1}}
}

type collected struct {
	s        *Session
	emit     collector
	lastHole [2]int // index in s.Holes of each direction's last hole
}

func (c *collected) Chunk(ch Chunk) { c.s.Chunks = append(c.s.Chunks, ch) }

func (c *collected) Server(_ int64, data []byte) {
	if c.s.ServerData == nil {
		// Most answers fit one segment; start at its size.
		c.s.ServerData = make([]byte, 0, len(data))
	}
	c.s.ServerData = append(c.s.ServerData, data...)
}

func (c *collected) Hole(h Hole) {
	s := c.s
	d := cli
	if h.Server {
		d = srv
	}
	if i := c.lastHole[d]; i >= 0 && s.Holes[i].Offset+s.Holes[i].Len == h.Offset {
		s.Holes[i].Len += h.Len
		return
	}
	c.lastHole[d] = len(s.Holes)
	s.Holes = append(s.Holes, h)
}

func (c *collected) End(t *Tail) {
	s := c.s
	s.ID = t.EndSeq
	s.Duration = t.Duration
	s.ClientBytes, s.ServerBytes, s.ServerBytesAfterClose = t.ClientBytes, t.ServerBytes, t.ServerBytesAfterClose
	s.ServerISN = t.ServerISN
	s.End = t.End
	s.Flags = t.Flags
	c.s = nil
	c.emit(s)
}

// Head returns the session's Head as the Builder would have announced it
// (ID is the session's ID; no Peers: a complete session does not know
// them).
func (s *Session) Head() *Head {
	return &Head{
		ID: s.ID, EndedBefore: s.EndedBefore,
		Client: s.Client, Server: s.Server, ISN: s.ISN,
		Start: s.Start, StartOffset: s.StartOffset,
		Partial: s.Flags&Partial != 0,
	}
}

// Tail returns the session's Tail (EndSeq is the session's ID).
func (s *Session) Tail() *Tail {
	return &Tail{
		EndSeq: s.ID, End: s.End, Duration: s.Duration,
		ClientBytes: s.ClientBytes, ServerBytes: s.ServerBytes, ServerBytesAfterClose: s.ServerBytesAfterClose,
		ServerISN: s.ServerISN, Flags: s.Flags,
	}
}

// Play hands a complete session to sink as the events the Builder would
// have produced: Begin, its chunks (their Data slices are the session's
// own: the callee must not modify them), its server bytes and holes, End.
// Replaying complete sessions and testing consumers go through it.
func (s *Session) Play(sink Sink) {
	f := sink.Begin(s.Head())
	if f == nil {
		return
	}
	for _, h := range s.Holes {
		f.Hole(h)
	}
	s.ServerSegments(f.Server)
	for _, c := range s.Chunks {
		f.Chunk(c)
	}
	f.End(s.Tail())
}
