package replay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultDialTimeout covers a few SYN retransmissions (1 s, 3 s).
	DefaultDialTimeout = 10 * time.Second
	// DefaultTurnTimeout bounds the wait for a target that sends nothing at
	// all for a turn. It is not a limit on slow answers: once the target
	// answers something, QuietTimeout applies instead.
	DefaultTurnTimeout = 10 * time.Second
	// DefaultQuietTimeout: a target that answered part of a turn and then
	// sent nothing for this long is taken to have answered shorter than the
	// capture. Short, because at --speed max every such turn costs it.
	DefaultQuietTimeout = 100 * time.Millisecond
	// DefaultCloseTimeout bounds the wait for the target's close where the
	// captured server closed, and for its FIN after ours.
	DefaultCloseTimeout = 2 * time.Second
	// DefaultSessionTimeout is how long a session may run past its scaled
	// captured duration before it is aborted.
	DefaultSessionTimeout = 60 * time.Second
	// DefaultMaxSessions caps sessions in flight.
	DefaultMaxSessions = 1024
	// DefaultWindow is how many client bytes of one session may wait in
	// the replay for their turn: enough for several merged chunks (1 MiB
	// each at most), so a bulk upload never waits for the capture reader.
	DefaultWindow = 4 << 20
	// DefaultBudget bounds the client bytes held for sessions that are
	// not running (waiting for their predecessors, their time or a slot)
	// where the reader cannot wait for them; past it they are shed.
	DefaultBudget = 64 << 20
)

// Default client ranges: the benchmarking ranges of RFC 2544 and RFC 5180,
// which no real host uses.
var (
	DefaultClientNet4 = netip.MustParsePrefix("198.18.0.0/15")
	DefaultClientNet6 = netip.MustParsePrefix("2001:2::/48")
)

// SpeedMax replays as fast as the dependencies between chunks and sessions
// allow. Speed 0 means the same.
var SpeedMax = math.Inf(1)

