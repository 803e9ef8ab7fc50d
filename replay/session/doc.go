// Package session rebuilds replayable TCP sessions from decoded segments:
// per-connection reassembly of both directions, the client stream cut into
// chunks that carry their timing and their dependency on server bytes, the
// server stream kept for comparison, and how each session ended.
//
// It owns the session model (Session, Chunk, Hole, End, Flags), the
// Builder, the protocol guess used by `tcopy-tun inspect`, and Build, which
// drives a Builder from a capture.Reader. It is pure: no I/O besides the
// reader it is handed, no privileges, no clock (all times are capture
// times). It must not know about gVisor, TUN devices, sockets or the
// replay's scheduling.
//
// # Sessions
//
// A session is one TCP connection, identified by its 4-tuple and the
// client's initial sequence number: a new SYN with another ISN on a 4-tuple
// starts a new session, even while the old connection is open or lingering
// in TIME_WAIT. The client is the side that sent the SYN (or received the
// SYN-ACK). Without a handshake the server is inferred (Config.Servers,
// Config.Keep, endpoints seen listening earlier, then ports: see
// serviceSide); such sessions are Partial and start at the first client
// payload, and server bytes before it are not part of them (they answer
// requests that were not captured).
//
// # Reassembly rules
//
//   - Bytes are placed by sequence number modulo 2^32, so streams that wrap
//     work; stream offsets are 64-bit.
//   - Retransmissions, duplicates and overlaps: the first copy of a byte
//     that was seen wins, delivered or buffered. Later copies are counted
//     (Stats.DuplicateBytes), never mixed in.
//   - Reordering: segments ahead of a gap wait (copied) until the gap is
//     filled. At most Config.OutOfOrderLimit bytes wait per connection.
//   - Holes: a gap becomes a hole when the peer acknowledges bytes beyond it
//     (the peer received them: the capture missed them, and no
//     retransmission will come), when the buffer limit is reached, or when
//     the session ends. Bytes cut by the snap length (Packet.Missing) are
//     holes at once. Holes are recorded in Session.Holes and never filled:
//     no chunk contains a byte that was not captured.
//   - A hole in the client stream ends the chunk before it; the next chunk
//     starts after it (Chunk.StreamOffset shows the jump) and the session is
//     flagged Holes. The replay sends the bytes around the hole as captured
//     and reports the session as degraded: inventing filler would be worse,
//     and dropping the whole session would lose the rest of it.
//   - Data on a SYN (TCP Fast Open) is the start of the stream.
//
// # Chunks and dependencies
//
// Chunk.ServerBytesBefore is the number of server bytes the client had
// received when it sent the chunk, taken from the ACK field of the segment
// that carried it (by sequence space, so lost server bytes count). That is
// the dependency itself: pipelined requests acknowledge the same server
// bytes and keep equal values even where the capture point saw an answer
// between them. A segment without ACK (data on a SYN) uses the server bytes
// captured so far. Segments delivered together after a gap was filled take
// the smallest time and value of the pieces after them (their original was
// sent first), and both never decrease from chunk to chunk.
//
// Consecutive client segments are merged into one chunk when they are
// contiguous in the stream, carry the same ServerBytesBefore, and were sent
// within Config.MergeWindow of the chunk's first segment: that is one
// application write split into segments. Requests written further apart
// stay separate chunks, each with its own time.
//
// # Streaming
//
// The Builder hands sessions to a Sink as they happen (stream.go): a
// session's Head when it starts (its SYN, or the first client byte of a
// partial one), each chunk once it is sealed, captured server bytes and
// holes as they are reassembled, and its Tail when it ends. A chunk is
// sealed when the next client segment cannot merge into it or a hole
// follows; with Config.Live also at a segment with PSH (it ends a write)
// and once capture time passes its merge window (Add, or Advance on a
// quiet wire). Collect rebuilds the complete sessions from the events;
// without Live they equal, field by field, those of the builder before it
// streamed (TestCollectGolden pins that on every real capture and 3,000
// fuzz inputs). Session.Play turns a complete session back into events.
// A Feed that implements TimedFeed gets ServerAt instead of Server: the
// captured server bytes with their capture time (the captured server's
// response times).
//
// Head.ID numbers sessions in start order, Tail.EndSeq in end order;
// Head.EndedBefore counts the Tails before the Head, which the replay uses
// to keep capture order causal, and Head.Peers lists the same client
// host's open sessions and the server bytes each had received, for the
// finer rule (a connection opened while others are open waits for what
// they had received).
//
// # Ending
//
// A session ends when it is complete in the capture: both FINs seen with
// every byte before them delivered, a reset, a new connection on its
// 4-tuple, no packet for Config.IdleTimeout of capture time (files only, by
// default), or Close. Tail.End is the first closing event seen (client or
// server FIN or RST); sessions still open end as EndCaptureEnd. Collect's
// Session.ID is the EndSeq, as `tcopy-tun inspect` shows it.
//
// # Memory
//
// The Builder holds the connections open at the current point of the
// capture: their client chunks, at most Config.ServerDataLimit server bytes
// and at most Config.OutOfOrderLimit buffered bytes each. Closed
// connections are remembered (about 150 bytes each) for Config.Linger of
// capture time; connections without a packet for Config.IdleTimeout are
// emitted. Stats reports the high-water mark.
//
// # Concurrency and shutdown
//
// A Builder is used by one goroutine. It calls its Sink and Feeds
// synchronously from Add, Advance and Close (they may block: that is the
// consumer's backpressure) and never keeps what it handed over. Close flushes every open session and is idempotent; Add after
// Close panics. Build reads a capture.Reader to its end, then closes the
// builder; it stops at the reader's first error.
package session
