package session

import "time"

// LimitServer returns a Sink that passes every event on to next but keeps
// at most limit bytes of each session's server stream (none when limit is
// negative), as Config.ServerDataLimit does in the Builder; a session cut
// ends with Truncated and ServerCut set.
//
// It is for a Sink that must see the whole server stream before the
// limit applies: tlssession decrypts the server's records and translates
// ServerBytesBefore through all of them, so the Builder before it keeps
// everything and the limit applies to the plaintext after it.
func LimitServer(next Sink, limit int64) Sink {
	return limiter{next, limit}
}

type limiter struct {
	next  Sink
	limit int64
}

func (l limiter) Begin(h *Head) Feed {
	f := l.next.Begin(h)
	if f == nil {
		return nil
	}
	return &limitFeed{next: f, room: l.limit}
}

type limitFeed struct {
	next Feed
	room int64 // bytes that may still pass; < 0: none
	cut  bool
}

func (f *limitFeed) Chunk(c Chunk) { f.next.Chunk(c) }
func (f *limitFeed) Hole(h Hole)   { f.next.Hole(h) }

func (f *limitFeed) Server(off int64, data []byte) { f.ServerAt(off, data, -1) }

// ServerAt passes the capture time on where next wants it (at < 0: not
// known, Server was called).
func (f *limitFeed) ServerAt(off int64, data []byte, at time.Duration) {
	if int64(len(data)) > f.room {
		f.cut = true
		data = data[:max(f.room, 0)]
	}
	if len(data) == 0 {
		return
	}
	f.room -= int64(len(data))
	if tf, ok := f.next.(TimedFeed); ok && at >= 0 {
		tf.ServerAt(off, data, at)
		return
	}
	f.next.Server(off, data)
}

func (f *limitFeed) End(t *Tail) {
	if f.cut {
		tt := *t
		tt.Flags |= Truncated | ServerCut
		t = &tt
	}
	f.next.End(t)
}
