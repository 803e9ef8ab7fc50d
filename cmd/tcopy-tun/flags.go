package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/netstack"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/tun"
)

// replayFlags are the flags of the replay command, parsed and checked.
type replayFlags struct {
	pcap     string
	live     string        // --live IFACE: copy from an interface instead of a capture
	stopLive chan struct{} // closed to end a live capture (set by the command)
	target   netip.AddrPort
	server   netip.AddrPort
	maps     map[netip.AddrPort]netip.AddrPort
	speed    float64
	via      string // "tun" or "socket"
	link     netstack.LinkKind
	tunName  string
	mtu      int
	nets     []netip.Prefix
	keepIP   bool
	forward  bool
	runID    uint64
	report   string
	html     string // --html FILE: the report as a self-contained page
	progress string // auto, always, never
	quiet    bool

	sessionTimeout, turnTimeout, quietTimeout, dialTimeout, idleTimeout time.Duration
	maxSessions                                                         int

	rate       float64
	multiply   int
	sample     float64
	shard      replay.Shard
	loop       int
	duration   time.Duration
	noCausal   bool
	serverLim  int64
	cpuProfile string // --cpuprofile: a Go CPU profile of the whole run
	reportRows int

	baseline   netip.AddrPort   // --baseline: the known-good build, replayed in the same run
	ignore     string           // --ignore FILE: rules of the per-request comparison
	rules      *intercept.Rules // read from ignore
	failSlower float64          // --fail-slower RATIO (0: off)
}

// addrPortValue parses IP:PORT flags.
type addrPortValue struct{ p *netip.AddrPort }

func (v addrPortValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}
func (v addrPortValue) Set(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("want IP:PORT ([IPv6]:PORT for IPv6)")
	}
	*v.p = ap
	return nil
}

// listValue collects repeated string flags.
type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(s string) error { *l = append(*l, s); return nil }

