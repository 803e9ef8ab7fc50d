package replay

import "time"

// Metrics receives the engine's timings as it measures them, for an
// exporter that keeps distributions of its own (Prometheus histograms with
// their own buckets). The counters an exporter also wants are in
// Runner.Summary, which may be read at any time; so are these timings, as
// quantiles.
//
// The methods are called concurrently from the sessions' goroutines, on the
// path of every session start and chunk write: they must be quick and must
// not block. A nil Config.Metrics costs one comparison per chunk.
type Metrics interface {
	// SessionStarted: a session copy is about to be dialed, late after
	// it became due (Summary.StartLateness).
	SessionStarted(late time.Duration)
	// ChunkWritten: a client chunk is being written, late after it was due
	// (Summary.ChunkLateness); lag is how long after its capture
	// (Summary.LiveLag) for live input, negative otherwise.
	ChunkWritten(late, lag time.Duration)
}
