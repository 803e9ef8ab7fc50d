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
//   - Recorder implements replay.Observer. Sessions stream: a session's
//     captured server bytes (Captured) and the target's answer (Received)
//     arrive in any interleaving, and are compared byte by byte as both
//     arrive. Whichever stream is ahead is kept only until the other catches
//     up (at most Options.RecordLimit bytes of lead), so a session's captured
//     stream is never held whole. The target's bytes are copied when kept
//     (Received's buffer is reused); the captured ones are not: the captured
//     side keeps references to the slices Captured handed over (the
//     replay's own copies, which the observer may keep until Done), so an
//     answer that agrees byte for byte costs no copy. A reference pins its
//     whole segment: the captured side references at most RecordLimit bytes
//     and pins at most those plus the unkept rest of the segments at its two
//     ends (less than two segments more). Segments shorter than 64 bytes are
//     the exception: a reference would cost more than they do, so they are
//     copied, consecutive ones into one shared chunk. At Done the session is
//     classified (Match) with the capture's Tail: identical, volatile
//     (differs only in volatile HTTP header values such as Date),
//     same-length, different, missing, not-comparable (the capture has
//     holes, was cut or had not ended, or the lead outgrew the limit),
//     not-replayed (never connected). For the volatile check both answers
//     are kept while the captured one is an HTTP response no longer than
//     RecordLimit (the captured one by reference, the target's only from
//     where it departs from the captured one); only at Done, and only when
//     the answers differ, are they made contiguous and normalised.
//   - PcapWriter writes the replayed traffic as pcapng (--write-pcap): it
//     is the netstack's Tap (a method of the same shape; intercept does
//     not import netstack), copies each packet into a bounded queue (64
//     MiB by default) that one writer goroutine drains into the file, and
//     drops and counts what does not fit, so the data path never waits
//     for the disk (PcapOptions.SnapLen keeps only each packet's first
//     bytes, for bulk traffic). Observe wraps the Recorder so that each connection's
//     SYN carries a comment naming its session (start_id, pass, copy, as
//     the report's rows do). Close writes what is queued, the drop count
//     (an interface statistics block) and flushes; the caller closes the
//     stack that feeds it first.
//   - The per-request comparison (requests.go, verdict.go): through
//     replay.TimedObserver each copy also sees its requests as written
//     and the time of every piece. A tracker cuts the streams into
//     requests and answers (HTTP/1.x and RESP by message, decode.go;
//     other protocols by turn), applies the Rules (--ignore, rules.go)
//     and hands each request on; answers are compared field by field
//     (answer.go) with the reference: the baseline twin's answer
//     (Options.Baseline) or the captured one. Noise (what the baseline's
//     answers differ in from the capture, and from each other for the
//     same request) is learned per route, so regressions are decided in
//     Report. Memory: each stream's undecoded rest (at most RecordLimit;
//     the captured side by reference), requests whose twin has not
//     answered yet, and per route sparse latency histograms and bounded
//     difference groups. The report model is in model.go.
//   - Report (Recorder.Report) holds the replay's Summary, Totals and one
//     small row per session (Options.MaxRows bounds them); WriteJSON writes
//     the versioned JSON ({"version": 1, ...}); fields are only ever added.
//
// # Concurrency
//
// Begin and Report are safe for concurrent use; Report settles the
// per-request verdicts, so it is called once the replay is over. A session's Captured,
// Received and Done are called by one goroutine, one after the other
// (replay.SessionObserver's contract), so per-session state needs no lock;
// Done takes the Recorder's lock once to add the row. After Done nothing of
// the captured session is kept, not even a reference: memory follows the
// sessions in flight (each bounded by RecordLimit) plus the rows.
package intercept
