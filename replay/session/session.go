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
	// included) the client had received when it sent this chunk: the server
	// bytes its segment acknowledged (for a segment without ACK, such as
	// data on a SYN, the server bytes captured before it). The replay waits
	// for the target to have sent as many before it writes the chunk.
	//
	// The acknowledgment, not capture order, is the dependency: in a
	// capture taken at the server, the answer to a first pipelined request
	// can appear before the second request although the client sent both
	// together; the ACK field says what the client had really seen. It
	// never decreases from one chunk to the next.
	ServerBytesBefore int64
	// StreamOffset is the client stream offset (sequence space from the
	// session's first client byte, holes included) of Data[0]. A chunk never
	// spans a hole: where StreamOffset jumps past the previous chunk's end,
	// Session.Holes names the bytes that were never captured.
	StreamOffset int64
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
	// ServerFirst: the server spoke before the client (SMTP, MySQL greeting):
	// the first chunk waits for server bytes. Never set on partial sessions,
	// whose earlier server bytes answered requests that were not captured.
	ServerFirst
	// SnapLen: some segments were cut by the capture's snap length; their
	// missing bytes are holes. Always set together with Truncated.
	SnapLen
	// ServerCut: ServerData holds only the first Config.ServerDataLimit
	// bytes of the server stream. Always set together with Truncated.
	ServerCut
)

// String lists the set flags, comma-separated ("partial,holes"), or "-"
// when none is set.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var b []byte
	for i, name := range flagNames {
		if f&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, name...)
		}
	}
	return string(b)
}

// Names lists the set flags in the same order and spelling as String.
func (f Flags) Names() []string {
	names := []string{}
	for i, name := range flagNames {
		if f&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	return names
}

var flagNames = [...]string{"partial", "holes", "truncated", "server-first", "snaplen", "server-cut"}

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
	// ISN is the client's initial sequence number: client stream offset 0
	// is ISN+1. For a partial session it is one less than the sequence
	// number of the first client byte seen.
	ISN uint32
	// ServerISN is the server's initial sequence number. Like ISN, it is
	// chosen so that server stream offset 0 is ServerISN+1, also when the
	// SYN-ACK was not captured; 0 when no server sequence number was seen.
	ServerISN uint32

	// Start is the capture time of the session's first packet (for a
	// partial session: of its first client payload); StartOffset is the
	// same measured from the first packet of the whole capture.
	Start       time.Time
	StartOffset time.Duration
	// Duration is from the first to the last packet of the session.
	Duration time.Duration

	Chunks      []Chunk
	ClientBytes int64 // client payload bytes by sequence space (holes included)

	// ServerData is the captured server byte stream, up to the builder's
	// limit (holes are not filled: see Holes). ServerBytes is the whole
	// length by sequence space.
	//
	// Holes are skipped, not zero-filled: ServerData is the captured bytes
	// back to back, so it is shorter than ServerBytes when the server stream
	// has holes. ServerSegments maps it back to stream offsets.
	ServerData  []byte
	ServerBytes int64
	// ServerBytesAfterClose is, for a session the client closed
	// (EndClientFIN, EndClientRST), how many of the ServerBytes the client
	// had not yet received when it closed: the server sent them after the
	// client's FIN (a half-close). The replay closes once the target has
	// sent ServerBytes-ServerBytesAfterClose and drains the rest after its
	// FIN. Zero for every other end.
	ServerBytesAfterClose int64

	End   End
	Flags Flags
	Holes []Hole
}

// ServerSegments calls fn for each contiguous captured run of ServerData
// with the run's server stream offset, in stream order, using the server
// holes in s.Holes to place the runs. data aliases ServerData.
func (s *Session) ServerSegments(fn func(offset int64, data []byte)) {
	var pos int64 // stream offset of ServerData[i]
	i := 0
	for _, h := range s.Holes {
		if !h.Server || i >= len(s.ServerData) {
			continue
		}
		if n := h.Offset - pos; n > 0 {
			n = min(n, int64(len(s.ServerData)-i))
			fn(pos, s.ServerData[i:i+int(n)])
			i += int(n)
		}
		pos = h.Offset + h.Len
	}
	if i < len(s.ServerData) {
		fn(pos, s.ServerData[i:])
	}
}
