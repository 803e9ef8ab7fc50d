package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
)

// inspectJSONVersion is the version of inspect's --json document. Fields
// are added, never changed; a change would bump it.
const inspectJSONVersion = 1

// inspectServerPrefix is the server data kept per session while
// inspecting: enough for session.Guess, nothing more. Memory then follows
// the open connections' client bytes, and each session is dropped as soon
// as it has been counted.
const inspectServerPrefix = 256

type inspectOptions struct {
	file    string
	verbose bool
	json    bool
	servers []netip.AddrPort
	keylog  string // --tls-keylog: count the TLS sessions it has keys for
}

const inspectUsage = `usage: tcopy-tun inspect [-v] [--json] [--server HOST:PORT]... [--tls-keylog FILE] FILE|-

Lists the TCP sessions a capture holds, per server endpoint: sessions,
partial sessions (no handshake captured), bytes each way, when they ran and
a protocol guess. Needs no privileges. FILE may be pcap or pcapng, plain,
gzip- or zstd-compressed; - reads the capture from standard input.

flags:
  -v                 also list every session (streamed as the capture is read)
  --json             one JSON document (version 1) instead of tables
  --server HOST:PORT only this server endpoint (repeatable); it also tells
                     which side is the server where no handshake was captured
                     (0.0.0.0:PORT selects a port on any address)
  --tls-keylog FILE  NSS key log: per server, how many TLS sessions it (or
                     the pcapng's decryption secrets blocks) has keys for
`

// parseInspectArgs parses flags and the one file argument; flags may come
// before or after it.
func parseInspectArgs(args []string, stdout io.Writer) (*inspectOptions, error) {
	o := &inspectOptions{}
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.verbose, "v", false, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.StringVar(&o.keylog, "tls-keylog", "", "")
	fs.Func("server", "", func(s string) error {
		ap, err := resolveAddrPort(s, systemLookup)
		if err != nil {
			return err
		}
		o.servers = append(o.servers, ap)
		return nil
	})
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, inspectUsage)
			}
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		// "-" is a file name (stdin), not the end of the flags.
		files = append(files, args[0])
		args = args[1:]
	}
	switch len(files) {
	case 0:
		return nil, errors.New("inspect: no capture given (a file name, or - for standard input)")
	case 1:
		o.file = files[0]
	default:
		return nil, fmt.Errorf("inspect: one capture at a time, got %d: %s", len(files), strings.Join(files, " "))
	}
	return o, nil
}

// runInspect is `tcopy-tun inspect`: it reads a capture once, streaming,
// and lists what it holds. Sessions are counted and dropped as the session
// builder emits them; only per-server totals are kept.
func runInspect(e env, args []string) int {
	o, err := parseInspectArgs(args, e.stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: %v\nhint: 'tcopy-tun inspect -h' shows the usage\n", err)
		return exitUsage
	}

	var src capture.Source
	if o.file == "-" {
		// Hide Close: standard input belongs to the process.
		src, err = capture.NewSource(struct{ io.Reader }{e.stdin}, "-")
	} else {
		src, err = capture.Open(o.file)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: %v\n", err)
		return exitInput
	}
	// TLS keys: from --tls-keylog, and from the capture's decryption
	// secrets blocks as they are read (they come before the packets they
	// are for).
	var keys *tlsdecrypt.KeyLog
	if o.keylog != "" {
		fh, err := os.Open(o.keylog)
		if err == nil {
			keys, err = tlsdecrypt.ParseKeyLog(fh, o.keylog)
			fh.Close()
		}
		if err != nil {
			src.Close()
			fmt.Fprintf(e.stderr, "tcopy-tun: inspect --tls-keylog: %v\n", err)
			return exitUsage
		}
	}
	if sh, ok := src.(capture.SecretsHandler); ok {
		sh.OnSecrets(func(sec capture.Secrets) {
			if sec.Type != capture.SecretsTLSKeyLog {
				return
			}
			if keys == nil {
				keys = tlsdecrypt.NewKeyLog()
			}
			if err := keys.Read(bytes.NewReader(sec.Data), "pcapng decryption secrets block"); err != nil {
				fmt.Fprintf(e.stderr, "tcopy-tun: warning: %v\n", err)
			}
		})
	}
	r := capture.NewReader(src, o.file)
	defer r.Close()

	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	var out inspectWriter = &inspectText{w: w, verbose: o.verbose}
	if o.json {
		out = &inspectJSON{w: w, file: o.file, verbose: o.verbose}
	}
	agg := newInspectAgg()
	cfg := session.Config{Servers: o.servers, ServerDataLimit: inspectServerPrefix}
	bstats, rerr := session.Build(r, cfg, func(s *session.Session) {
		row := newInspectRow(s)
		if keys != nil {
			agg.keys = true
			row.tls, row.tlsKeyed = tlsKeyed(s, keys)
		}
		agg.add(&row)
		if o.verbose {
			out.session(&row)
		}
	})
	cstats := r.Stats()

	if rerr == nil && bstats.Sessions == 0 {
		fmt.Fprintf(e.stderr, "tcopy-tun: inspect %s: no TCP sessions in the capture (%s)\n", inspectName(o.file), inspectNothingWhy(cstats, bstats, o.servers))
		return exitInput
	}
	out.finish(agg, cstats, bstats, rerr)
	if err := w.Flush(); err != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: inspect: write output: %v\n", err)
		return exitFailure
	}
	if cstats.Warning != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: warning: %v (the sessions before it are listed)\n", cstats.Warning)
	}
	if cstats.Malformed > 0 {
		fmt.Fprintf(e.stderr, "tcopy-tun: warning: %d malformed frames skipped, the first: %v\n", cstats.Malformed, cstats.FirstMalformed)
	}
	if rerr != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: %v\n", rerr)
		return exitInput
	}
	return exitOK
}