// Config controls a replay. Dialer and a target (Target or Map) are required;
// every other field has a default.
type Config struct {
	// Dialer opens the connections: the netstack over the TUN, kernel
	// sockets (SocketDialer), or an in-memory pair in tests.
	Dialer Dialer
	// WrapConn, if set, is called with each connection once dialed,
	// before the first turn, and its conn is replayed instead (a TLS
	// client handshake: the session's turns are then its plaintext). It
	// runs under the dial timeout (ctx); its time is not a turn's. An
	// error fails the session as a dial error does.
	WrapConn func(ctx context.Context, info *SessionInfo, c net.Conn) (net.Conn, error)

	// Target is where sessions of any captured server not in Map go
	// (--target). Map sends sessions of a captured server to its own target
	// (--map captured=target, repeatable). A session whose server has
	// neither is not replayed and counted as Unmapped. Choosing which
	// captured servers to replay is the session builder's job.
	Target netip.AddrPort
	Map    map[netip.AddrPort]netip.AddrPort
	// Baseline, when valid, is a second target (--baseline: the known-good
	// build): every copy of every session is also replayed to it, in the
	// same run with the same schedule, from its own client address
	// (SessionInfo.Baseline marks those copies). Summary counts them like
	// any copy.
	Baseline netip.AddrPort

	// Speed divides every captured time: 1 replays at the captured pace, 2
	// twice as fast. 0 or SpeedMax: as fast as dependencies allow.
	Speed float64

	// ClientNet4 and ClientNet6 are the ranges mapped client addresses are
	// drawn from (--client-net); defaults DefaultClientNet4/6. The family
	// follows the target's. ReservedClients are never used (an address the
	// TUN or netstack keeps for itself).
	ClientNet4, ClientNet6 netip.Prefix
	ReservedClients        []netip.Addr
	// KeepClientIP dials from the captured client addresses themselves
	// (ports are still allocated fresh).
	KeepClientIP bool
	// RunID salts the client mapping. Two runs with the same RunID over the
	// same sessions use the same client addresses and ports; the default 0
	// picks a random one, so that back-to-back runs never reuse a 4-tuple
	// the target may still hold in TIME_WAIT. Summary.RunID reports it.
	RunID uint64

	// DialTimeout bounds one dial. TurnTimeout bounds the wait for a target
	// that answers nothing to a turn (hard deviation); QuietTimeout is how
	// long a target that answered part of a turn may stay silent before the
	// replay moves on (soft deviation). CloseTimeout bounds waiting for the
	// target to close. SessionTimeout is how long a session may run beyond
	// its scaled captured duration (at speed max: beyond its start) before
	// it is aborted.
	DialTimeout, TurnTimeout, QuietTimeout, CloseTimeout, SessionTimeout time.Duration

	// MaxSessions caps sessions in flight (dialed and not done);
	// MaxPending caps sessions read from the channel and not done (in
	// flight plus waiting for their time or predecessors), which bounds
	// memory by sessions in flight, not by capture size. Defaults
	// DefaultMaxSessions and 4×MaxSessions.
	MaxSessions, MaxPending int

	// Live: the sessions come from a capture that is happening (a live
	// interface, a stream): the Sink never blocks the capture, bytes that
	// do not fit a session's Window or the Budget are dropped and counted
	// (the session is marked), and Summary.LiveLag measures how long after
	// its capture each chunk was written.
	Live bool
	// Window bounds the client bytes of one session queued for the replay
	// (default DefaultWindow); Budget bounds those of all sessions together
	// where the reader cannot wait (default DefaultBudget). See feed.go.
	Window, Budget int64

	// NoCausalOrder drops the order between sessions (pure load
	// generation): a session no longer waits for the sessions that had
	// ended before it started in the capture.
	NoCausalOrder bool
	// Rate caps new sessions per second (0: no cap).
	Rate float64
	// Multiply replays every session this many times, each copy from its
	// own client address (default 1).
	Multiply int
	// Sample keeps this fraction of the sessions (0 or 1: all), chosen by a
	// hash of the session, so the choice is the same on every run and
	// machine.
	Sample float64
	// Shard replays only the sessions of one shard (Count 0: all).
	Shard Shard
	// Duration stops admitting sessions this long after the first Run
	// began; sessions in flight finish (0: no limit).
	Duration time.Duration

	// Observer receives every replayed session (nil: none).
	Observer Observer
	// Metrics receives the timings as they are measured (nil: none).
	Metrics Metrics
	// Clock is the time source; default a PreciseClock per Run.
	Clock Clock
	// Logf receives warnings (nil: discarded).
	Logf func(format string, args ...any)
}

// Shard selects a deterministic part of the sessions: n machines running
// shards 0/n … n-1/n together replay every session exactly once.
type Shard struct {
	Index, Count int
}

// String formats the shard as "i/n".
func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// ParseShard parses "i/n" with 0 <= i < n.
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	if !ok {
		return Shard{}, fmt.Errorf("parse shard %q: want i/n", s)
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return Shard{}, fmt.Errorf("parse shard %q: want i/n with 0 <= i < n", s)
	}
	return Shard{Index: i, Count: n}, nil
}

// ParseSpeed parses a speed factor: a positive number or "max".
func ParseSpeed(s string) (float64, error) {
	if strings.EqualFold(s, "max") {
		return SpeedMax, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("parse speed %q: want a positive number or max", s)
	}
	return v, nil
}

