package main

// Helpers of the privileged end-to-end tests (e2e_test.go): the built
// binary, a counting target server that runs as a re-executed test binary
// inside the test's namespace, capture builders, the report as the tests
// read it, and a snapshot of the namespace's network state.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// Environment of the re-executed test binary in server mode.
const (
	e2eServerModeEnv   = "TCOPY_E2E_SERVER_MODE"   // http, reset or silent
	e2eServerListenEnv = "TCOPY_E2E_SERVER_LISTEN" // IP:PORT
)

// e2eGorace stops a race-enabled binary from sleeping a second at exit
// (the race runtime's default atexit_sleep_ms=1000), which would add a
// second to every run and every server stop.
const e2eGorace = "GORACE=atexit_sleep_ms=0"

// e2eBuild is the tcopy-tun binary built once per test process, into a
// directory TestMain removes; e2eStatic the same without cgo (see
// e2eStaticBinary).
type e2eBuilt struct {
	once sync.Once
	dir  string
	path string
	err  error
}

var e2eBuild, e2eStatic e2eBuilt

func TestMain(m *testing.M) {
	if os.Getenv(e2eServerModeEnv) != "" {
		os.Exit(e2eServerMain(os.Getenv(e2eServerModeEnv), os.Getenv(e2eServerListenEnv)))
	}
	code := m.Run()
	for _, b := range []*e2eBuilt{&e2eBuild, &e2eStatic} {
		if b.dir != "" {
			os.RemoveAll(b.dir)
		}
	}
	os.Exit(code)
}

// e2eBinary builds the command once (with the race detector when the tests
// have it, so the product's own races fail the e2e tests too) and returns
// its path. The directory is world-readable so that a run as nobody can
// execute it.
func e2eBinary(t *testing.T) string {
	t.Helper()
	return e2eBuild.build(t, e2eRace)
}

// e2eStaticBinary is the command built without cgo (so without the race
// detector): a static binary, for runs as nobody. A dynamic one needs
// nobody to read the C library, which a chroot whose root is 0700 (the
// fresh-machine check's) does not allow: the run would end in the loader,
// not in tcopy-tun.
func e2eStaticBinary(t *testing.T) string {
	t.Helper()
	return e2eStatic.build(t, false, "CGO_ENABLED=0")
}

func (b *e2eBuilt) build(t *testing.T, race bool, env ...string) string {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "tcopy-tun-e2e-")
		if b.err != nil {
			return
		}
		if b.err = os.Chmod(b.dir, 0o755); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "tcopy-tun")
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		c := exec.Command("go", append(args, ".")...)
		c.Env = append(os.Environ(), env...)
		out, err := c.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatalf("build tcopy-tun: %v", b.err)
	}
	return b.path
}