func newReplayFlagSet(f *replayFlags, out io.Writer) (*flag.FlagSet, *listValue, *listValue, *string, *string, *string) {
	fs := flag.NewFlagSet("tcopy-tun", flag.ContinueOnError)
	// Parse errors are printed by the caller as one line; only --help
	// prints the flag list (to out, standard output).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var maps, nets listValue
	var speed, shard, link string
	fs.StringVar(&f.pcap, "pcap", "", "capture to replay: a pcap or pcapng file (gzip or zstd too), or - for standard input")
	fs.StringVar(&f.live, "live", "", "copy live traffic from network interface `IFACE` (AF_PACKET; needs CAP_NET_RAW) instead of a capture; runs until SIGINT or --duration")
	fs.Var(addrPortValue{&f.target}, "target", "where to replay: `IP:PORT` of the server under test")
	fs.Var(addrPortValue{&f.server}, "server", "the captured server to replay, `IP:PORT` (default: the one whose port matches --target, or the only one)")
	fs.Var(&maps, "map", "replay a captured server onto a target, `CAPTURED=TARGET` (IP:PORT=IP:PORT); repeatable")
	fs.StringVar(&speed, "speed", "1", "time scale: 2 replays twice as fast; max as fast as each answer allows")
	fs.StringVar(&f.via, "via", "tun", "tun: a TUN device and the in-process TCP stack, real client addresses (root or CAP_NET_ADMIN);\nsocket: ordinary kernel sockets, no privileges, the host's own client address")
	fs.StringVar(&link, "link", string(netstack.DefaultLink), "link endpoint on the TUN: "+linkKinds())
	fs.StringVar(&f.tunName, "tun", tun.DefaultName, "name of the TUN device")
	fs.IntVar(&f.mtu, "mtu", tun.DefaultMTU, "MTU of the TUN device (the path is host-local: large is fast)")
	fs.Var(&nets, "client-net", "`PREFIX` client addresses are mapped into; repeatable, one per family (default 198.18.0.0/15 and 2001:2::/48)")
	fs.BoolVar(&f.keepIP, "keep-client-ip", false, "dial from the captured client addresses themselves; --client-net must then cover them (they are routed into the TUN)")
	fs.BoolVar(&f.forward, "forward", false, "the target is on another host: forward between the TUN and the interface towards it (see README)")
	fs.Uint64Var(&f.runID, "run-id", 0, "seed of the client address mapping (default: random, so back-to-back runs never reuse a 4-tuple)")
	fs.StringVar(&f.report, "report", "", "write the report as JSON to `FILE` (- for standard output)")
	fs.StringVar(&f.html, "html", "", "write the report as one self-contained HTML page to `FILE` (- for standard output): summary, latency plots, routes, regressed answers side by side")
	fs.StringVar(&f.progress, "progress", "auto", "progress line on stderr: auto (on a terminal), always, never")
	fs.BoolVar(&f.quiet, "q", false, "no summary on stderr (errors still)")
	fs.DurationVar(&f.sessionTimeout, "session-timeout", replay.DefaultSessionTimeout, "abort a session running this much longer than it did in the capture")
	fs.DurationVar(&f.turnTimeout, "turn-timeout", replay.DefaultTurnTimeout, "give up waiting for a target that answers nothing to a request (a deviation)")
	fs.DurationVar(&f.quietTimeout, "quiet-timeout", replay.DefaultQuietTimeout, "move on when a target that answered part of a turn stays silent this long")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", replay.DefaultDialTimeout, "give up a connection attempt after this long")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", 0, "a captured connection without packets this long (capture time) ends there (default 5m for a file; none for --live and standard input)")
	fs.IntVar(&f.maxSessions, "max-sessions", replay.DefaultMaxSessions, "sessions in flight at most")
	fs.Float64Var(&f.rate, "rate", 0, "new sessions per second at most (0: no limit)")
	fs.IntVar(&f.multiply, "multiply", 1, "replay every session N times, each copy from its own client address")
	fs.Float64Var(&f.sample, "sample", 1, "replay this fraction of the sessions, chosen by a hash of each session")
	fs.StringVar(&shard, "shard", "", "replay shard `i/n` of the sessions (n machines together replay each session once)")
	fs.IntVar(&f.loop, "loop", 1, "replay the capture N times, with fresh client addresses each pass")
	fs.DurationVar(&f.duration, "duration", 0, "stop starting sessions after this long (0: no limit)")
	fs.BoolVar(&f.noCausal, "no-causal-order", false, "let a session start before the sessions that ended before it in the capture have ended (pure load)")
	fs.IntVar(&f.reportRows, "report-sessions", 0, "per-session rows kept for --report at most, about 250 bytes each (0: all, -1: none; totals always count every session)")
	fs.Int64Var(&f.serverLim, "response-limit", 1<<20, "bytes of each captured and replayed response kept for comparison")
	fs.Var(addrPortValue{&f.baseline}, "baseline", "also replay every session to `IP:PORT`, the known-good build, in the same run: the target's answers are compared with the baseline's, and what differs between the baseline and the capture is learned as noise")
	fs.StringVar(&f.ignore, "ignore", "", "YAML `FILE` of what the per-request comparison ignores: headers, JSON paths, body regexps, per route or global (see README)")
	fs.Float64Var(&f.failSlower, "fail-slower", 0, "exit 1 when the target's p99 response time exceeds `RATIO` times the baseline's (else the captured server's); 0: off")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to `FILE` (go tool pprof reads it)")
	return fs, &maps, &nets, &speed, &shard, &link
}

