// Package replay drives captured TCP sessions against a target: it schedules
// them (speed, causal order, rate, concurrency), maps their client addresses,
// dials through a Dialer, writes each client chunk when it is due, drains
// everything the target answers, closes as captured, and sums it all up.
//
// Reading captures and rebuilding sessions live in the subpackages capture and
// session; this package only consumes *session.Session values. It must not
// know about gVisor or the TUN: connections come from a Dialer (the netstack
// over the TUN, kernel sockets with SocketDialer, an in-memory pair in tests).
//
// # Main types
//
//   - Runner (New, Run, Summary) and the one-shot Run function; Config.
//   - Dialer: the consumer-owned seam to the network; SocketDialer for
//     --via socket.
//   - Observer / SessionObserver: what intercept implements to record and
//     compare the target's answers; SessionInfo and Result describe a session.
//   - Clock / Timer: every wait goes through it, so tests use a fake clock;
//     PreciseClock (timerfd) is the default, SystemClock the runtime's.
//   - Summary: the counters, lateness percentiles, JSON and text forms.
//
// # Scheduling
//
// A session is a list of client chunks, each with a captured offset and the
// number of server bytes the client had received before it (session.Chunk). The replay of
// one session:
//
//  1. waits until every session that had ended before it began in the
//     capture (ID < EndedBefore) has ended in the replay — at every speed,
//     while sessions that overlapped may overlap (Config.NoCausalOrder drops
//     this for pure load);
//  2. waits for its start time (run start + StartOffset/Speed; no wait at
//     speed max), a rate slot (Config.Rate) and a concurrency slot
//     (Config.MaxSessions);
//  3. dials from its mapped client address (see addrmap.go for the scheme:
//     deterministic per RunID, rotating between runs and passes, never the
//     same 4-tuple twice within a Runner until 64512 ports × the range are
//     used);
//  4. writes each chunk when its scaled time has come (dial time +
//     Offset/Speed) and the target has sent ServerBytesBefore bytes — or,
//     having answered part of the turn, has been quiet for QuietTimeout (soft
//     deviation: a shorter answer), or answered nothing for TurnTimeout (hard
//     deviation);
//  5. at its scaled end, waits the same way for the rest of the captured
//     server stream and closes as captured: client FIN → CloseWrite and drain
//     until the target closes (CloseTimeout); client RST → Abort; server
//     FIN/RST → wait for the target to close (CloseTimeout), else close;
//     capture end → Close.
//
// Pipelined chunks (no server bytes between them) go back to back. Nothing
// polls: on a PollConn (the netstack's conns) the owner itself reads
// whenever it waits — for a turn, a start time, room in the send buffer, the
// close — woken by the conn's readiness channel; on other conns (kernel
// sockets) a reader goroutine signals the owner through a channel when a
// turn's byte count is reached. Every deadline is one Clock timer. Chunk
// lateness (due → written) and start lateness are kept in histograms.
//
// # Concurrency and shutdown
//
// Run owns every goroutine it starts: one per pending session (the owner,
// which writes and closes) plus, for conns that are not PollConns, one
// reader per connection, all ended before
// Run returns. Memory is bounded by MaxPending sessions: the producer of the
// channel blocks meanwhile. On ctx cancellation Run stops reading and
// admitting, aborts sessions in flight with an RST (their context ends, which
// aborts the conn and unblocks reads and writes), and returns ctx's error with
// the summary intact. SessionTimeout aborts one session that overruns its
// scaled captured duration; Run never waits for anything else, so it returns
// the moment the last session is done. Observer methods are called from
// session goroutines (see Observer's contract). Summary may be called
// concurrently with Run (progress line).
package replay
