package tlssession

import (
	"sort"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
)

// Stats counts sessions by what became of them.
type Stats struct {
	Sessions int64 // sessions seen
	TLS      int64 // sessions whose client began with a TLS handshake record
	// By the TLS session's final status (tlsdecrypt.Status); Decrypted
	// is StatusDecrypting at the end: every record opened.
	Decrypted, NoKeys, Unsupported, Holes, Failed, NotTLS, Undecided int64
	// Resumed counts the TLS sessions that resumed an earlier one.
	Resumed int64
}

func (s *Stats) add(r tlsdecrypt.Result) {
	switch r.Status {
	case tlsdecrypt.StatusDecrypting:
		s.Decrypted++
	case tlsdecrypt.StatusNoKeys:
		s.NoKeys++
	case tlsdecrypt.StatusUnsupported:
		s.Unsupported++
	case tlsdecrypt.StatusHole:
		s.Holes++
	case tlsdecrypt.StatusFailed:
		s.Failed++
	case tlsdecrypt.StatusNotTLS:
		s.NotTLS++
	default:
		s.Undecided++
	}
	if r.Resumed {
		s.Resumed++
	}
}

// Sink wraps a session.Sink: TLS sessions reach it decrypted.
type Sink struct {
	next  session.Sink
	keys  tlsdecrypt.Keys
	stats Stats
	// OnResult, if set, is called with each TLS session's outcome at its
	// End (for a per-server report).
	OnResult func(h *session.Head, r tlsdecrypt.Result)
	// OnDecided, if set, is called once per session as soon as what it is
	// is known: StatusNotTLS for a session passed through, else the TLS
	// session's status once its ServerHello was read (SNI, ALPN, whether
	// keys were found), or at its End. The replay waits for it to know
	// how to speak to the target.
	OnDecided func(h *session.Head, r tlsdecrypt.Result)
}

var _ session.Sink = (*Sink)(nil)

// New returns a Sink that decrypts TLS sessions with keys and hands every
// session to next.
func New(next session.Sink, keys tlsdecrypt.Keys) *Sink {
	return &Sink{next: next, keys: keys}
}

// Stats returns the counters so far.
func (s *Sink) Stats() Stats { return s.stats }

// Begin implements session.Sink. The session is announced to next at once
// (with the same Head): what the session is becomes known at its first
// client bytes.
func (s *Sink) Begin(h *session.Head) session.Feed {
	s.stats.Sessions++
	next := s.next.Begin(h)
	if next == nil {
		return nil
	}
	return &feed{s: s, h: h, next: next}
}

type mode uint8

const (
	undecided mode = iota
	passthrough
	decrypting
)

// srvRecord is a server record decrypted: the ciphertext stream offset
// where it ended and the plaintext bytes up to its end.
type srvRecord struct{ cipherEnd, plainEnd int64 }

// chunkMark is a client chunk fed: where it began in the ciphertext
// stream, and what it carried along.
type chunkMark struct {
	streamOff int64
	sbb       int64
}

type feed struct {
	s    *Sink
	h    *session.Head
	next session.Feed
	mode mode
	conn *tlsdecrypt.Conn

	// Client side: the chunks fed whose records are not all decrypted
	// yet; out collects the plaintext chunks of the current call.
	marks []chunkMark
	out   []session.Chunk
	// Server side: decrypted records, for ServerBytesBefore.
	srv      []srvRecord
	srvPlain int64 // plaintext server bytes so far
	// lastSBB keeps ServerBytesBefore from decreasing in plaintext too.
	lastSBB int64
	// held are the events before the first client chunk: the Builder
	// hands a client chunk on only when the next one starts, so a TLS
	// server's first answer may come before the ClientHello does.
	held      []heldEvent
	heldBytes int
	told      bool // OnDecided was called
}

// tell calls OnDecided once the session's nature is known (or at its end).
func (f *feed) tell(end bool) {
	if f.told || f.s.OnDecided == nil {
		return
	}
	var r tlsdecrypt.Result
	switch {
	case f.mode == passthrough:
		r.Status = tlsdecrypt.StatusNotTLS
	case f.conn != nil:
		r = f.conn.Result()
		if r.Status == tlsdecrypt.StatusUndecided && !end {
			return
		}
	}
	f.told = true
	f.s.OnDecided(f.h, r)
}

