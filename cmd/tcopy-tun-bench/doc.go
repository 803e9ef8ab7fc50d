// Command tcopy-tun-bench is `make bench`: it measures tcopy-tun against its
// kernel-socket baseline on this host, in one command.
//
// It creates a network namespace (tcopybench-<pid>), starts its own
// HTTP/1.1 target in it (`tcopy-tun-bench serve`: keep-alive, pipelining,
// Connection: close, every core), generates each workload's capture with
// replay/replaytest (Conv and the pcap writer, streamed, in a temporary
// directory), and replays it with the built tcopy-tun at --speed max twice:
// through the TUN and the in-process netstack (--via tun) and through
// kernel sockets (--via socket). Each replay is a child process inside the
// namespace; its CPU time and peak RSS come from wait4's rusage, sessions
// and bytes from its --report JSON, requests and the bytes that arrived
// from the target's own counters (checked against the capture's client
// bytes). It prints a table and issue 5's targets, and writes JSON
// (out/bench.json).
//
// Workloads: short (10,000 Connection: close sessions) with and without
// causal order, keepalive (200 × 50), pipelined (200 × 50, 10 deep), bulk
// (4 sessions × 256 MiB each way), upload (one connection that POSTs
// 384 MiB and gets a short answer: the replayer's peak RSS on one large
// client stream), timing (a light keep-alive load at --speed 1: chunk
// lateness against the schedule), tls-short and tls-keepalive (TLS 1.3,
// see below), live and million (1,000,000 short sessions: the memory
// bound). -workloads selects, -quick shrinks them all (upload to 32 MiB).
//
// The TLS workloads (tlsgen.go, tlscost.go) speak their sessions through
// crypto/tls in this process, over an in-memory pipe whose writes become
// the captured segments, and write the client's key log beside the
// capture. They replay with --tls-keylog and --target-ca against a second
// target (`serve -tls-cert -tls-key`, the same answers over HTTPS); then
// the plaintext twin capture and the TLS capture with --target-tls off
// are replayed through the TUN to the plaintext target, so that the table
// shows tcopy-tun's CPU per session for plaintext, for decrypting, and
// for the new handshakes (issue 12: decrypting must not dominate).
//
// live is issue 13's capacity: the highest rate of short sessions that
// live copy follows on this machine, with the load on the same cores. A
// source server (`serve -think 1ms` on a dummy interface's address) is
// loaded by `tcopy-tun-bench load` (sessions of the short capture's shape
// from 1,000 local client addresses, at a fixed rate, bounded in count and
// time) while `tcopy-tun --live lo` copies them to the target, through each
// path. The rate doubles from 1,000/s until a step does not follow (kernel
// drops, a session not replayed ok, live lag p99 past 500 ms, or a load
// that could not reach the rate), then two bisection steps narrow it; each
// step is printed and kept in the JSON. The highest rate followed is set
// beside the short workload's offline rate (taken from this run, or
// replayed here when short is not selected), with tcopy-tun's CPU per
// session in both. live.go is the search (pure, unit-tested), liverun.go
// runs the steps, load.go is the generator.
//
// What it must not do: send traffic outside its namespace, leave state
// behind. The namespace is deleted and the captures removed on every exit
// path, including SIGINT/SIGTERM; children get SIGKILL if the harness dies
// (Pdeathsig), and a namespace left by a killed run is deleted by the next.
// Every wait is bounded (-run-timeout per replay, 5–15 s for shutdowns).
//
// It imports replay/replaytest, a test-support package, on purpose: the
// bench's captures must be built by the same code the tests trust. The
// target's answers follow httpwire.go, so replayed answers compare as
// identical to the captured ones.
package main
