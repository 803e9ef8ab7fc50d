package replay

import (
	"net/netip"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// Observer watches sessions while the engine replays them; intercept
// implements it to record and compare what the target answered. The engine
// drains every byte the target sends whether or not an Observer is set.
//
// Begin is called once per replayed session copy, after the session was
// admitted (its causal predecessors are done, its start time has come, it
// holds a concurrency slot) and before it is dialed, from the goroutine that
// drives it. Begin is called concurrently for different sessions and must not
// block for long: the session's start waits for it.
type Observer interface {
	// Begin returns the observer for this one session, or nil to observe
	// nothing more of it. info and the session it points to stay valid and
	// unchanged until Done returns; Begin must not modify them.
	Begin(info *SessionInfo) SessionObserver
}

// SessionObserver follows one session. Its methods are called by the
// session's owner goroutine only, never concurrently with each other.
type SessionObserver interface {
	// Captured is called with the captured server bytes at server stream
	// offset off, in stream order (holes skipped), as the capture delivers
	// them: before, while or after the target answers. data is the
	// replay's own copy and is never modified: the observer may keep it
	// (without copying) until Done returns. At most the session builder's
	// ServerDataLimit bytes arrive this way.
	Captured(off int64, data []byte)
	// Received is called with each piece the target sent, in stream order.
	// p is only valid during the call (the buffer is reused). Received runs
	// on the session's receive path: a slow Received slows the target down
	// through TCP flow control.
	Received(p []byte)
	// Done is called exactly once, last, with the session's result, also
	// for sessions whose dial failed. The result is only valid during the
	// call; r.Tail says how the captured session ended (nil when the
	// replay ended before the capture did).
	Done(r *Result)
}

// TimedObserver is a SessionObserver that also follows the requests as
// they are written and the time of each event: the per-request comparison
// and its response times (intercept). The engine calls CapturedAt and
// ReceivedAt instead of Captured and Received on an observer that
// implements it, with the same contracts otherwise.
type TimedObserver interface {
	SessionObserver
	// CapturedAt is Captured with the capture time of the segment that
	// carried data, from the session's start (Head.Start); -1 when the
	// capture did not say.
	CapturedAt(off int64, data []byte, at time.Duration)
	// ReceivedAt is Received with the time the bytes were read (the
	// run's clock).
	ReceivedAt(p []byte, at time.Time)
	// Sent is called after chunk c was written whole, with the time the
	// write returned. c.Data is never modified: the observer may keep it
	// until Done.
	Sent(c session.Chunk, at time.Time)
}

// SessionInfo describes one replayed copy of a captured session.
type SessionInfo struct {
	// Head is the captured session's start. Shared by all copies
	// (--multiply): read only.
	Head *session.Head
	// Pass counts Runner.Run calls from 0 (--loop); Copy counts the copies
	// of a session within a pass from 0 (--multiply).
	Pass, Copy int
	// Client is the mapped client address the session is dialed from
	// (kernel sockets may ignore it and use their own).
	Client netip.AddrPort
	// Target is the address dialed: the captured server mapped by
	// Config.Target or Config.Map, or Config.Baseline for a baseline copy.
	Target netip.AddrPort
	// Baseline marks a copy replayed to Config.Baseline: the twin of the
	// copy with the same Pass and Copy that goes to the target, with the
	// same schedule and its own client address.
	Baseline bool
	// Scheduled is when the session was due by the capture's timing (the
	// run's start plus its scaled start offset); at speed max, the moment it
	// became ready.
	Scheduled time.Time
}

// Outcome classifies a replayed session.
type Outcome uint8

const (
	// OK: connected, every chunk was written, the target answered every
	// turn and the session closed without an unexpected reset. Soft
	// deviations (quiet turns, close timeouts) may still have occurred.
	OK Outcome = iota
	// Refused: the dial was refused (ECONNREFUSED).
	Refused
	// Reset: the target reset the connection (ECONNRESET, EPIPE) although
	// the captured server did not.
	Reset
	// Timeout: the dial timed out (DialTimeout, ETIMEDOUT) or the session
	// overran SessionTimeout and was aborted.
	Timeout
	// Deviation: the session ran but the target did not follow the
	// capture: a turn timed out without any answer, or the target closed
	// while the capture still had bytes from it.
	Deviation
	// Canceled: the run's context was canceled while the session ran.
	Canceled
	// Other: any other error (unreachable network, local errors).
	Other
	// Incomplete: the replay departed from the capture where the capture
	// itself was incomplete: the client bytes an answer followed were never
	// captured (a hole; all of them, for a session replayed with no
	// chunk), or the captured server stream has holes where the target
	// fell short. A live capture's kernel drops end up here: the target is
	// not blamed for what the replay could not send it. Not a failure.
	Incomplete
)

var outcomeNames = [...]string{"ok", "refused", "reset", "timeout", "deviation", "canceled", "other", "capture-incomplete"}

// String returns the outcome's name as used in reports.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "other"
}

// Deviations counts where a session's replay departed from the capture.
type Deviations struct {
	// TurnTimeouts: the target sent nothing for a turn within TurnTimeout
	// (hard: the session's outcome becomes Deviation).
	TurnTimeouts int
	// QuietTurns: the target answered a turn with fewer bytes than
	// captured and then went quiet for QuietTimeout; the replay moved on
	// (soft: a shorter answer, which intercept compares).
	QuietTurns int
	// EarlyClose: the target closed while the capture still expected bytes
	// from it (hard).
	EarlyClose int
	// CloseTimeouts: the target did not close within CloseTimeout where the
	// captured server closed, or did not answer our FIN with its own (soft).
	CloseTimeouts int
	// LostTurns: turns that follow client bytes the capture lost (a
	// client hole before the chunk, or before the close). The captured
	// answer may answer those lost bytes, which the target never got: such
	// a turn waits QuietTimeout, not TurnTimeout, for an answer that does
	// not come, and the session's outcome is Incomplete rather than
	// Deviation (soft).
	LostTurns int
}

func (d Deviations) hard() bool { return d.TurnTimeouts > 0 || d.EarlyClose > 0 }

// Total is the number of deviations of any kind.
func (d Deviations) Total() int {
	return d.TurnTimeouts + d.QuietTurns + d.EarlyClose + d.CloseTimeouts + d.LostTurns
}

// Result is how one replayed session went.
type Result struct {
	Outcome Outcome
	// Err is the error behind a failed outcome (nil for OK and Deviation
	// unless a deviation came with one).
	Err error
	// Dialed reports whether the connection was established.
	Dialed bool
	// Local is the connection's actual local address: the mapped client
	// for the netstack, whatever the kernel chose for kernel sockets.
	Local netip.AddrPort
	// End is how the session ended in the replay, named from the client's
	// point of view like the captured End: who closed first and how.
	// Meaningful only when Dialed.
	End session.End
	// Start is when the dial began; Finish when the session was done.
	Start, Finish time.Time
	// BytesSent counts client bytes written; BytesReceived what the target
	// sent.
	BytesSent, BytesReceived int64
	// ChunksSent counts chunks written.
	ChunksSent int
	Deviations Deviations
	// Tail is how the captured session ended; nil when the replay ended
	// before the capture did (canceled, failed early). Read only.
	Tail *session.Tail
	// Chunks counts the captured chunks the session received from the
	// capture (all of them when Tail is set).
	Chunks int
	// Dropped counts client bytes of a live capture that could not be
	// buffered for this session (the replay fell behind by more than the
	// session's window): the session was replayed up to them and then
	// ended. Zero for files.
	Dropped int64
}
