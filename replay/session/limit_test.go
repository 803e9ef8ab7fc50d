package session

import (
	"testing"
	"time"
)

// TestLimitServer: the server stream is cut at the limit across calls, the
// rest of the events pass unchanged, the capture times reach a TimedFeed,
// and a cut session ends flagged; a negative limit keeps nothing.
func TestLimitServer(t *testing.T) {
	for _, c := range []struct {
		limit int64
		want  string
		cut   bool
	}{
		{10, "abcdefghij", true},
		{12, "abcdefghijkl", false},
		{100, "abcdefghijkl", false},
		{0, "", true},
		{-1, "", true},
	} {
		var got []*Session
		var times []time.Duration
		sink := LimitServer(limitTimedSink{Collect(func(s *Session) { got = append(got, s) }), &times}, c.limit)
		f := sink.Begin(&Head{})
		f.Chunk(Chunk{Data: []byte("GET")})
		f.(TimedFeed).ServerAt(0, []byte("abcde"), time.Millisecond)
		f.Server(5, []byte("fghijkl"))
		f.Hole(Hole{Server: true, Offset: 12, Len: 3})
		f.End(&Tail{End: EndClientFIN})
		s := got[0]
		if string(s.ServerData) != c.want || len(s.Chunks) != 1 || len(s.Holes) != 1 || s.End != EndClientFIN {
			t.Errorf("limit %d: server %q, %d chunks, %d holes, end %s", c.limit, s.ServerData, len(s.Chunks), len(s.Holes), s.End)
		}
		if cut := s.Flags&(Truncated|ServerCut) == Truncated|ServerCut; cut != c.cut {
			t.Errorf("limit %d: flags %s, want cut %v", c.limit, s.Flags, c.cut)
		}
		if c.limit > 0 && (len(times) == 0 || times[0] != time.Millisecond) {
			t.Errorf("limit %d: capture times %v", c.limit, times)
		}
	}
}

// limitTimedSink is a Collect sink whose feeds note ServerAt's times.
type limitTimedSink struct {
	Sink
	times *[]time.Duration
}

func (s limitTimedSink) Begin(h *Head) Feed { return limitTimedFeed{s.Sink.Begin(h), s.times} }

type limitTimedFeed struct {
	Feed
	times *[]time.Duration
}

func (f limitTimedFeed) ServerAt(off int64, data []byte, at time.Duration) {
	*f.times = append(*f.times, at)
	f.Feed.Server(off, data)
}
