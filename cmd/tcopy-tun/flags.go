package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/netstack"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/agent"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/metrics"
	"github.com/tcopy-tun/tcopy-tun/tun"
)

// replayFlags are the flags of the replay command, parsed and checked.
type replayFlags struct {
	pcap string
	live string // --live IFACE: copy from an interface instead of a capture
	// --live-buffer: the packet socket's receive buffer in bytes
	liveBuf int
	// Capture agents: --pcap-listen accepts them; --pcap tcp://HOST:PORT
	// (pcapDial, resolved) connects to one.
	pcapListen string // resolved IP:PORT
	pcapDial   string // resolved IP:PORT, from --pcap tcp://HOST:PORT
	agents     agent.Options
	stopLive   chan struct{} // closed to end a live capture (set by the command)
	target     netip.AddrPort
	server     netip.AddrPort
	maps       map[netip.AddrPort]netip.AddrPort
	speed      float64
	via        string // "tun" or "socket"
	link       netstack.LinkKind
	tunName    string
	mtu        int
	nets       []netip.Prefix
	keepIP     bool
	forward    bool
	runID      uint64
	report     string
	html       string // --html FILE: the report as one self-contained page
	// writePcap: --write-pcap FILE, pcapng of the replayed traffic as the
	// netstack saw it (TUN path only).
	writePcap string
	pcapSnap  int    // --write-pcap-snaplen: bytes kept of each packet (0: all)
	progress  string // auto, always, never
	quiet     bool

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

	logFormat    string         // --log-format: text or json
	metricsAddr  string         // --metrics ADDR: serve Prometheus metrics there
	metricsAllow []netip.Prefix // --metrics-allow: the peers that may scrape
	// metrics is the exporter behind --metrics (set by the command; nil
	// without it).
	metrics *metrics.Exporter

	baseline   netip.AddrPort   // --baseline: the known-good build, replayed in the same run
	ignore     string           // --ignore FILE: rules of the per-request comparison
	rules      *intercept.Rules // read from ignore
	failSlower float64          // --fail-slower RATIO (0: off)

	tls tlsFlags // --tls-keylog, --target-tls and its companions (tls.go)
}

// addrPortValue parses HOST:PORT flags (resolveAddrPort).
type addrPortValue struct {
	p      *netip.AddrPort
	lookup lookupFunc
}

func (v addrPortValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}
func (v addrPortValue) Set(s string) error {
	ap, err := resolveAddrPort(s, v.lookup)
	if err != nil {
		return err
	}
	*v.p = ap
	return nil
}

// sizeValue parses a byte count with an optional binary suffix: 65536,
// 64KiB, 32MiB, 1GiB (K, M, G and KB, MB, GB mean the same powers of two).
type sizeValue struct{ p *int }

