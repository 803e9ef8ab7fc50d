package session

import (
	"net/netip"
	"time"
)

// Chunk is one piece of the client's byte stream as the client sent it.
type Chunk struct {
	// Offset is when the chunk was sent, measured from the session's start
	// (its first packet).
	Offset time.Duration
	// Data are the bytes, reassembled and deduplicated. Never empty.
	Data []byte
	// ServerBytesBefore is how many server bytes (by sequence space, holes
	// included) had been captured before this chunk was sent: the replay
	// waits for the target to have sent as many before it writes the chunk.
	// It never decreases from one chunk to the next.
	ServerBytesBefore int64
}

// End says how a session ended in the capture.
type End uint8

const (
	EndCaptureEnd End = iota // the capture ended (or the session went idle) while it was open
	EndClientFIN             // the client closed first with FIN
	EndClientRST             // the client reset the connection
	EndServerFIN             // the server closed first with FIN
	EndServerRST             // the server reset the connection
)

func (e End) String() string {
	switch e {
	case EndClientFIN:
		return "client-fin"
	case EndClientRST:
		return "client-rst"
	case EndServerFIN:
		return "server-fin"
	case EndServerRST:
		return "server-rst"
	}
	return "capture-end"
}

// Flags are quality marks on a session.
type Flags uint8

const (
	// Partial: no handshake was captured; the session starts at the first
	// client payload seen.
	Partial Flags = 1 << iota
	// Holes: at least one direction has bytes that were never captured.
	Holes
	// Truncated: frames were cut by the snap length, or the server stream
	// was longer than the configured limit and was not kept whole.
	Truncated
	// ServerFirst: the server spoke before the client (SMTP, MySQL greeting).
	ServerFirst
)

// Hole is a range of a stream that was not captured.
type Hole struct {
	Server bool  // server→client direction (else client→server)
	Offset int64 // stream offset of the first missing byte
	Len    int64
}

// Session is one TCP connection to a replayed server, rebuilt from a capture.
type Session struct {
	// ID numbers sessions in the order the builder emitted them (from 0).
	// Emission order is the order in which sessions ended in the capture.
	ID uint64
	// EndedBefore is how many sessions had been emitted (that is, had ended in
	// the capture) before this session's first packet: sessions 0 ..
	// EndedBefore-1 must have ended in the replay before this one starts.
	EndedBefore uint64

	Client, Server netip.AddrPort
	ISN            uint32 // client's initial sequence number (first seen, for partial sessions)

	// Start is the capture time of the session's first packet; StartOffset is
	// the same measured from the first packet of the whole capture.
	Start       time.Time
	StartOffset time.Duration
	// Duration is from the first to the last packet of the session.
	Duration time.Duration

	Chunks      []Chunk
	ClientBytes int64 // client payload bytes by sequence space (holes included)

	// ServerData is the captured server byte stream, up to the builder's
	// limit (holes are not filled: see Holes). ServerBytes is the whole
	// length by sequence space.
	ServerData  []byte
	ServerBytes int64

	End   End
	Flags Flags
	Holes []Hole
}