// heldEvent is a server piece (hole nil) or a hole held before the mode is
// known.
type heldEvent struct {
	off  int64
	data []byte
	at   time.Duration
	hole *session.Hole
}

// maxHeld bounds the server bytes held before the first client chunk;
// beyond it the session is passed through (a server that talks that much
// first is not TLS).
const maxHeld = 1 << 16

// decide picks the mode at the session's first client chunk (nil: at its
// end, or when too much was held), then replays what was held.
func (f *feed) decide(firstClient []byte) {
	if len(firstClient) > 0 && firstClient[0] == 0x16 && (len(firstClient) < 2 || firstClient[1] == 3) {
		f.mode = decrypting
		f.s.stats.TLS++
		f.conn = tlsdecrypt.NewConn(f.s.keys, f.piece)
	} else {
		f.mode = passthrough
		f.tell(false)
	}
}

// release replays the held events in the mode decided.
func (f *feed) release() {
	held := f.held
	f.held, f.heldBytes = nil, 0
	for _, e := range held {
		if e.hole != nil {
			f.Hole(*e.hole)
		} else {
			f.server(e.off, e.data, e.at)
		}
	}
}

func (f *feed) Chunk(c session.Chunk) {
	if f.mode == undecided {
		f.decide(c.Data)
		if f.mode == passthrough {
			f.release()
		} else {
			// The ClientHello first, then the server's answer held.
			defer f.release()
		}
	}
	if f.mode == passthrough {
		f.next.Chunk(c)
		return
	}
	if f.conn.Stopped(tlsdecrypt.ClientToServer) {
		// Nothing more will be decrypted: keep nothing (the rest becomes
		// a hole at End).
		return
	}
	f.marks = append(f.marks, chunkMark{c.StreamOffset, c.ServerBytesBefore})
	f.conn.Feed(tlsdecrypt.ClientToServer, c.StreamOffset, f.h.Start.Add(c.Offset), c.Data)
	f.tell(false)
	for _, o := range f.out {
		f.next.Chunk(o)
	}
	f.out = f.out[:0]
}

func (f *feed) Server(off int64, data []byte) { f.server(off, data, -1) }

func (f *feed) ServerAt(off int64, data []byte, at time.Duration) { f.server(off, data, at) }

func (f *feed) server(off int64, data []byte, at time.Duration) {
	if f.mode == undecided {
		f.held = append(f.held, heldEvent{off: off, data: append([]byte(nil), data...), at: at})
		if f.heldBytes += len(data); f.heldBytes > maxHeld {
			f.decide(nil)
			f.release()
		}
		return
	}
	if f.mode == passthrough {
		f.nextServer(off, data, at)
		return
	}
	if f.conn.Stopped(tlsdecrypt.ServerToClient) {
		return
	}
	t := f.h.Start
	if at >= 0 {
		t = t.Add(at)
	}
	f.conn.Feed(tlsdecrypt.ServerToClient, off, t, data)
	f.tell(false)
}

func (f *feed) nextServer(off int64, data []byte, at time.Duration) {
	if tf, ok := f.next.(session.TimedFeed); ok && at >= 0 {
		tf.ServerAt(off, data, at)
		return
	}
	f.next.Server(off, data)
}

// piece receives the decryptor's plaintext.
func (f *feed) piece(p tlsdecrypt.Piece) {
	at := p.Time.Sub(f.h.Start)
	if p.Dir == tlsdecrypt.ServerToClient {
		f.srvPlain = p.Off + int64(len(p.Data))
		if n := len(f.srv); n > 0 && f.srv[n-1].cipherEnd == p.RecordEnd {
			f.srv[n-1].plainEnd = f.srvPlain
		} else {
			f.srv = append(f.srv, srvRecord{p.RecordEnd, f.srvPlain})
		}
		f.nextServer(p.Off, p.Data, at)
		return
	}
	// The chunk that carried the record's first byte says what the
	// client had seen when it began to send it.
	i := sort.Search(len(f.marks), func(i int) bool { return f.marks[i].streamOff > p.RecordOff }) - 1
	sbb := int64(0)
	if i >= 0 {
		sbb = f.marks[i].sbb
		// Marks before it are not needed again: records come in order.
		f.marks = f.marks[i:]
	}
	psbb := max(f.plainBefore(sbb), f.lastSBB)
	f.lastSBB = psbb
	if n := len(f.out); n > 0 && f.out[n-1].Offset == at && f.out[n-1].ServerBytesBefore == psbb &&
		f.out[n-1].StreamOffset+int64(len(f.out[n-1].Data)) == p.Off {
		f.out[n-1].Data = append(f.out[n-1].Data, p.Data...)
		return
	}
	f.out = append(f.out, session.Chunk{Offset: at, Data: p.Data, ServerBytesBefore: psbb, StreamOffset: p.Off})
}