func inspectName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return strconv.Quote(file)
}

// inspectNothingWhy says why a readable capture yielded no session.
func inspectNothingWhy(c capture.Stats, b session.Stats, servers []netip.AddrPort) string {
	switch {
	case c.Frames == 0:
		return "it holds no packets"
	case c.TCP == 0:
		return fmt.Sprintf("%d frames, none of them TCP", c.Frames)
	case len(servers) > 0 && b.Ignored > 0 && b.NoClientData == 0:
		return fmt.Sprintf("%d TCP segments, none to the selected server%s", c.TCP, inspectPlural(len(servers)))
	case b.NoClientData > 0:
		return fmt.Sprintf("%d TCP segments; %d connections without a handshake never carried client data", c.TCP, b.NoClientData)
	}
	return fmt.Sprintf("%d TCP segments, none forming a connection", c.TCP)
}

// inspectRow is what inspect keeps of one session: a few numbers.
type inspectRow struct {
	id, endedBefore          uint64
	client, server           netip.AddrPort
	start, duration          time.Duration // start from the capture's first packet
	chunks                   int
	tls, tlsKeyed            bool // began with a ClientHello; the key log has its keys
	clientBytes, serverBytes int64
	end                      session.End
	flags                    session.Flags
	proto                    session.Protocol
}

func newInspectRow(s *session.Session) inspectRow {
	flags := s.Flags
	// Inspect keeps only a prefix of the server stream: the cut it makes
	// itself is not a property of the capture.
	if flags&session.ServerCut != 0 {
		flags &^= session.ServerCut
		if flags&session.SnapLen == 0 {
			flags &^= session.Truncated
		}
	}
	return inspectRow{
		id: s.ID, endedBefore: s.EndedBefore,
		client: s.Client, server: s.Server,
		start: s.StartOffset, duration: s.Duration,
		chunks:      len(s.Chunks),
		clientBytes: s.ClientBytes, serverBytes: s.ServerBytes,
		end: s.End, flags: flags,
		proto: session.Guess(s),
	}
}

// inspectServer aggregates the sessions of one server endpoint.
type inspectServer struct {
	addr                     netip.AddrPort
	sessions, partial        int
	holes, truncated         int
	serverFirst              int
	clientBytes, serverBytes int64
	first, last              time.Duration // first start, last end
	votes                    map[session.Protocol]int
	tls, tlsKeyed            int
}

func (s *inspectServer) protocol() session.Protocol {
	best, n := session.Unknown, 0
	for p, c := range s.votes {
		if p != session.Unknown && (c > n || (c == n && p < best)) {
			best, n = p, c
		}
	}
	return best
}

type inspectAgg struct {
	servers map[netip.AddrPort]*inspectServer
	keys    bool // a key log was given or found: the TLS columns are shown
}