func linkKinds() string {
	var s []string
	for _, k := range netstack.LinkKinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// errHelp: --help was asked for and printed.
var errHelp = errors.New("help requested")

// parseReplayFlags parses and checks args. A usage error is returned as is;
// the caller prints it as one line.
func parseReplayFlags(args []string, out io.Writer) (*replayFlags, error) {
	f := &replayFlags{}
	fs, maps, nets, speed, shard, link := newReplayFlagSet(f, out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "usage: tcopy-tun --pcap FILE|- --target IP:PORT [flags]\n\nflags:\n")
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, errHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags come as --name value)", fs.Arg(0))
	}
	if f.pcap == "" && f.live == "" {
		return nil, fmt.Errorf("--pcap is required (a capture file, or - for standard input), or --live IFACE")
	}
	if f.pcap != "" && f.live != "" {
		return nil, fmt.Errorf("--pcap and --live exclude each other")
	}
	if !f.target.IsValid() && len(*maps) == 0 {
		return nil, fmt.Errorf("--target IP:PORT is required (or --map CAPTURED=TARGET)")
	}
	var err error
	if f.speed, err = replay.ParseSpeed(*speed); err != nil {
		return nil, fmt.Errorf("--speed: %w", err)
	}
	if len(*maps) > 0 {
		f.maps = map[netip.AddrPort]netip.AddrPort{}
		for _, m := range *maps {
			c, t, err := replay.ParseMapping(m)
			if err != nil {
				return nil, fmt.Errorf("--map: %w", err)
			}
			f.maps[c] = t
		}
	}
	for _, n := range *nets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("--client-net %q: want a prefix such as 198.18.0.0/15", n)
		}
		f.nets = append(f.nets, p.Masked())
	}
	if f.keepIP && len(f.nets) == 0 {
		return nil, fmt.Errorf("--keep-client-ip needs --client-net naming the captured clients' range (it is routed into the TUN)")
	}
	if *shard != "" {
		if f.shard, err = replay.ParseShard(*shard); err != nil {
			return nil, fmt.Errorf("--shard: %w", err)
		}
	}
	switch f.via {
	case "tun", "socket":
	default:
		return nil, fmt.Errorf("--via %q: want tun or socket", f.via)
	}
	f.link = netstack.LinkKind(*link)
	if !validLink(f.link) {
		return nil, fmt.Errorf("--link %q: want one of %s", *link, linkKinds())
	}
	switch f.progress {
	case "auto", "always", "never":
	default:
		return nil, fmt.Errorf("--progress %q: want auto, always or never", f.progress)
	}
	if f.html == "-" && f.report == "-" {
		return nil, fmt.Errorf("--report - and --html - both write to standard output: give one of them a file")
	}
	if f.mtu < 1280 || f.mtu > 65535 {
		return nil, fmt.Errorf("--mtu %d: want 1280 to 65535", f.mtu)
	}
	if f.maxSessions < 1 || f.multiply < 1 || f.loop < 1 {
		return nil, fmt.Errorf("--max-sessions, --multiply and --loop want a number of at least 1")
	}
	if f.live != "" && f.loop != 1 {
		return nil, fmt.Errorf("--loop cannot repeat a live capture")
	}
	if f.live != "" && f.via == "tun" && f.live == f.tunName {
		return nil, fmt.Errorf("--live %s: that is the replay's own TUN device; copying it would feed the replay its own packets", f.live)
	}
	if f.sample <= 0 || f.sample > 1 {
		return nil, fmt.Errorf("--sample %v: want a fraction in (0, 1]", f.sample)
	}
	if f.rate < 0 {
		return nil, fmt.Errorf("--rate %v: want 0 (no limit) or more", f.rate)
	}
	if f.target.IsValid() && f.target.Addr().Is6() && f.target.Addr().IsLoopback() && f.via == "tun" {
		return nil, fmt.Errorf("--target %s: ::1 cannot be reached through a TUN (the kernel never routes loopback traffic from a device); use 127.0.0.1 or an address of the host", f.target)
	}
	if f.baseline.IsValid() {
		if len(f.maps) > 0 {
			return nil, fmt.Errorf("--baseline replays one target's sessions to a second one: it cannot be combined with --map")
		}
		if f.baseline == f.target {
			return nil, fmt.Errorf("--baseline %s is the --target itself: name the known-good build's address", f.baseline)
		}
		if f.baseline.Addr().Is6() && f.baseline.Addr().IsLoopback() && f.via == "tun" {
			return nil, fmt.Errorf("--baseline %s: ::1 cannot be reached through a TUN; use 127.0.0.1 or an address of the host", f.baseline)
		}
	}
	if f.failSlower < 0 || f.failSlower != f.failSlower {
		return nil, fmt.Errorf("--fail-slower %v: want a ratio above 0 (or 0: off)", f.failSlower)
	}
	if f.ignore != "" {
		if f.rules, err = intercept.LoadRules(f.ignore); err != nil {
			return nil, fmt.Errorf("--ignore: %w", err)
		}
	}
	return f, nil
}

// sourceName names the input in messages: the capture file or the interface.
func (f *replayFlags) sourceName() string {
	if f.live != "" {
		return f.live
	}
	return f.pcap
}

func validLink(k netstack.LinkKind) bool {
	for _, v := range netstack.LinkKinds() {
		if v == k {
			return true
		}
	}
	return false
}