// plainBefore is the plaintext of the server records wholly within the
// first sbb ciphertext bytes. Records below a translated point are
// dropped: ServerBytesBefore never decreases.
func (f *feed) plainBefore(sbb int64) int64 {
	i := sort.Search(len(f.srv), func(i int) bool { return f.srv[i].cipherEnd > sbb }) - 1
	if i < 0 {
		return 0
	}
	v := f.srv[i].plainEnd
	f.srv = f.srv[i:]
	return v
}

func (f *feed) Hole(h session.Hole) {
	if f.mode == undecided {
		f.held = append(f.held, heldEvent{hole: &h})
		return
	}
	if f.mode == passthrough {
		f.next.Hole(h)
		return
	}
	d := tlsdecrypt.ClientToServer
	if h.Server {
		d = tlsdecrypt.ServerToClient
	}
	f.conn.Hole(d, h.Len)
}

func (f *feed) End(t *session.Tail) {
	if f.mode == undecided {
		f.decide(nil)
		f.release()
	}
	if f.mode != decrypting {
		f.next.End(t)
		return
	}
	f.tell(true)
	r := f.conn.Result()
	f.s.stats.add(r)
	if f.s.OnResult != nil {
		f.s.OnResult(f.h, r)
	}
	tt := *t
	// What was not decrypted becomes a hole at the end of each
	// direction's plaintext (its length in ciphertext bytes: an upper
	// bound). A direction that ended with an alert has nothing missing.
	holes := [2]int64{}
	ends := [2]int64{r.Bytes[0], r.Bytes[1]}
	total := [2]int64{t.ClientBytes, t.ServerBytes}
	for d := range holes {
		if r.Ended[d] || r.Status == tlsdecrypt.StatusDecrypting {
			continue
		}
		if n := total[d] - f.decryptedCipher(tlsdecrypt.Dir(d)); n > 0 {
			holes[d] = n
			f.next.Hole(session.Hole{Server: d == 1, Offset: ends[d], Len: n})
		}
	}
	tt.End = plainEnd(t.End, &r)
	tt.ClientBytes = ends[0] + holes[0]
	tt.ServerBytes = ends[1] + holes[1]
	// The server bytes after the client's close, in plaintext: those of
	// the records that ended after the point the close acknowledged.
	if t.ServerBytesAfterClose > 0 {
		tt.ServerBytesAfterClose = max(0, tt.ServerBytes-f.plainBefore(t.ServerBytes-t.ServerBytesAfterClose))
	}
	f.next.End(&tt)
}

// plainEnd is who closed the session first in TLS terms. A client that
// sends close_notify and then waits for the server's close (curl, and most
// TLS libraries) often sees the server's FIN cross its own: the capture
// says server-fin, but the server only closed because the client asked.
// Replayed as server-fin, the replay would wait for a close the target
// never makes (nothing asked it to); replayed as client-fin, it sends
// close_notify and its FIN, as the client did.
func plainEnd(end session.End, r *tlsdecrypt.Result) session.End {
	if end != session.EndServerFIN || !r.ClosedNotify(tlsdecrypt.ClientToServer) {
		return end
	}
	if r.Ended[tlsdecrypt.ServerToClient] && r.AlertTime[tlsdecrypt.ServerToClient].Before(r.AlertTime[tlsdecrypt.ClientToServer]) {
		return end // the server said goodbye first
	}
	return session.EndClientFIN
}

// decryptedCipher is how far the ciphertext of direction d was used.
func (f *feed) decryptedCipher(d tlsdecrypt.Dir) int64 {
	return f.conn.Used(d)
}