// tlsKeyed says whether s begins with a TLS ClientHello and whether keys
// has secrets for its client random (the 32 bytes after the record
// header, the handshake header and the version).
func tlsKeyed(s *session.Session, keys tlsdecrypt.Keys) (isTLS, keyed bool) {
	if len(s.Chunks) == 0 {
		return false, false
	}
	b := s.Chunks[0].Data
	if len(b) < 43 || b[0] != 0x16 || b[1] != 3 || b[5] != 1 {
		return false, false
	}
	_, ok := keys.Lookup(b[11:43])
	return true, ok
}

func newInspectAgg() *inspectAgg {
	return &inspectAgg{servers: make(map[netip.AddrPort]*inspectServer)}
}

func (a *inspectAgg) add(r *inspectRow) {
	s := a.servers[r.server]
	if s == nil {
		s = &inspectServer{addr: r.server, first: r.start, votes: make(map[session.Protocol]int)}
		a.servers[r.server] = s
	}
	s.sessions++
	if r.flags&session.Partial != 0 {
		s.partial++
	}
	if r.flags&session.Holes != 0 {
		s.holes++
	}
	if r.flags&session.Truncated != 0 {
		s.truncated++
	}
	if r.flags&session.ServerFirst != 0 {
		s.serverFirst++
	}
	s.clientBytes += r.clientBytes
	s.serverBytes += r.serverBytes
	end := r.start + r.duration
	if end < r.start {
		end = math.MaxInt64 // saturate: captures with absurd timestamps exist
	}
	s.first = min(s.first, r.start)
	s.last = max(s.last, end)
	s.votes[r.proto]++
	if r.tls {
		s.tls++
		if r.tlsKeyed {
			s.tlsKeyed++
		}
	}
}

// sorted lists the servers, most sessions first.
func (a *inspectAgg) sorted() []*inspectServer {
	out := make([]*inspectServer, 0, len(a.servers))
	for _, s := range a.servers {
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y *inspectServer) int {
		if x.sessions != y.sessions {
			return y.sessions - x.sessions
		}
		return x.addr.Compare(y.addr)
	})
	return out
}

type inspectWriter interface {
	session(r *inspectRow)
	finish(a *inspectAgg, c capture.Stats, b session.Stats, readErr error)
}

// inspectText writes tables. Session rows are streamed as the sessions
// end in the capture, so their columns have fixed widths; the server table
// comes last, when the totals are known.
type inspectText struct {
	w       io.Writer
	verbose bool
	rows    int
}

const inspectSessionHeader = "%-6s  %-22s  %-22s  %12s  %12s  %6s  %12s  %12s  %-11s  %-10s  %s\n"
const inspectSessionRow = "%-6d  %-22s  %-22s  %12s  %12s  %6d  %12d  %12d  %-11s  %-10s  %s\n"

func (t *inspectText) session(r *inspectRow) {
	if t.rows == 0 {
		fmt.Fprintf(t.w, inspectSessionHeader, "ID", "CLIENT", "SERVER", "START", "DURATION", "CHUNKS", "CLIENT BYTES", "SERVER BYTES", "END", "PROTOCOL", "FLAGS")
	}
	t.rows++
	fmt.Fprintf(t.w, inspectSessionRow, r.id, r.client, r.server, inspectSeconds(r.start, 6), inspectSeconds(r.duration, 6),
		r.chunks, r.clientBytes, r.serverBytes, r.end, r.proto, r.flags)
}

func (t *inspectText) finish(a *inspectAgg, c capture.Stats, b session.Stats, readErr error) {
	servers := a.sorted()
	if len(servers) == 0 {
		return
	}
	if t.rows > 0 {
		fmt.Fprintln(t.w)
	}
	width := len("SERVER")
	for _, s := range servers {
		width = max(width, len(s.addr.String()))
	}
	hdr := "%-*s  %-10s  %8s  %7s  %12s  %12s  %12s  %12s"
	fmt.Fprintf(t.w, hdr, width, "SERVER", "PROTOCOL", "SESSIONS", "PARTIAL", "CLIENT BYTES", "SERVER BYTES", "FIRST START", "SPAN")
	if a.keys {
		fmt.Fprintf(t.w, "  %12s", "TLS KEYED")
	}
	fmt.Fprintln(t.w)
	for _, s := range servers {
		fmt.Fprintf(t.w, "%-*s  %-10s  %8d  %7d  %12d  %12d  %12s  %12s", width, s.addr, s.protocol(), s.sessions, s.partial,
			s.clientBytes, s.serverBytes, inspectSeconds(s.first, 3), inspectSeconds(s.last-s.first, 3))
		if a.keys {
			fmt.Fprintf(t.w, "  %12s", fmt.Sprintf("%d/%d", s.tlsKeyed, s.tls))
		}
		fmt.Fprintln(t.w)
	}
	partial := 0
	for _, s := range servers {
		partial += s.partial
	}
	fmt.Fprintf(t.w, "\n%d session%s (%d partial) to %d server%s, from %d TCP segments in %d frames spanning %s\n",
		b.Sessions, inspectPlural(int(b.Sessions)), partial, len(servers), inspectPlural(len(servers)), c.TCP, c.Frames, inspectSeconds(c.Last.Sub(c.First), 3))
	var notes []string
	if b.NoClientData > 0 {
		notes = append(notes, fmt.Sprintf("%d connection%s without a handshake or client data", b.NoClientData, inspectPlural(int(b.NoClientData))))
	}
	if b.Ignored > 0 {
		notes = append(notes, fmt.Sprintf("%d segment%s to servers not selected", b.Ignored, inspectPlural(int(b.Ignored))))
	}
	if readErr != nil {
		notes = append(notes, "the capture is damaged: the listing stops where reading did")
	}
	if len(notes) > 0 {
		fmt.Fprintf(t.w, "not listed: %s\n", strings.Join(notes, "; "))
	}
}

func inspectPlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// inspectSeconds prints a duration in seconds with a fixed number of
// decimals ("1.250s"): one unit lines up in columns and compares at a
// glance.
func inspectSeconds(d time.Duration, decimals int) string {
	return strconv.FormatFloat(d.Seconds(), 'f', decimals, 64) + "s"
}

// inspectJSON writes one JSON document:
//
//	{"version":1, "file":..., "sessions":[...] (with -v), "servers":[...], "stats":{...}, "error":... (if reading failed)}
//
// Sessions are streamed one per line as they are emitted; the document is
// closed properly even when the capture turns out to be damaged.
type inspectJSON struct {
	w       io.Writer
	file    string
	verbose bool
	started bool
	rows    int
}

type inspectSessionJSON struct {
	ID          uint64   `json:"id"`
	Client      string   `json:"client"`
	Server      string   `json:"server"`
	StartS      float64  `json:"start_s"`
	DurationS   float64  `json:"duration_s"`
	Chunks      int      `json:"chunks"`
	ClientBytes int64    `json:"client_bytes"`
	ServerBytes int64    `json:"server_bytes"`
	End         string   `json:"end"`
	Flags       []string `json:"flags"`
	Protocol    string   `json:"protocol"`
	EndedBefore uint64   `json:"ended_before"`
}

type inspectServerJSON struct {
	Server      string  `json:"server"`
	Protocol    string  `json:"protocol"`
	Sessions    int     `json:"sessions"`
	Partial     int     `json:"partial"`
	Holes       int     `json:"holes"`
	Truncated   int     `json:"truncated"`
	ServerFirst int     `json:"server_first"`
	ClientBytes int64   `json:"client_bytes"`
	ServerBytes int64   `json:"server_bytes"`
	FirstStartS float64 `json:"first_start_s"`
	SpanS       float64 `json:"span_s"`
	// With a key log: the sessions that began with a TLS ClientHello,
	// and those of them it has keys for.
	TLSSessions *int `json:"tls_sessions,omitempty"`
	TLSKeyed    *int `json:"tls_keyed,omitempty"`
}

type inspectLinkTypeJSON struct {
	LinkType int    `json:"link_type"`
	Name     string `json:"name"`
	Frames   int64  `json:"frames"`
}

type inspectStatsJSON struct {
	Frames           int64                 `json:"frames"`
	Bytes            int64                 `json:"bytes"`
	TCPSegments      int64                 `json:"tcp_segments"`
	NonTCP           int64                 `json:"non_tcp"`
	Malformed        int64                 `json:"malformed"`
	Truncated        int64                 `json:"truncated"`
	TruncatedHeaders int64                 `json:"truncated_headers"`
	Fragments        int64                 `json:"ip_fragments"`
	Reassembled      int64                 `json:"ip_reassembled"`
	FragDropped      int64                 `json:"ip_fragments_dropped"`
	LinkTypes        []inspectLinkTypeJSON `json:"link_types"`
	First            string                `json:"first,omitempty"`
	Last             string                `json:"last,omitempty"`
	DurationS        float64               `json:"duration_s"`
	Warning          string                `json:"warning,omitempty"`

	Sessions       uint64 `json:"sessions"`
	NoClientData   uint64 `json:"no_client_data"`
	Ignored        uint64 `json:"ignored_segments"`
	Stray          uint64 `json:"stray_segments"`
	DuplicateBytes uint64 `json:"duplicate_bytes"`
	HoleBytes      uint64 `json:"hole_bytes"`
	MaxOpen        int    `json:"max_open_connections"`
}