func (v sizeValue) String() string {
	if v.p == nil || *v.p == 0 {
		return ""
	}
	return strconv.Itoa(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

func parseSize(s string) (int, error) {
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(s[len(num):])
	mult := 1
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("%q: want a size such as 65536, 256KiB or 32MiB", s)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > (1<<31-1)/mult {
		return 0, fmt.Errorf("%q: want a size from 1 byte to 2GiB, such as 256KiB or 32MiB", s)
	}
	return n * mult, nil
}

// listValue collects repeated string flags.
type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(s string) error { *l = append(*l, s); return nil }

// extraFlags are the repeatable or parsed flags that newReplayFlagSet
// collects as text, for parseReplayFlags to check.
type extraFlags struct {
	metricsAllow listValue
}

// agentFlags are the raw --pcap-* flags of capture agents.
type agentFlags struct {
	listen string
	allow  listValue
}

func newReplayFlagSet(f *replayFlags, out io.Writer, lookup lookupFunc, af *agentFlags) (*flag.FlagSet, *listValue, *listValue, *string, *string, *string, *extraFlags) {
	fs := flag.NewFlagSet("tcopy-tun", flag.ContinueOnError)
	// Parse errors are printed by the caller as one line; only --help
	// prints the flag list (to out, standard output).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var maps, nets listValue
	var speed, shard, link string
	liveBuf := sizeValue{p: &f.liveBuf}
	fs.StringVar(&f.pcap, "pcap", "", "capture to replay: a pcap or pcapng file (gzip or zstd too), - for standard input,\nor tcp://HOST:PORT: connect to a capture agent that serves a stream (tcpdump -U --immediate-mode -w - | nc -N -l PORT)")
	fs.StringVar(&af.listen, "pcap-listen", "", "accept capture agents (tcpdump -U --immediate-mode -w - | nc -N HOST PORT) on `ADDR`: PORT (on 127.0.0.1), HOST:PORT, or :PORT (every address);\ntheir streams are merged into one live replay until SIGINT or --duration (README: \"Capture agents\"; the usual port is 57012)")
	fs.Var(&af.allow, "pcap-allow", "agents `PREFIX` may connect from (e.g. 10.0.0.0/8); repeatable (default: loopback only, which an address other than loopback requires you to change)")
	fs.DurationVar(&f.agents.Window, "pcap-window", agent.DefaultWindow, "how long an agent's packet may wait for an earlier one from another agent (the merge's reordering window)")
	fs.IntVar(&f.agents.MaxAgents, "pcap-max-agents", agent.DefaultMaxAgents, "agents connected at once at most (more are refused)")
	f.agents.AgentBuffer = agent.DefaultAgentBuffer
	fs.Var(sizeValue{p: &f.agents.AgentBuffer}, "pcap-agent-buffer", "`SIZE` of one agent's packets waiting in the merge at most, in bytes (KiB, MiB, GiB suffixes); then its connection waits")
	fs.IntVar(&f.agents.SnapLen, "pcap-snaplen", agent.DefaultSnapLen, "bytes kept of each packet from an agent at most")
	fs.StringVar(&f.live, "live", "", "copy live traffic from network interface `IFACE` (AF_PACKET; needs CAP_NET_RAW) instead of a capture; runs until SIGINT or --duration")
	fs.Var(liveBuf, "live-buffer", "kernel buffer of the live capture, `SIZE` in bytes (KiB, MiB, GiB suffixes): what it holds while the replay is busy before it drops packets (default 32MiB; past net.core.rmem_max it needs CAP_NET_ADMIN)")
	fs.Var(addrPortValue{&f.target, lookup}, "target", "where to replay: `HOST:PORT` of the server under test (localhost is 127.0.0.1)")
	fs.Var(addrPortValue{&f.server, lookup}, "server", "the captured server to replay, `HOST:PORT` (default: the one whose port matches --target, or the only one)")
	fs.Var(&maps, "map", "replay a captured server onto a target, `CAPTURED=TARGET` (HOST:PORT=HOST:PORT); repeatable")
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
	fs.StringVar(&f.writePcap, "write-pcap", "", "write the replayed traffic, as tcopy-tun's TCP stack saw it, as pcapng to `FILE` (- for standard output); each connection's first packet names its session (--via tun only)")
	fs.IntVar(&f.pcapSnap, "write-pcap-snaplen", 0, "keep only the first `N` bytes of each packet in --write-pcap (0: whole packets; at least "+fmt.Sprint(intercept.MinPcapSnapLen)+", which keeps the headers): a fraction of the cost for bulk transfers")
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
	fs.Var(addrPortValue{&f.baseline, lookup}, "baseline", "also replay every session to `HOST:PORT`, the known-good build, in the same run: the target's answers are compared with the baseline's, and what differs between the baseline and the capture is learned as noise")
	fs.StringVar(&f.ignore, "ignore", "", "YAML `FILE` of what the per-request comparison ignores: headers, JSON paths, body regexps, per route or global (see README)")
	fs.Float64Var(&f.failSlower, "fail-slower", 0, "exit 1 when the target's p99 response time exceeds `RATIO` times the baseline's (else the captured server's); 0: off")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to `FILE` (go tool pprof reads it)")
	x := &extraFlags{}
	fs.StringVar(&f.logFormat, "log-format", logText, "messages on stderr: text (one line each, for people) or json (one object per line, with time and level; the summary too)")
	fs.StringVar(&f.metricsAddr, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics while the replay runs: PORT or :PORT (on 127.0.0.1), or IP:PORT")
	fs.StringVar(&f.tls.keylog, "tls-keylog", "", "decrypt the capture's TLS sessions with the NSS key log `FILE` (SSLKEYLOGFILE); secrets in a pcapng's decryption secrets blocks are used too (README \"TLS\")")
	fs.StringVar(&f.tls.target, "target-tls", targetTLSAuto, "speak TLS to the target: auto (for the sessions that were TLS in the capture), on (every session: plaintext captures taken behind a terminator), off (never)")
	fs.StringVar(&f.tls.ca, "target-ca", "", "PEM `FILE` of the certificates that may sign the target's (default: the system's)")
	fs.BoolVar(&f.tls.insecure, "target-insecure", false, "do not verify the target's certificate")
	fs.StringVar(&f.tls.cert, "target-cert", "", "PEM `FILE`: client certificate shown to a target that asks for one (with --target-key)")
	fs.StringVar(&f.tls.key, "target-key", "", "PEM `FILE`: the private key of --target-cert")
	fs.Var(&x.metricsAllow, "metrics-allow", "only these peers may connect to --metrics: `PREFIX` or address; repeatable (default: any peer that reaches ADDR)")
	return fs, &maps, &nets, &speed, &shard, &link, x
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
	return parseReplayFlagsLookup(args, out, systemLookup)
}

// parseReplayFlagsLookup is parseReplayFlags with the host name lookup
// given.
func parseReplayFlagsLookup(args []string, out io.Writer, lookup lookupFunc) (*replayFlags, error) {
	f := &replayFlags{}
	var af agentFlags
	fs, maps, nets, speed, shard, link, x := newReplayFlagSet(f, out, lookup, &af)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(out, "usage: tcopy-tun --pcap FILE|-|tcp://HOST:PORT | --live IFACE | --pcap-listen ADDR  --target HOST:PORT [flags]\n\nflags:\n")
			fs.SetOutput(out)
			fs.PrintDefaults()
			return nil, errHelp
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags come as --name value)", fs.Arg(0))
	}
	n := 0
	for _, v := range []string{f.pcap, f.live, af.listen} {
		if v != "" {
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("--pcap is required (a capture file, - for standard input, or tcp://HOST:PORT), or --live IFACE, or --pcap-listen ADDR")
	}
	if n > 1 {
		return nil, fmt.Errorf("--pcap, --live and --pcap-listen exclude each other")
	}
	if !f.target.IsValid() && len(*maps) == 0 {
		return nil, fmt.Errorf("--target HOST:PORT is required (or --map CAPTURED=TARGET)")
	}
	if err := parseAgentFlags(f, &af, lookup); err != nil {
		return nil, err
	}
	if err := f.tls.validate(); err != nil {
		return nil, err
	}
	var err error
	if f.speed, err = replay.ParseSpeed(*speed); err != nil {
		return nil, fmt.Errorf("--speed: %w", err)
	}
	if len(*maps) > 0 {
		f.maps = map[netip.AddrPort]netip.AddrPort{}
		for _, m := range *maps {
			c, t, err := parseMapping(m, lookup)
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
	if f.writePcap != "" && f.via == "socket" {
		// Kernel sockets' packets never cross tcopy-tun: the kernel's own
		// capture (tcpdump -i lo) is the way to see them.
		return nil, fmt.Errorf("--write-pcap needs --via tun: with --via socket the packets are the kernel's (capture them with tcpdump on the target's interface)")
	}
	if f.pcapSnap != 0 && f.writePcap == "" {
		return nil, fmt.Errorf("--write-pcap-snaplen needs --write-pcap FILE")
	}
	if f.pcapSnap < 0 || f.pcapSnap > 0 && f.pcapSnap < intercept.MinPcapSnapLen {
		return nil, fmt.Errorf("--write-pcap-snaplen %d: want 0 (whole packets) or at least %d (the IP and TCP headers)", f.pcapSnap, intercept.MinPcapSnapLen)
	}
	if f.writePcap == "-" && f.report == "-" {
		return nil, fmt.Errorf("--write-pcap - and --report - cannot both use standard output")
	}
	if f.html == "-" && (f.report == "-" || f.writePcap == "-") {
		other := "--report"
		if f.writePcap == "-" {
			other = "--write-pcap"
		}
		return nil, fmt.Errorf("--html - and %s - cannot both use standard output", other)
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
	if f.mtu < 1280 || f.mtu > 65535 {
		return nil, fmt.Errorf("--mtu %d: want 1280 to 65535", f.mtu)
	}
	if f.maxSessions < 1 || f.multiply < 1 || f.loop < 1 {
		return nil, fmt.Errorf("--max-sessions, --multiply and --loop want a number of at least 1")
	}
	if f.liveBuf != 0 && f.live == "" {
		return nil, fmt.Errorf("--live-buffer sizes the buffer of --live; a capture file or stream needs none")
	}
	if f.endless() && f.loop != 1 {
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
	switch f.logFormat {
	case logText, logJSON:
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
	}
	if f.metricsAddr != "" {
		if _, err := metrics.ListenAddr(f.metricsAddr); err != nil {
			return nil, fmt.Errorf("--metrics %w", err)
		}
	}
	for _, a := range x.metricsAllow {
		p, err := metrics.ParseAllow(a)
		if err != nil {
			return nil, fmt.Errorf("--metrics-allow %w", err)
		}
		f.metricsAllow = append(f.metricsAllow, p)
	}
	if len(f.metricsAllow) > 0 && f.metricsAddr == "" {
		return nil, fmt.Errorf("--metrics-allow limits who may read --metrics, which is not set")
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

// sourceName names the input in messages: the capture file, the
// interface, or the agents.
func (f *replayFlags) sourceName() string {
	switch {
	case f.live != "":
		return f.live
	case f.pcapListen != "":
		return "agents on " + f.pcapListen
	case f.pcapDial != "":
		return "agent " + f.pcapDial
	}
	return f.pcap
}

// endless: the input is happening (an interface, capture agents) and the
// run ends on the first SIGINT or --duration, like --live (an agent
// dialed with --pcap tcp:// may also end its stream).
func (f *replayFlags) endless() bool {
	return f.live != "" || f.pcapListen != "" || f.pcapDial != ""
}

// parseAgentFlags checks the flags of capture agents: --pcap-listen and
// its limits, --pcap tcp://HOST:PORT.
func parseAgentFlags(f *replayFlags, af *agentFlags, lookup lookupFunc) error {
	for _, s := range af.allow {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, err2 := netip.ParseAddr(s); err2 == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				return fmt.Errorf("--pcap-allow %q: want a prefix such as 10.0.0.0/8 or an address", s)
			}
		}
		if a := p.Addr(); a.Is4In6() {
			// ::ffff:10.0.0.0/104 is 10.0.0.0/8: peers are compared unmapped.
			p = netip.PrefixFrom(a.Unmap(), max(0, p.Bits()-96))
		}
		f.agents.Allow = append(f.agents.Allow, p.Masked())
	}
	if len(af.allow) > 0 && af.listen == "" {
		return fmt.Errorf("--pcap-allow needs --pcap-listen")
	}
	if f.agents.Window <= 0 || f.agents.MaxAgents < 1 || f.agents.AgentBuffer < 1 {
		return fmt.Errorf("--pcap-window, --pcap-max-agents and --pcap-agent-buffer want values above 0")
	}
	if f.agents.SnapLen < capture.MinSnapLen || f.agents.SnapLen > capture.MaxSnapLen {
		return fmt.Errorf("--pcap-snaplen %d: want %d to %d", f.agents.SnapLen, capture.MinSnapLen, capture.MaxSnapLen)
	}
	if rest, ok := strings.CutPrefix(f.pcap, "tcp://"); ok {
		ap, err := resolveAddrPort(strings.TrimSuffix(rest, "/"), lookup)
		if err != nil {
			return fmt.Errorf("--pcap %s: %w", f.pcap, err)
		}
		if ap.Port() == 0 {
			return fmt.Errorf("--pcap %s: want a port other than 0", f.pcap)
		}
		f.pcapDial = ap.String()
	}
	if af.listen == "" {
		return nil
	}
	listen := af.listen
	if _, err := strconv.ParseUint(listen, 10, 16); err == nil {
		listen = "127.0.0.1:" + listen // a port alone: loopback, the safe default
	}
	var addr netip.Addr
	if host, port, err := net.SplitHostPort(listen); err == nil && host == "" {
		// :PORT: every address, as the user said.
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("--pcap-listen %q: port %q: want a number from 0 to 65535", af.listen, port)
		}
		f.pcapListen = listen
		addr = netip.IPv6Unspecified()
	} else {
		ap, err := resolveAddrPort(listen, lookup)
		if err != nil {
			return fmt.Errorf("--pcap-listen %w", err)
		}
		f.pcapListen = ap.String()
		addr = ap.Addr()
	}
	if !addr.IsLoopback() && len(f.agents.Allow) == 0 {
		return fmt.Errorf("--pcap-listen %s accepts captures from the network: say from whom with --pcap-allow PREFIX (0.0.0.0/0 and ::/0 for anyone)", af.listen)
	}
	return nil
}

func validLink(k netstack.LinkKind) bool {
	for _, v := range netstack.LinkKinds() {
		if v == k {
			return true
		}
	}
	return false
}