// e2e is one test's world: a fresh namespace, a scratch directory and the
// namespace's network state before the binary ran (see snapshot).
type e2e struct {
	t      *testing.T
	ns     *tuntest.Netns
	bin    string
	dir    string
	before string
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	ns := tuntest.NewNetns(t) // probes the capability first: skip or fail
	x := &e2e{t: t, ns: ns, bin: e2eBinary(t), dir: t.TempDir()}
	// A run as nobody must be able to read what the test writes here.
	for _, d := range []string{x.dir, filepath.Dir(x.dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// snapshot records the namespace's network state once the test has set it
// up (addresses, servers), for assertClean.
func (x *e2e) snapshot() {
	x.t.Helper()
	x.before = x.state()
}

// file writes data into the scratch directory and returns its path.
func (x *e2e) file(name string, data []byte) string {
	x.t.Helper()
	p := filepath.Join(x.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		x.t.Fatal(err)
	}
	return p
}

// e2eRun is a finished run of the binary.
type e2eRun struct {
	code           int            // exit code; -1 when killed by a signal
	signal         syscall.Signal // the signal that killed it
	stdout, stderr string
	wall           time.Duration
}

// run runs the binary with args inside the namespace and waits at most
// limit for it (then kills it and fails).
func (x *e2e) run(limit time.Duration, args ...string) e2eRun {
	x.t.Helper()
	p := x.start(args...)
	return p.wait(limit)
}

// e2eProc is a running binary.
type e2eProc struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr *tuntest.LockedBuffer
	began          time.Time
}

func (x *e2e) start(args ...string) *e2eProc {
	x.t.Helper()
	return x.startCmd(x.ns.Command(append([]string{x.bin}, args...)...))
}

func (x *e2e) startCmd(c *exec.Cmd) *e2eProc {
	x.t.Helper()
	p := &e2eProc{t: x.t, cmd: c, stdout: &tuntest.LockedBuffer{}, stderr: &tuntest.LockedBuffer{}}
	c.Stdout, c.Stderr = p.stdout, p.stderr
	if c.Env == nil {
		c.Env = append(os.Environ(), e2eGorace)
	}
	if c.Dir == "" {
		c.Dir = x.dir
	}
	p.began = time.Now()
	x.ns.StartCmd(x.t, c) // killed by PID at cleanup if still running
	x.t.Logf("started: %s", strings.Join(c.Args, " "))
	return p
}

// wait waits for the process to exit, at most limit.
func (p *e2eProc) wait(limit time.Duration) e2eRun {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-done
		p.t.Fatalf("%s did not exit within %v\nstderr:\n%s", p.cmd.Args[4:], limit, p.stderr)
	}
	r := e2eRun{code: 0, stdout: p.stdout.String(), stderr: p.stderr.String(), wall: time.Since(p.began)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	case errors.As(err, &ee):
		r.code = -1
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.signal = ws.Signal()
		}
	case err != nil:
		p.t.Fatalf("%s: %v\nstderr:\n%s", p.cmd.Args[4:], err, r.stderr)
	}
	p.t.Logf("exit %d after %v; stderr:\n%s", r.code, r.wall.Round(time.Millisecond), r.stderr)
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		p.t.Errorf("the race detector reported a data race in tcopy-tun")
	}
	return r
}

// waitTUN waits until the TUN of the tcopy-tun p exists: a live capture
// is open then (the source opens first).
func (x *e2e) waitTUN(p *e2eProc) {
	x.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if out, _ := x.ns.Output("ip", "link"); strings.Contains(out, "tcopy0") {
			return
		}
		if time.Now().After(deadline) {
			p.signal(syscall.SIGKILL)
			x.t.Fatalf("tcopy0 did not appear within 10s: %s", p.wait(5*time.Second).stderr)
		}
	}
}

func (p *e2eProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// state is the namespace's network configuration as the product could
// change it: links, addresses, routes and rules of both families, and every
// per-interface and forwarding sysctl. Counters are left out (no -s), so two
// snapshots of an untouched namespace are equal.
func (x *e2e) state() string {
	x.t.Helper()
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "rule", "show"},
		{"ip", "-6", "rule", "show"},
		// One process for the few hundred sysctl files, as path:value;
		// unreadable ones (stable_secret) are left out the same way each
		// time.
		{"sh", "-c", `grep -r -H '' /proc/sys/net/ipv4/conf /proc/sys/net/ipv6/conf /proc/sys/net/ipv4/ip_forward 2>/dev/null; true`},
	} {
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(c, " "), x.ns.Run(x.t, c...))
	}
	return b.String()
}

// assertClean checks that the namespace is back to the state newE2E saw:
// no device, address, route, rule or sysctl left. The kernel removes a
// non-persistent TUN when its last fd closes; a short grace covers a
// process whose exit is still being torn down.
func (x *e2e) assertClean() {
	x.t.Helper()
	if x.before == "" {
		x.t.Fatal("assertClean without snapshot")
	}
	var now string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if now = x.state(); now == x.before || time.Now().After(deadline) {
			break
		}
	}
	if now != x.before {
		x.t.Errorf("the namespace's network state changed:\n%s", lineDiff(x.before, now))
	}
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out strings.Builder
	for _, l := range al {
		if !slices.Contains(bl, l) {
			fmt.Fprintf(&out, "- %s\n", l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			fmt.Fprintf(&out, "+ %s\n", l)
		}
	}
	return out.String()
}

// ---- captures ----

// e2eSession describes one HTTP/1.1 connection of a generated capture; its
// answers follow replaytest.HTTPResponse, which the test server implements,
// so a faithful replay matches the capture byte for byte.
type e2eSession struct {
	Client, Server string // ip:port, both of one family
	Start          time.Duration
	// ISN sets the client's initial sequence number (0: Conv's default).
	ISN       uint32
	Requests  []replaytest.DemoRequest
	Pipelined bool          // every request written before any answer
	Think     time.Duration // client think time between keep-alive requests
}

