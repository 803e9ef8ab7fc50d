// Package metrics exports a replay's counters and timings as Prometheus
// metrics (--metrics ADDR), every name prefixed tcopy_tun_.
//
// It owns the Prometheus side only: the replay engine (replay), the
// intercept (intercept) and the capture readers (replay/capture) keep their
// own counters and know nothing of Prometheus. An Exporter reads them when
// it is scraped — replay.Runner.Summary, intercept.Recorder.Totals, the
// capture.Stats its Sources were last given and each live source's
// capture.DropCounter — and keeps histograms of the engine's timings,
// which it receives as the replay.Metrics of the run's Config. With
// --metrics off none of this exists: Config.Metrics is nil, and the engine
// counts what it counts anyway for its summary.
//
// # Main types
//
//   - Exporter: the registry, the collector over the current run
//     (Watch), the capture Sources, and replay.Metrics for the timing
//     histograms. Counters never go backwards: when Watch replaces a run,
//     the old run's final counts are kept as a base.
//   - Source: the capture counters of one input (a file, an interface, a
//     capture agent), updated by the goroutine that owns its reader.
//   - Server: the HTTP endpoint. It binds where the user says (127.0.0.1
//     when only a port is given), drops connections from peers outside
//     the allowed prefixes before reading a byte, and bounds what one peer
//     can hold: a few connections at once, header size, read, write and
//     idle timeouts, one scrape in flight at a time per few.
//
// # Concurrency and shutdown
//
// Every method is safe for concurrent use. Server.Close stops the listener
// and waits (briefly) for the requests in flight; the Exporter needs no
// shutdown.
package metrics