// ParseMapping parses one --map argument, "captured=target", each an ip:port
// ("[v6]:port" for IPv6).
func ParseMapping(s string) (captured, target netip.AddrPort, err error) {
	a, b, ok := strings.Cut(s, "=")
	if !ok {
		return captured, target, fmt.Errorf("parse mapping %q: want captured=target", s)
	}
	if captured, err = netip.ParseAddrPort(strings.TrimSpace(a)); err != nil {
		return captured, target, fmt.Errorf("parse mapping %q: captured: %w", s, err)
	}
	if target, err = netip.ParseAddrPort(strings.TrimSpace(b)); err != nil {
		return captured, target, fmt.Errorf("parse mapping %q: target: %w", s, err)
	}
	return unmapAP(captured), unmapAP(target), nil
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// errConfig marks configuration errors.
var errConfig = errors.New("invalid replay config")

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, args...))
	}
	if c.Dialer == nil {
		return bad("no dialer")
	}
	if !c.Target.IsValid() && len(c.Map) == 0 {
		return bad("no target")
	}
	if c.Target.IsValid() {
		c.Target = unmapAP(c.Target)
	}
	if c.Baseline.IsValid() {
		c.Baseline = unmapAP(c.Baseline)
	}
	if len(c.Map) > 0 {
		m := make(map[netip.AddrPort]netip.AddrPort, len(c.Map))
		for k, v := range c.Map {
			if !v.IsValid() {
				return bad("map %s: invalid target", k)
			}
			m[unmapAP(k)] = unmapAP(v)
		}
		c.Map = m
	}
	switch {
	case c.Speed == 0 || math.IsInf(c.Speed, 1):
		c.Speed = SpeedMax
	case !(c.Speed > 0):
		return bad("speed %v: want a positive number or max", c.Speed)
	}
	if !c.ClientNet4.IsValid() {
		c.ClientNet4 = DefaultClientNet4
	}
	if !c.ClientNet6.IsValid() {
		c.ClientNet6 = DefaultClientNet6
	}
	c.ClientNet4, c.ClientNet6 = c.ClientNet4.Masked(), c.ClientNet6.Masked()
	if !c.ClientNet4.Addr().Is4() {
		return bad("client net %s: not IPv4", c.ClientNet4)
	}
	if !c.ClientNet6.Addr().Is6() || c.ClientNet6.Addr().Is4In6() {
		return bad("client net %s: not IPv6", c.ClientNet6)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.TurnTimeout, DefaultTurnTimeout)
	def(&c.QuietTimeout, DefaultQuietTimeout)
	def(&c.CloseTimeout, DefaultCloseTimeout)
	def(&c.SessionTimeout, DefaultSessionTimeout)
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 4 * c.MaxSessions
	}
	c.MaxPending = max(c.MaxPending, c.MaxSessions)
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.Budget <= 0 {
		c.Budget = DefaultBudget
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) {
		return bad("rate %v: want >= 0", c.Rate)
	}
	if c.Multiply <= 0 {
		c.Multiply = 1
	}
	if c.Sample < 0 || c.Sample > 1 || math.IsNaN(c.Sample) {
		return bad("sample %v: want a fraction in (0, 1]", c.Sample)
	}
	if c.Shard.Count < 0 || (c.Shard.Count > 0 && (c.Shard.Index < 0 || c.Shard.Index >= c.Shard.Count)) {
		return bad("shard %s: want i/n with 0 <= i < n", c.Shard)
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// copies is the number of copies of each session: Multiply, twice with a
// baseline (copies Multiply.. go to the baseline).
func (c *Config) copies() int {
	if c.Baseline.IsValid() {
		return 2 * c.Multiply
	}
	return c.Multiply
}

// maxSpeed reports whether the replay ignores captured timing.
func (c *Config) maxSpeed() bool { return math.IsInf(c.Speed, 1) }

// paced reports whether sessions and chunks wait for their scaled captured
// times. Live input is paced by the capture itself: a chunk is handed over
// when it happens, so waiting for its offset from the replayed session's
// start (which began later, after the dial) would only add lag.
func (c *Config) paced() bool { return !c.maxSpeed() && !c.Live }

// scale converts a captured duration to replay time.
func (c *Config) scale(d time.Duration) time.Duration {
	if c.maxSpeed() {
		return 0
	}
	if c.Speed == 1 {
		return d
	}
	return time.Duration(float64(d) / c.Speed)
}

// targetFor returns where sessions of the captured server go.
func (c *Config) targetFor(server netip.AddrPort) (netip.AddrPort, bool) {
	if t, ok := c.Map[unmapAP(server)]; ok {
		return t, true
	}
	return c.Target, c.Target.IsValid()
}
