// Package intercept is the response side of a replay: it follows every
// replayed session through replay.Observer, compares what the target answered
// with what the captured server had sent, and produces the report.
//
// intercept does not know how packets got there (netstack, kernel sockets or
// an in-memory pair): the replay engine drains each connection and hands the
// bytes over. It must not import gVisor, the TUN or the netstack.
//
// # Main types
//
//   - Recorder implements replay.Observer. Each session's answer is compared
//     byte by byte with the captured server stream as it arrives (no
//     recording needed for that), and classified (Match): identical,
//     volatile (differs only in volatile HTTP header values such as Date),
//     same-length, different, missing, not-comparable (the capture has holes
//     or was cut), not-replayed (never connected). For the volatile check the
//     answer to a captured HTTP response is kept up to the captured length
//     plus a few KiB (Options.RecordLimit), then both sides are normalised.
//   - Report (Recorder.Report) holds the replay's Summary, Totals and one
//     small row per session (Options.MaxRows bounds them); WriteJSON writes
//     the versioned JSON ({"version": 1, ...}); fields are only ever added.
//
// # Concurrency
//
// Begin and Report are safe for concurrent use. A session's Received and
// Done are called one after the other by the engine (replay.SessionObserver's
// contract), so per-session state needs no lock; Done takes the Recorder's
// lock once to add the row. After Done nothing of the captured session is
// kept: memory follows the sessions in flight plus the rows.
package intercept
