package session

import (
	"net/netip"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultIdleTimeout is long because database pools and keep-alive
	// connections idle for minutes: flushing one early splits it, and its
	// continuation becomes a partial session that has lost its login.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultLinger keeps a closed connection's identity for trailing
	// packets: last ACKs, FINs retransmitted with backoff, keepalive
	// probes (seen for 11 s after both FINs in a real capture). It is
	// short because memory follows it: every connection closed within the
	// last Linger of capture time is remembered (a few hundred bytes each;
	// 10,000 sessions/s × 60 s was over 400 MB). A later trailing packet
	// rarely matters: without a handshake a connection becomes a session
	// only at client bytes the server had not acknowledged, which
	// retransmissions never are (a late keepalive probe may make a one-byte
	// partial session).
	DefaultLinger = 15 * time.Second
	// DefaultServerDataLimit bounds the server stream kept per session for
	// later comparison with the target's answer.
	DefaultServerDataLimit = 1 << 20
	// DefaultOutOfOrderLimit bounds the bytes buffered ahead of a gap per
	// connection (both directions together). A megabyte covers a full
	// receive window of a fast LAN flow.
	DefaultOutOfOrderLimit = 1 << 20
	// DefaultMergeWindow: client segments sent within a millisecond of the
	// chunk's first segment, with no server byte received in between, are
	// one write of the application (a request split into MSS-sized
	// segments).
	DefaultMergeWindow = time.Millisecond
)

// Config selects the sessions a Builder rebuilds and bounds its memory.
// The zero value is usable: every field has a default.
type Config struct {
	// Servers, when not empty, selects the server endpoints: only
	// connections with one of them as an endpoint become sessions, and for
	// connections without a handshake the endpoint in Servers is the server.
	// An entry with an unspecified address (0.0.0.0 or ::, or the zero
	// Addr) matches that port on any address.
	Servers []netip.AddrPort
	// Keep, when not nil, is asked once per connection with its server
	// endpoint (after the direction is known); false drops the connection
	// cheaply. For a connection without a handshake, if Keep accepts exactly
	// one of the two endpoints, that endpoint is taken as the server.
	Keep func(server netip.AddrPort) bool

	// IdleTimeout, in capture time: a connection without a packet for
	// longer is ended with End = EndCaptureEnd. Default DefaultIdleTimeout
	// for files, never for Live; a negative value never ends an idle
	// connection.
	IdleTimeout time.Duration
	// Linger, in capture time: how long a closed connection's 4-tuple and
	// sequence numbers are remembered so that its trailing packets are not
	// taken for a new connection. Default DefaultLinger.
	Linger time.Duration
	// ServerDataLimit bounds Session.ServerData in bytes. Default
	// DefaultServerDataLimit; a negative value keeps no server data at all
	// (and does not set ServerCut). ServerBytes always counts everything.
	ServerDataLimit int64
	// OutOfOrderLimit bounds the bytes buffered ahead of a gap per
	// connection. Beyond it the gap is given up as a hole and the buffered
	// data is delivered. Default DefaultOutOfOrderLimit.
	OutOfOrderLimit int
	// MergeWindow: a client segment is appended to the previous chunk when
	// it directly follows it in the stream, the client had received no more
	// server bytes, and it was sent at most MergeWindow after the chunk's
	// first segment, and the chunk stays within 1 MiB (a bulk upload
	// becomes back-to-back chunks of that size). Default
	// DefaultMergeWindow; a negative value never merges (one chunk per
	// delivered segment).
	MergeWindow time.Duration
	// Live: the capture is read as it happens (a live interface, a
	// stream). A client segment with PSH seals its chunk at once (it ends
	// a write), and a chunk's merge window is closed by capture time alone
	// (Add, Advance), so that no request waits for the client's next
	// segment. Files leave it off: there a chunk is sealed by the next
	// segment that cannot merge into it, exactly as the complete-session
	// model cut it.
	Live bool
}

func (c Config) withDefaults() Config {
	switch {
	case c.IdleTimeout == 0 && !c.Live:
		c.IdleTimeout = DefaultIdleTimeout
	case c.IdleTimeout <= 0:
		c.IdleTimeout = time.Duration(1<<63 - 1) // never: a live connection idle for hours is still one session
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.ServerDataLimit == 0 {
		c.ServerDataLimit = DefaultServerDataLimit
	}
	if c.OutOfOrderLimit <= 0 {
		c.OutOfOrderLimit = DefaultOutOfOrderLimit
	}
	if c.MergeWindow == 0 {
		c.MergeWindow = DefaultMergeWindow
	}
	return c
}