// e2eCapture builds an Ethernet pcap of the sessions. A session whose last
// request asks for Connection: close is closed by the server, the others by
// the client, as in the demo capture.
func e2eCapture(t *testing.T, sessions []e2eSession) []byte {
	t.Helper()
	t0 := replaytest.DemoStart()
	var convs [][]capture.Packet
	for _, s := range sessions {
		c := replaytest.NewConv(s.Client, s.Server, t0.Add(s.Start))
		if s.ISN != 0 {
			c.ISN(s.ISN, s.ISN^0x5a5a5a5a)
		}
		c.Step = 200 * time.Microsecond
		c.Handshake()
		closing := false
		if s.Pipelined {
			var all strings.Builder
			for _, r := range s.Requests {
				all.WriteString(r.Raw())
				closing = closing || r.Close
			}
			c.Send(all.String()).Wait(time.Millisecond)
			for _, r := range s.Requests {
				c.Reply(e2eResponse(r.Method, r.Path, len(r.Body), r.Close))
			}
			c.ClientAck()
		} else {
			for j, r := range s.Requests {
				if j > 0 {
					c.Wait(s.Think)
				}
				c.Send(r.Raw()).Wait(time.Millisecond).Reply(e2eResponse(r.Method, r.Path, len(r.Body), r.Close))
				if r.Close {
					closing = true
					break
				}
				c.ClientAck()
			}
		}
		if closing {
			c.CloseServer()
		} else {
			c.Wait(2 * time.Millisecond).CloseClient()
		}
		convs = append(convs, c.Packets())
	}
	frames, err := replaytest.Frames(replaytest.LinkEthernet, replaytest.Merge(convs...))
	if err != nil {
		t.Fatal(err)
	}
	return replaytest.Pcap(replaytest.PcapOptions{LinkType: replaytest.LinkEthernet}, frames)
}

// e2eResponse is the answer the test server gives and the generated
// captures record: replaytest.HTTPResponse, except that GET /bytes/N is
// answered with an N-byte body (a large download).
func e2eResponse(method, path string, bodyLen int, close bool) string {
	n, err := strconv.Atoi(strings.TrimPrefix(path, "/bytes/"))
	if method != "GET" || !strings.HasPrefix(path, "/bytes/") || err != nil || n < 0 {
		return replaytest.HTTPResponse(method, path, bodyLen, close)
	}
	var b strings.Builder
	b.Grow(n + 128)
	fmt.Fprintf(&b, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n", n)
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	for i := 0; i < n; i++ {
		b.WriteByte(byte('a' + i*7%26))
	}
	return b.String()
}

// wantConn is a connection the target must see: the requests of one
// captured session, in order.
type wantConn struct {
	client   netip.AddrPort // the captured client
	requests []serverRequest
}

func wantsOf(sessions []e2eSession) []wantConn {
	var w []wantConn
	for _, s := range sessions {
		w = append(w, wantConn{client: netip.MustParseAddrPort(s.Client), requests: serverRequests(s.Requests)})
	}
	return w
}

func demoWants() []wantConn {
	var w []wantConn
	for _, s := range replaytest.DemoSessions() {
		w = append(w, wantConn{client: s.Client, requests: serverRequests(s.Requests)})
	}
	return w
}

func serverRequests(rs []replaytest.DemoRequest) []serverRequest {
	var out []serverRequest
	for _, r := range rs {
		out = append(out, serverRequest{Method: r.Method, Path: r.Path, BodyLen: len(r.Body), BodySHA: bodyHash([]byte(r.Body))})
	}
	return out
}

func bodyHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// ---- the report as the tests read it ----

type e2eReport struct {
	Version int `json:"version"`
	Summary struct {
		Planned    int            `json:"sessions_planned"`
		Replayed   int            `json:"sessions_replayed"`
		Succeeded  int            `json:"sessions_succeeded"`
		FailedN    int            `json:"sessions_failed"`
		NotStarted int            `json:"sessions_not_started"`
		Failed     map[string]int `json:"failed"`
		Deviations map[string]int `json:"deviations"`
		Wall       float64        `json:"wall_seconds"`
	} `json:"summary"`
	Totals struct {
		Sessions int            `json:"sessions"`
		Outcomes map[string]int `json:"outcomes"`
		Match    map[string]int `json:"match"`
	} `json:"totals"`
	Sessions []e2eRow `json:"sessions"`
}

type e2eRow struct {
	ID             int            `json:"id"`
	CapturedClient string         `json:"captured_client"`
	MappedClient   string         `json:"mapped_client"`
	LocalAddr      string         `json:"local_addr"`
	Target         string         `json:"target"`
	Outcome        string         `json:"outcome"`
	Error          string         `json:"error"`
	EndCaptured    string         `json:"end_captured"`
	EndReplayed    string         `json:"end_replayed"`
	Chunks         int            `json:"chunks"`
	ChunksSent     int            `json:"chunks_sent"`
	Match          string         `json:"match"`
	Deviations     map[string]int `json:"deviations"`
}

func readReport(t *testing.T, path string) *e2eReport {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	return parseReport(t, path, b)
}

// parseReport decodes a report; the whole of b must be the one JSON object
// (with --report -, standard output carries nothing else).
func parseReport(t *testing.T, name string, b []byte) *e2eReport {
	t.Helper()
	var r e2eReport
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("report %s: %v\n%s", name, err, b)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		t.Errorf("report %s: data after the JSON object: %.200q", name, rest)
	}
	if r.Version != 1 {
		t.Errorf("report version %d, want 1", r.Version)
	}
	if len(r.Sessions) != r.Totals.Sessions {
		t.Errorf("report has %d session rows, totals say %d", len(r.Sessions), r.Totals.Sessions)
	}
	return &r
}

