// Package replay drives captured TCP sessions against a target: it schedules
// them (speed, causal order, rate, concurrency), maps their client addresses,
// dials through a Dialer, writes each client chunk when it is due, drains
// everything the target answers, closes as captured, and sums it all up.
//
// Reading captures and rebuilding sessions live in the subpackages capture and
// session; this package is the session builder's Sink (session.Sink): a
// session reaches it when it starts in the capture, its chunks and end
// follow as the capture is read (Runner.Stream; Runner.Run replays complete
// *session.Session values through session.Session.Play). It must not
// know about gVisor or the TUN: connections come from a Dialer (the netstack
// over the TUN, kernel sockets with SocketDialer, an in-memory pair in tests).
//
// # Main types
//
//   - Runner (New, Stream, Run, Summary) and the one-shot Run function;
//     Config. feed.go: the per-session queue between the builder and the
//     session's copies, and the backpressure rules.
//   - Dialer: the consumer-owned seam to the network; SocketDialer for
//     --via socket.
//   - Observer / SessionObserver: what intercept implements to record and
//     compare the target's answers; SessionInfo and Result describe a session.
//     A TimedObserver also sees each chunk as written (Sent) and the time
//     of every piece, captured (the capture's timestamps, from the
//     builder's TimedFeed) and received: the per-request comparison and its
//     response times.
//   - Config.Baseline: every copy of every session has a twin replayed to
//     a second target (the known-good build) with the same schedule and
//     its own client address (copies Multiply.. of a session; SessionInfo
//     marks them Baseline), each in its own causal order.
//   - Clock / Timer: every wait goes through it, so tests use a fake clock;
//     PreciseClock (timerfd) is the default, SystemClock the runtime's.
//   - Summary: the counters, lateness percentiles, JSON and text forms.
//     Bytes, chunks and deviations count as they happen, so a snapshot
//     shows a session that runs for days while it runs.
//   - Metrics: the timings as they are measured, for an exporter with
//     histograms of its own (replay/metrics); nil costs a comparison.
//
// # Scheduling
//
// A session is a list of client chunks, each with a captured offset and the
// number of server bytes the client had received before it (session.Chunk). The replay of
// one session:
//
//  1. waits until every session that had ended before it began in the
//     capture (Tail.EndSeq < Head.EndedBefore) has ended in the replay, and
//     until the same client host's connections that were open then
//     (Head.Peers) have received as many server bytes as they had, or ended,
//     or made no progress for TurnTimeout — at every speed, while sessions
//     that overlapped may overlap (Config.NoCausalOrder drops both for pure
//     load);
//  2. waits for its start time (run start + StartOffset/Speed; no wait at
//     speed max), a rate slot (Config.Rate) and a concurrency slot
//     (Config.MaxSessions);
//  3. dials from its mapped client address (see addrmap.go for the scheme:
//     deterministic per RunID, rotating between runs and passes, never the
//     same 4-tuple twice within a Runner until 64512 ports × the range are
//     used);
//  4. takes each chunk from its feed as the capture delivers it and writes
//     it when its scaled time has come (dial time +
//     Offset/Speed) and the target has sent ServerBytesBefore bytes — or,
//     having answered part of the turn, has been quiet for QuietTimeout (soft
//     deviation: a shorter answer), or answered nothing for TurnTimeout (hard
//     deviation);
//  5. once the capture has ended the session (its Tail), at its scaled end,
//     waits the same way for the rest of the captured
//     server stream and closes as captured: client FIN → CloseWrite and drain
//     until the target closes (CloseTimeout); client RST → Abort; server
//     FIN/RST → wait for the target to close (CloseTimeout), else close;
//     capture end → Close.
//
// Pipelined chunks (no server bytes between them) go back to back. Nothing
// polls: the owner itself reads whenever it waits — for the capture, a turn,
// a start time, room in the send buffer, the close — woken by the conn's
// readiness channel. The netstack's conns are PollConns; other conns
// (kernel sockets) are adapted at the edge (pollconn.go: a reader goroutine
// fills a bounded queue), so there is one owner loop. Every deadline is one
// Clock timer. Chunk lateness (due → written), start lateness and, for live
// input, the lag from capture to write are kept in histograms.
//
// # Concurrency and shutdown
//
// Stream owns every goroutine it starts: one per pending session copy (the
// owner, which writes and closes) plus, for conns that are not PollConns,
// one reader per connection (pollAdapter), all ended before it returns.
// Memory follows what is in flight: the builder's calls block where that
// cannot deadlock (feed.go), sessions that cannot start are shed past
// Config.Budget, and live input drops past Config.Window instead of
// blocking. On ctx cancellation Stream stops reading and
// admitting, aborts sessions in flight with an RST (their context ends, which
// aborts the conn and unblocks reads and writes), and returns ctx's error with
// the summary intact. SessionTimeout aborts one session that overruns its
// scaled captured duration (armed once the capture has ended it: before
// that it waits for the capture, and each wait for the target has its turn
// timeout); Stream never waits for anything else, so it returns
// the moment the last session is done. Observer methods are called from
// session goroutines (see Observer's contract). Summary may be called
// concurrently with Run (progress line).
package replay
