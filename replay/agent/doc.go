// Package agent receives captures from capture agents over TCP
// ("PCAP-over-IP": tcpdump -U --immediate-mode -w - | nc replayer 57012) and merges them,
// in timestamp order, into one capture.Source for one replay.
//
// What it owns:
//   - Merger: a capture.Source fed by any number of agents, each a pcap or
//     pcapng stream (plain, gzip or zstd: capture.NewSource reads them).
//     Frames are merged by capture timestamp through a bounded reordering
//     window (see Options.Window); frames are renumbered in merged order
//     and keep their own link type.
//   - Listen: accepts agents on an address (Options.Allow limits the peers,
//     Options.MaxAgents how many at once). Dial: connects to one agent that
//     serves a stream (nc -l -p PORT).
//   - Stats: per agent (connected, frames, late frames, stalls, how it
//     ended) and in all.
//
// The reordering window. A frame waits in the merge until one of:
//   - every other connected agent has a frame waiting too (then no agent
//     can still send an earlier one, as each agent's own frames come in
//     time order): with one agent, or agents that all send, nothing waits;
//   - it has waited Options.Window (250 ms by default) since it arrived:
//     an idle or stalled agent delays the others by at most that much;
//   - its agent's buffer is full (Options.AgentBuffer): the merge moves
//     on rather than hold more.
//
// The earliest waiting frame goes out first. A frame that arrives after a
// later one has gone out (an agent whose clock is behind by more than the
// window, one that connects late with older frames, a full buffer) is
// late: it is still delivered, with its timestamp raised to the last one
// delivered so that capture time never goes back, and counted
// (Stats.Late, per agent). Nothing is dropped by the merge.
//
// Bounds per peer: at most MaxAgents connections at once (more are closed
// at once and counted as refused), AgentBuffer bytes of frames waiting in
// the merge per agent (its reader then stops reading, which backs the TCP
// connection up to the agent), SnapLen bytes of each frame (the rest is cut
// and counted; Frame.Len keeps the wire length). The capture reader under
// each agent holds one record at most (16 MiB, capture's bound) and, for a
// zstd stream, the decoder's window (at most 128 MiB).
//
// What it must not know: sessions, the replay, the network stack.
//
// Concurrency: one goroutine per agent reads its stream (started by the
// Merger, ended when the stream ends, fails, or Close closes its
// connection), and Listen's accept loop (ended by Close). ReadFrame and
// SetReadDeadline are called by one goroutine; Close and Stats may be
// called from any goroutine, also while ReadFrame waits: after Close,
// ReadFrame delivers the frames still waiting, then io.EOF. Close is
// idempotent; it waits (up to a second) for the readers to end, so that
// Stats then says how each agent ended.
package agent