func (j *inspectJSON) begin() {
	if j.started {
		return
	}
	j.started = true
	name, _ := json.Marshal(j.file)
	fmt.Fprintf(j.w, "{\"version\":%d,\"file\":%s", inspectJSONVersion, name)
	if j.verbose {
		io.WriteString(j.w, ",\"sessions\":[")
	}
}

func (j *inspectJSON) session(r *inspectRow) {
	j.begin()
	if j.rows > 0 {
		io.WriteString(j.w, ",")
	}
	j.rows++
	b, _ := json.Marshal(inspectSessionJSON{
		ID: r.id, Client: r.client.String(), Server: r.server.String(),
		StartS: r.start.Seconds(), DurationS: r.duration.Seconds(),
		Chunks: r.chunks, ClientBytes: r.clientBytes, ServerBytes: r.serverBytes,
		End: r.end.String(), Flags: r.flags.Names(), Protocol: string(r.proto), EndedBefore: r.endedBefore,
	})
	io.WriteString(j.w, "\n")
	j.w.Write(b)
}

func (j *inspectJSON) finish(a *inspectAgg, c capture.Stats, b session.Stats, readErr error) {
	j.begin()
	if j.verbose {
		io.WriteString(j.w, "\n]")
	}
	servers := []inspectServerJSON{}
	for _, s := range a.sorted() {
		servers = append(servers, inspectServerJSON{
			Server: s.addr.String(), Protocol: string(s.protocol()),
			Sessions: s.sessions, Partial: s.partial, Holes: s.holes, Truncated: s.truncated, ServerFirst: s.serverFirst,
			ClientBytes: s.clientBytes, ServerBytes: s.serverBytes,
			FirstStartS: s.first.Seconds(), SpanS: (s.last - s.first).Seconds(),
		})
		if a.keys {
			n, k := s.tls, s.tlsKeyed
			servers[len(servers)-1].TLSSessions, servers[len(servers)-1].TLSKeyed = &n, &k
		}
	}
	st := inspectStatsJSON{
		Frames: c.Frames, Bytes: c.Bytes, TCPSegments: c.TCP, NonTCP: c.NonTCP, Malformed: c.Malformed,
		Truncated: c.Truncated, TruncatedHeaders: c.TruncatedHeaders,
		Fragments: c.Frag.Fragments, Reassembled: c.Frag.Reassembled, FragDropped: c.Frag.Dropped,
		LinkTypes: []inspectLinkTypeJSON{},
		Sessions:  b.Sessions, NoClientData: b.NoClientData, Ignored: b.Ignored, Stray: b.Stray,
		DuplicateBytes: b.DuplicateBytes, HoleBytes: b.HoleBytes, MaxOpen: b.MaxOpen,
	}
	for _, lt := range c.LinkTypes {
		st.LinkTypes = append(st.LinkTypes, inspectLinkTypeJSON{LinkType: int(lt.LinkType), Name: inspectLinkTypeName(lt.LinkType), Frames: lt.Frames})
	}
	if c.Frames > 0 {
		st.First, st.Last = c.First.Format(time.RFC3339Nano), c.Last.Format(time.RFC3339Nano)
		st.DurationS = c.Last.Sub(c.First).Seconds()
	}
	if c.Warning != nil {
		st.Warning = c.Warning.Error()
	}
	sb, _ := json.Marshal(servers)
	tb, _ := json.Marshal(st)
	fmt.Fprintf(j.w, ",\n\"servers\":%s,\n\"stats\":%s", sb, tb)
	if readErr != nil {
		eb, _ := json.Marshal(readErr.Error())
		fmt.Fprintf(j.w, ",\n\"error\":%s", eb)
	}
	io.WriteString(j.w, "}\n")
}

// inspectLinkTypeName is the link type's name without its number
// (capture.LinkTypeName gives "1 (ETHERNET)").
func inspectLinkTypeName(lt layers.LinkType) string {
	n := capture.LinkTypeName(lt)
	if i := strings.IndexByte(n, '('); i >= 0 && strings.HasSuffix(n, ")") {
		return n[i+1 : len(n)-1]
	}
	return ""
}