// assertAllIdentical checks that n sessions were replayed, all ok, with
// answers identical to the capture.
func assertAllIdentical(t *testing.T, r *e2eReport, n int) {
	t.Helper()
	s := r.Summary
	if s.Planned != n || s.Replayed != n || s.Succeeded != n || s.FailedN != 0 {
		t.Errorf("summary: planned %d replayed %d succeeded %d failed %d (%v), want %d/%d/%d/0",
			s.Planned, s.Replayed, s.Succeeded, s.FailedN, s.Failed, n, n, n)
	}
	if r.Totals.Sessions != n || r.Totals.Outcomes["ok"] != n || r.Totals.Match["identical"] != n {
		t.Errorf("totals: %d sessions, outcomes %v, match %v; want %d ok and identical", r.Totals.Sessions, r.Totals.Outcomes, r.Totals.Match, n)
	}
	for _, row := range r.Sessions {
		if row.Outcome != "ok" || row.Match != "identical" {
			t.Errorf("session %d (%s as %s): outcome %s (%s), match %s", row.ID, row.CapturedClient, row.LocalAddr, row.Outcome, row.Error, row.Match)
		}
	}
}

// ---- the target server ----

// serverRequest is one request as the server parsed it.
type serverRequest struct {
	Method  string `json:"method"`
	Path    string `json:"path"`
	BodyLen int    `json:"body_len"`
	BodySHA string `json:"body_sha"`
}

func (r serverRequest) String() string {
	return fmt.Sprintf("%s %s (%d bytes %s)", r.Method, r.Path, r.BodyLen, r.BodySHA)
}

// serverConn is one accepted connection: who, what arrived in order, and
// how it ended ("eof": the client closed; "reset": the server reset it;
// "error: ...": a read error; "stopped": still open when the server was
// stopped).
type serverConn struct {
	Remote   string          `json:"remote"`
	Requests []serverRequest `json:"requests"`
	End      string          `json:"end"`
}

type serverStats struct {
	Accepted int          `json:"accepted"`
	Conns    []serverConn `json:"conns"`
}

// e2eServer is a target server running in the test's namespace: the test
// binary re-executed in server mode. Its stdout carries "ready", then one
// "req REMOTE METHOD PATH" line per request as it arrives (so a test can
// wait for progress), then, after SIGTERM, "stats JSON".
type e2eServer struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd

	mu    sync.Mutex
	cond  *sync.Cond
	reqs  int
	stats *serverStats
	eof   bool
	done  chan struct{}
	errb  tuntest.LockedBuffer
}

// startServer starts a server of the given mode ("http": answers like the
// capture's server; "reset": resets each connection after its first
// request; "silent": reads everything, never writes) listening on addr in
// the namespace, and waits until it listens.
func (x *e2e) startServer(mode, addr string) *e2eServer {
	x.t.Helper()
	s := &e2eServer{t: x.t, addr: addr, done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	exe, err := os.Executable()
	if err != nil {
		x.t.Fatal(err)
	}
	c := x.ns.Command(exe, "-test.run=^$")
	c.Env = append(os.Environ(), e2eGorace, e2eServerModeEnv+"="+mode, e2eServerListenEnv+"="+addr)
	out, err := c.StdoutPipe()
	if err != nil {
		x.t.Fatal(err)
	}
	c.Stderr = &s.errb
	s.cmd = c
	x.ns.StartCmd(x.t, c)
	ready := make(chan bool, 1)
	go s.read(out, ready)
	select {
	case ok := <-ready:
		if !ok {
			x.t.Fatalf("server %s %s did not start: %s", mode, addr, s.errb.String())
		}
	case <-time.After(20 * time.Second):
		x.t.Fatalf("server %s %s: not ready after 20s: %s", mode, addr, s.errb.String())
	}
	return s
}

func (s *e2eServer) read(out io.Reader, ready chan<- bool) {
	defer close(s.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "ready":
			ready <- true
			sent = true
		case strings.HasPrefix(line, "req "):
			s.mu.Lock()
			s.reqs++
			s.cond.Broadcast()
			s.mu.Unlock()
		case strings.HasPrefix(line, "stats "):
			var st serverStats
			if err := json.Unmarshal([]byte(line[len("stats "):]), &st); err == nil {
				s.mu.Lock()
				s.stats = &st
				s.mu.Unlock()
			}
		}
	}
	if !sent {
		ready <- false
	}
	s.mu.Lock()
	s.eof = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// waitRequests waits until at least n requests have arrived, at most limit.
func (s *e2eServer) waitRequests(n int, limit time.Duration) {
	s.t.Helper()
	timer := time.AfterFunc(limit, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(limit)
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.reqs < n && !s.eof && time.Now().Before(deadline) {
		s.cond.Wait()
	}
	if s.reqs < n {
		s.t.Fatalf("server %s: %d requests arrived within %v, waited for %d", s.addr, s.reqs, limit, n)
	}
}

// stop asks the server for its counts and waits for it to exit.
func (s *e2eServer) stop() *serverStats {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatalf("stop server: %v", err)
	}
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Fatalf("server %s did not stop", s.addr)
	}
	if err := s.cmd.Wait(); err != nil {
		s.t.Errorf("server %s: %v\n%s", s.addr, err, s.errb.String())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stats == nil {
		s.t.Fatalf("server %s printed no stats: %s", s.addr, s.errb.String())
	}
	s.t.Logf("server %s: %d connections accepted", s.addr, s.stats.Accepted)
	return s.stats
}

// assertDelivered checks the server's side against the report: every
// session the report lists as connected arrived at the server from its
// local address, with exactly the requests of the captured session of its
// client, in order; no connection arrived that the report does not
// explain; and every wanted session was delivered. partial, when set,
// accepts a prefix of the requests (a run that was interrupted).
func assertDelivered(t *testing.T, r *e2eReport, st *serverStats, wants []wantConn, partial bool) {
	t.Helper()
	byRemote := map[netip.AddrPort]*serverConn{}
	for i := range st.Conns {
		c := &st.Conns[i]
		ap, err := netip.ParseAddrPort(c.Remote)
		if err != nil {
			t.Fatalf("server conn remote %q: %v", c.Remote, err)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if byRemote[ap] != nil {
			t.Errorf("two connections from %s reached the server: a 4-tuple was reused", ap)
		}
		byRemote[ap] = c
	}
	pending := map[netip.AddrPort][][]serverRequest{}
	for _, w := range wants {
		pending[w.client] = append(pending[w.client], w.requests)
	}
	matched := 0
	for _, row := range r.Sessions {
		if row.LocalAddr == "" {
			continue // never connected
		}
		local := netip.MustParseAddrPort(row.LocalAddr)
		c := byRemote[netip.AddrPortFrom(local.Addr().Unmap(), local.Port())]
		if c == nil {
			t.Errorf("session %d (%s) connected from %s, but the server saw no connection from there", row.ID, row.CapturedClient, row.LocalAddr)
			continue
		}
		matched++
		cand := pending[netip.MustParseAddrPort(row.CapturedClient)]
		found := -1
		for i, reqs := range cand {
			if slices.Equal(c.Requests, reqs) || (partial && len(c.Requests) <= len(reqs) && slices.Equal(c.Requests, reqs[:len(c.Requests)])) {
				found = i
				break
			}
		}
		if found < 0 {
			t.Errorf("session %d (%s as %s): the server got %v, want one of %v", row.ID, row.CapturedClient, row.LocalAddr, c.Requests, cand)
			continue
		}
		pending[netip.MustParseAddrPort(row.CapturedClient)] = slices.Delete(cand, found, found+1)
	}
	if matched != len(st.Conns) || st.Accepted != len(st.Conns) {
		t.Errorf("server accepted %d connections (%d recorded), the report explains %d", st.Accepted, len(st.Conns), matched)
	}
	if !partial {
		for c, left := range pending {
			if len(left) > 0 {
				t.Errorf("captured client %s: %d session(s) never delivered: %v", c, len(left), left)
			}
		}
	}
}

// e2eServerMain is the server mode of the test binary. It exits 0 after
// printing its stats when it gets SIGTERM.
func e2eServerMain(mode, addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen %s: %v\n", addr, err)
		return 1
	}
	srv := &testServer{mode: mode, ln: ln, out: bufio.NewWriter(os.Stdout), live: map[net.Conn]int{}}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	srv.println("ready")
	srv.wg.Add(1)
	go srv.serve()
	<-sig
	return srv.stop()
}

// testServer is the server mode's state. out is shared by the connection
// goroutines under mu.
type testServer struct {
	mode string
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	out      *bufio.Writer
	accepted int
	conns    []serverConn
	live     map[net.Conn]int // open connection → index in conns
}

func (s *testServer) println(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.printlnLocked(line)
}

func (s *testServer) printlnLocked(line string) {
	s.out.WriteString(line + "\n")
	s.out.Flush()
}

func (s *testServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.accepted++
		i := len(s.conns)
		s.conns = append(s.conns, serverConn{Remote: c.RemoteAddr().String(), Requests: []serverRequest{}})
		s.live[c] = i
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			end := s.handle(c, i)
			s.mu.Lock()
			if s.conns[i].End == "" {
				s.conns[i].End = end
			}
			delete(s.live, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// handle reads requests until the client closes, answering them in "http"
// mode (in order, so pipelining works), resetting after the first one in
// "reset" mode, and never answering in "silent" mode.
func (s *testServer) handle(c net.Conn, i int) string {
	br := bufio.NewReader(c)
	r := textproto.NewReader(br)
	w := bufio.NewWriter(c)
	for {
		line, err := r.ReadLine()
		if errors.Is(err, io.EOF) {
			return "eof"
		}
		if err != nil {
			return "error: " + err.Error()
		}
		method, path, ok := parseRequestLine(line)
		if !ok {
			return fmt.Sprintf("error: bad request line %q", line)
		}
		hdr, err := r.ReadMIMEHeader()
		if err != nil {
			return "error: headers: " + err.Error()
		}
		n, _ := strconv.Atoi(hdr.Get("Content-Length"))
		body := make([]byte, max(n, 0))
		if _, err := io.ReadFull(br, body); err != nil {
			return "error: body: " + err.Error()
		}
		req := serverRequest{Method: method, Path: path, BodyLen: len(body), BodySHA: bodyHash(body)}
		closing := strings.EqualFold(hdr.Get("Connection"), "close")
		s.mu.Lock()
		s.conns[i].Requests = append(s.conns[i].Requests, req)
		s.printlnLocked(fmt.Sprintf("req %s %s %s", c.RemoteAddr(), method, path))
		s.mu.Unlock()
		switch s.mode {
		case "reset":
			// SO_LINGER 0: close sends an RST, mid-session.
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return "reset"
		case "silent":
			continue
		}
		w.WriteString(e2eResponse(method, path, len(body), closing))
		// Answers to a pipelined batch leave together, as from a real server.
		if br.Buffered() == 0 || closing {
			if err := w.Flush(); err != nil {
				return "error: write: " + err.Error()
			}
		}
		if closing {
			return "closed"
		}
	}
}

// stop closes the listener, gives open connections a moment to end by
// themselves, then closes them, and prints the stats.
func (s *testServer) stop() int {
	s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(500 * time.Millisecond):
		s.mu.Lock()
		for c, i := range s.live {
			if s.conns[i].End == "" {
				s.conns[i].End = "stopped"
			}
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(serverStats{Accepted: s.accepted, Conns: s.conns})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.printlnLocked("stats " + string(b))
	return 0
}
