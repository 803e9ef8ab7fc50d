package main

// The real-server suite (issue 4): real servers driven by their real clients,
// captured by the real capture tools, replayed by the built tcopy-tun into a
// fresh instance of the same server, at --speed 1 and --speed max. A replay
// is good when the second server ends in the same state as the first and the
// report says every session was delivered, with the expected match class.
//
// Topology (every test makes its own pair of namespaces with tuntest):
//
//	client netns  10.77.0.2/24 ── veth ── 10.77.0.1/24  server netns
//	(real client; tcopy-tun        (real server, tcpdump; tcopy-tun for a
//	 in "target on another host")   target on the same host)
//
// For a local target tcopy-tun runs in the server's namespace and dials
// 10.77.0.1 through its TUN. For "target on another host" it runs in the
// client's namespace with --forward, and the server's namespace routes the
// client range back to 10.77.0.2, as host B would route it back to host A.
//
// Servers and capture tools run in the foreground and are stopped by PID;
// the namespaces are deleted when the test ends, also when it fails.
//
// The files: realserver_test.go (this one: the scenario runner, captures,
// replay, report checks), realserver_redis_test.go, realserver_nginx_test.go,
// realserver_httpd_test.go (the project's own HTTP server and Go client, run
// as helper processes of the test binary), realserver_mariadb_test.go (a
// client that creates the schema, then workers that use it),
// realserver_shapes_test.go (capture shapes: SLL2, SLL, nanosecond pcap,
// multi-interface pcapng) and realserver_forward_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// Addresses of the suite's two namespaces, and the client range tcopy-tun
// maps captured clients into (its default).
const (
	realServerIP  = "10.77.0.1"
	realClientIP  = "10.77.0.2"
	realPrefix    = 24
	realClientNet = "198.18.0.0/15"
)

// Bounds: every wait in the suite ends.
const (
	realStartTimeout   = 15 * time.Second        // a server accepts connections, a capture tool is listening
	realStopTimeout    = 15 * time.Second        // a stopped process has exited
	realClientTimeout  = 60 * time.Second        // a real client's run
	realReplayTimeout  = 2 * time.Minute         // one tcopy-tun run
	realDateResolution = 2 * time.Second         // see runRealScenario
	realBlockTimeout   = 1200 * time.Millisecond // see capturer.stop
)

// realTool is an external program the suite needs and the Debian package
// that ships it (the remedy printed when it is missing).
type realTool struct{ name, pkg string }

var (
	toolGo             = realTool{"go", "golang-go (the suite builds tcopy-tun)"}
	toolTcpdump        = realTool{"tcpdump", "tcpdump"}
	toolTshark         = realTool{"tshark", "tshark"}
	toolDumpcap        = realTool{"dumpcap", "tshark (wireshark-common)"}
	toolRedisServer    = realTool{"redis-server", "redis-server"}
	toolRedisCli       = realTool{"redis-cli", "redis-tools"}
	toolRedisBenchmark = realTool{"redis-benchmark", "redis-tools"}
	toolNginx          = realTool{"nginx", "nginx"}
	toolAb             = realTool{"ab", "apache2-utils"}
	toolCurl           = realTool{"curl", "curl"}
)

// requireReal checks what a TestPrivilegedReal... test needs: the
// capability (tuntest.Privileged) and the external programs. A missing
// program skips the test with the package to install, or fails it when
// TCOPY_TUN_PRIVILEGED_TESTS=1 (make check installs them all as root: make deps), so that a
// runner without them cannot pass by skipping.
func requireReal(t *testing.T, tools ...realTool) {
	t.Helper()
	tuntest.Privileged(t)
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, tl := range tools {
		if _, err := exec.LookPath(tl.name); err != nil {
			missing = append(missing, tl.name)
			if !seen[tl.pkg] {
				seen[tl.pkg] = true
				pkgs = append(pkgs, tl.pkg)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s not found in PATH: install %s (Debian: apt-get install the package named)",
		strings.Join(missing, ", "), strings.Join(pkgs, ", "))
	if os.Getenv(tuntest.EnvPrivileged) == "1" {
		t.Fatalf("%s; %s=1 makes this a failure", msg, tuntest.EnvPrivileged)
	}
	t.Skip(msg)
}

// TestPrivilegedRealMissingTools checks requireReal's contract on the real
// suite: with the servers and clients missing from PATH (only ip(8) and
// nsenter(1) left, so the capability probe still passes),
// TestPrivilegedRealNginx fails when TCOPY_TUN_PRIVILEGED_TESTS=1 and skips
// otherwise, naming what to install.
func TestPrivilegedRealMissingTools(t *testing.T) {
	tuntest.Privileged(t)
	dir := t.TempDir()
	for _, tool := range []string{"ip", "nsenter"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ci := range []bool{true, false} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPrivilegedRealNginx$", "-test.v", "-test.count=1")
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, tuntest.EnvPrivileged+"=") {
				env = append(env, kv)
			}
		}
		env = append(env, "PATH="+dir)
		if ci {
			env = append(env, tuntest.EnvPrivileged+"=1")
		}
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		verdict, wantErr := "--- SKIP: TestPrivilegedRealNginx", false
		if ci {
			verdict, wantErr = "--- FAIL: TestPrivilegedRealNginx", true
		}
		if !strings.Contains(string(out), verdict) || (err != nil) != wantErr ||
			!strings.Contains(string(out), "nginx, ab, curl not found in PATH") || !strings.Contains(string(out), "apache2-utils") {
			t.Errorf("%s=%v, PATH without the tools: want %q naming nginx, ab, curl and their packages; got %v:\n%s",
				tuntest.EnvPrivileged, ci, verdict, err, out)
		}
	}
}

// buildTcopyTun builds the command under test (this package) into a
// temporary directory: the suite tests the built binary, as a user runs it,
// not the test binary's copy of the code. Under -race (make test) the binary
// gets the race detector too: a data race in tcopy-tun then fails the run
// (exit status 66 and the race report in its output).
func buildTcopyTun(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tcopy-tun")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if realRace {
		args = append(args, "-race")
	}
	out, err := exec.CommandContext(ctx, "go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build tcopy-tun: %v\n%s", err, out)
	}
	return bin
}

// realEnv is one test's pair of namespaces joined by a veth pair.
type realEnv struct {
	bin      string // the built tcopy-tun
	dir      string // the test's scratch directory
	srv, cli *tuntest.Netns
	srvIf    string // the server namespace's end of the veth
	cliIf    string // the client namespace's end
}

func newRealEnv(t *testing.T, bin string) *realEnv {
	t.Helper()
	srv, cli := tuntest.NewNetns(t), tuntest.NewNetns(t)
	p := tuntest.Veth(t, srv, cli, fmt.Sprintf("%s/%d", realServerIP, realPrefix), fmt.Sprintf("%s/%d", realClientIP, realPrefix))
	return &realEnv{bin: bin, dir: t.TempDir(), srv: srv, cli: cli, srvIf: p.A, cliIf: p.B}
}

// realProc is a foreground process of the suite (a server, a capture tool,
// tcopy-tun) started in a namespace. It is stopped by PID: by the test with
// signal/wait, or at cleanup (SIGKILL), before the namespace is deleted.
type realProc struct {
	name string
	cmd  *exec.Cmd
	out  *tuntest.LockedBuffer
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's result, set before done is closed
}

// startProc starts args in ns with its output collected; the output is
// logged when the test fails.
func startProc(t *testing.T, ns *tuntest.Netns, name string, args ...string) *realProc {
	t.Helper()
	return startProcCmd(t, name, ns.Command(args...))
}

// startProcEnv is startProc with env added to the test's environment.
func startProcEnv(t *testing.T, ns *tuntest.Netns, name string, env []string, args ...string) *realProc {
	t.Helper()
	cmd := ns.Command(args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	return startProcCmd(t, name, cmd)
}

// startProcStdin is startProc for a process the test writes to: the
// returned writer is its standard input (close it to send EOF).
func startProcStdin(t *testing.T, ns *tuntest.Netns, name string, args ...string) (*realProc, io.WriteCloser) {
	t.Helper()
	cmd := ns.Command(args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	return startProcCmd(t, name, cmd), stdin
}

// startProcCmd starts cmd, made by a namespace's Command, as startProc
// does.
func startProcCmd(t *testing.T, name string, cmd *exec.Cmd) *realProc {
	t.Helper()
	p := &realProc{name: name, cmd: cmd, out: &tuntest.LockedBuffer{}, done: make(chan struct{})}
	if p.cmd.Stdout == nil { // else the caller's (a pipe to another process)
		p.cmd.Stdout = p.out
	}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill() // by PID (pidfd where the kernel has one)
			select {
			case <-p.done:
			case <-time.After(realStopTimeout):
				t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *realProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit and returns its exit error.
func (p *realProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		// SIGQUIT first: a Go program (tcopy-tun, the helpers) prints its
		// goroutines, which is what a hang needs to be understood.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		t.Fatalf("%s did not exit within %v (stopped with SIGQUIT, then SIGKILL)\n%s", p.name, d, p.out.String())
		return nil
	}
}

// stop sends sig to the process by PID and waits for it to exit.
func (p *realProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if !p.exited() {
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("signal %s: %v", p.name, err)
		}
	}
	return p.wait(t, realStopTimeout)
}

// waitOutput waits until the process's output contains s.
func (p *realProc) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(realStartTimeout)
	for !strings.Contains(p.out.String(), s) {
		if p.exited() {
			t.Fatalf("%s exited before printing %q: %v\n%s", p.name, s, p.err, p.out.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v\n%s", p.name, s, realStartTimeout, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitListening waits until addr accepts TCP connections in ns. The probe
// connection carries no data; a server counts it the same way at every
// start, so states stay comparable.
func (p *realProc) waitListening(t *testing.T, ns *tuntest.Netns, addr string) {
	t.Helper()
	deadline := time.Now().Add(realStartTimeout)
	for {
		if p.exited() {
			t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.out.String())
		}
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting on %s within %v: %v\n%s", p.name, addr, realStartTimeout, err, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shortTempDir makes a directory for a server's files, removed when the
// test ends, under a short path: a Unix socket's path must stay under 108
// bytes, and t.TempDir's names carry the test's name.
func shortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runClient runs a real client in ns to its end and fails the test if it
// fails. It returns the client's output.
func runClient(t *testing.T, ns *tuntest.Netns, args ...string) string {
	t.Helper()
	p := startProc(t, ns, args[0], args...)
	if err := p.wait(t, realClientTimeout); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, p.out.String())
	}
	return p.out.String()
}

// ---- servers ----

// realServer is a kind of real server under test.
type realServer interface {
	// name names the server in messages.
	name() string
	// port is the TCP port it listens on (in the server namespace).
	port() uint16
	// start starts a fresh instance (empty state) in e.srv, listening on
	// realServerIP (and on loopback where a test needs it), and returns
	// once it accepts connections. tag names the instance's files.
	start(t *testing.T, e *realEnv, tag string) realInstance
	// checkMatch says whether a session's match class in the report is
	// right for what the capture holds of it.
	checkMatch(s *session.Session, match string) error
}

// realInstance is one running server.
type realInstance interface {
	// state stops the server by PID and returns its state as sorted lines:
	// two runs that leave equal lines left the server in the same state.
	state(t *testing.T) []string
}

// ---- capture ----

// captureShape is how the capture of a scenario is taken: the tool, its
// arguments, and what the file must look like.
type captureShape struct {
	name  string
	tools []realTool
	// args returns the capture command (run in the server namespace) that
	// writes file with only the traffic of port.
	args func(e *realEnv, file string, port uint16) []string
	// ready is what the tool prints once it captures.
	ready string
	// ext is the file's extension.
	ext string
	// check validates the written file's format (magic, link types).
	check func(t *testing.T, file string)
	// prime, when set, returns once the tool really captures (its ready
	// line can come before that).
	prime func(t *testing.T, e *realEnv, c *capturer)
}

// tcpdumpShape captures with tcpdump in the server namespace, with a large
// kernel buffer (-B, KiB). Not in immediate mode: packets are then handed
// over in full ring blocks, so a capture tool that the 2-core machine
// starves for a moment does not lose them (in immediate mode libpcap hands
// over nearly empty blocks, and a 64 MiB ring was seen to overflow while
// the machine was busy: "374 packets dropped by kernel" of 9345).
// capturer.stop waits for the block timeout before stopping it.
func tcpdumpShape(name string, iface func(e *realEnv) string, extra []string, magic uint32, link uint32) captureShape {
	return captureShape{
		name:  name,
		tools: []realTool{toolTcpdump},
		args: func(e *realEnv, file string, port uint16) []string {
			a := []string{"tcpdump", "-n", "-i", iface(e), "-B", "65536", "-s", "0", "-w", file}
			a = append(a, extra...)
			return append(a, "tcp", "port", strconv.Itoa(int(port)))
		},
		ready: "listening on",
		ext:   ".pcap",
		check: func(t *testing.T, file string) { checkPcapHeader(t, file, magic, link) },
	}
}

// Link types (LINKTYPE_ values) and pcap magics the shapes produce.
const (
	linkEthernet = 1
	linkSLL      = 113
	linkSLL2     = 276
	pcapMicro    = 0xa1b2c3d4
	pcapNano     = 0xa1b23c4d
)

// shapeEthernet is the default shape: tcpdump on the server's veth.
func shapeEthernet() captureShape {
	return tcpdumpShape("ethernet", func(e *realEnv) string { return e.srvIf }, nil, pcapMicro, linkEthernet)
}

// capturer is a running capture.
type capturer struct {
	shape captureShape
	proc  *realProc
	file  string
}

// waitTcpdumpCaught asks tcpdump for its counters (SIGUSR1) until it has
// captured as many packets as its filter received, twice in a row (at
// most limit).
func waitTcpdumpCaught(t *testing.T, p *realProc, limit time.Duration) {
	t.Helper()
	last := ""
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			return // exited: stop reports it
		}
		time.Sleep(100 * time.Millisecond)
		ms := tcpdumpStatsRE.FindAllStringSubmatch(p.out.String(), -1)
		if len(ms) == 0 {
			continue
		}
		m := ms[len(ms)-1]
		if m[1] == m[2] && m[1] != "0" {
			if m[0] == last {
				return
			}
			last = m[0]
			continue
		}
		last = ""
	}
	t.Logf("tcpdump has not captured every packet its filter received after %v", limit)
}

// waitFileStable waits until file has not grown for quiet (at most limit).
func waitFileStable(t *testing.T, file string, quiet, limit time.Duration) {
	t.Helper()
	var size int64 = -1
	since := time.Now()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		var n int64
		if fi, err := os.Stat(file); err == nil {
			n = fi.Size()
		}
		if n != size {
			size, since = n, time.Now()
			continue
		}
		if time.Since(since) >= quiet {
			return
		}
	}
	t.Logf("%s still grows after %v: stopping the capture anyway", file, limit)
}

func startCapture(t *testing.T, e *realEnv, shape captureShape, port uint16) *capturer {
	t.Helper()
	file := filepath.Join(e.dir, "capture-"+shape.name+shape.ext)
	args := shape.args(e, file, port)
	p := startProc(t, e.srv, args[0], args...)
	p.waitOutput(t, shape.ready)
	c := &capturer{shape: shape, proc: p, file: file}
	if shape.prime != nil {
		shape.prime(t, e, c)
	}
	return c
}

var (
	// tcpdump prints its counters on one line when asked (SIGUSR1) and on
	// three when it exits.
	tcpdumpStatsRE = regexp.MustCompile(`(\d+) packets? captured(?:, |\n)(\d+) packets? received by filter(?:, |\n)(\d+) packets? dropped by kernel`)
	dumpcapStatsRE = regexp.MustCompile(`Packets received/dropped on interface '([^']+)': (\d+)/(\d+) \(pcap:(\d+)/dumpcap:(\d+)/flushed:(\d+)/ps_ifdrop:(\d+)\)`)
)

// stop ends the capture (SIGINT, as at a terminal: the tool flushes the
// file and prints its counters) and asserts that the kernel dropped
// nothing and that every packet the filter took was written. It returns the
// number of packets written.
func (c *capturer) stop(t *testing.T) int {
	t.Helper()
	// A tool stopped while packets it received are still in its ring
	// loses them (counted as received by the filter, not captured: checked
	// below). A flake of exactly this kind reached CI ("299 packets
	// captured of 300 received by the filter"): a fixed wait for the ring's
	// block timeout is not enough on a loaded machine. tcpdump reports its
	// counters on SIGUSR1 without stopping: it is stopped only once it has
	// captured every packet the filter received. dumpcap's ring hands a
	// partly filled block over after 250 ms, which is waited out, and then
	// until its file stops growing.
	if c.proc.name == "tcpdump" {
		waitTcpdumpCaught(t, c.proc, 20*time.Second)
	} else {
		time.Sleep(realBlockTimeout)
		waitFileStable(t, c.file, 300*time.Millisecond, 10*time.Second)
	}
	if err := c.proc.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("%s: %v\n%s", c.shape.name, err, c.proc.out.String())
	}
	out := c.proc.out.String()
	switch c.proc.name {
	case "tcpdump":
		ms := tcpdumpStatsRE.FindAllStringSubmatch(out, -1) // the last: at exit (SIGUSR1 printed the others)
		if len(ms) == 0 {
			t.Fatalf("tcpdump printed no counters:\n%s", out)
		}
		m := ms[len(ms)-1]
		if m[3] != "0" {
			t.Fatalf("tcpdump: %s packets dropped by kernel:\n%s", m[3], out)
		}
		captured, _ := strconv.Atoi(m[1])
		received, _ := strconv.Atoi(m[2])
		if captured == 0 || captured != received {
			t.Fatalf("tcpdump: %d packets captured of %d received by the filter, want all and more than 0:\n%s", captured, received, out)
		}
		return captured
	case "dumpcap":
		ms := dumpcapStatsRE.FindAllStringSubmatch(out, -1)
		if len(ms) == 0 {
			t.Fatalf("dumpcap printed no per-interface counters:\n%s", out)
		}
		total := 0
		for _, m := range ms {
			for i := 3; i < len(m); i++ {
				if m[i] != "0" {
					t.Fatalf("dumpcap dropped packets on %s: %s\n%s", m[1], m[0], out)
				}
			}
			n, _ := strconv.Atoi(m[2])
			total += n
		}
		if total == 0 {
			t.Fatalf("dumpcap captured nothing:\n%s", out)
		}
		return total
	}
	t.Fatalf("unknown capture tool %s", c.proc.name)
	return 0
}

// checkPcapHeader checks a pcap file's magic (micro- or nanosecond) and
// link type, as written by tcpdump on this machine (little endian).
func checkPcapHeader(t *testing.T, file string, magic, link uint32) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 {
		t.Fatalf("%s: %d bytes, shorter than a pcap header", file, len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != magic {
		t.Errorf("%s: pcap magic %#x, want %#x", file, m, magic)
	}
	if l := binary.LittleEndian.Uint32(b[20:]); l != link {
		t.Errorf("%s: link type %d, want %d", file, l, link)
	}
}

// pcapngInterfaces walks a little-endian pcapng file and returns the link
// type of each interface (IDB) and the number of packets (EPB) per
// interface. It is deliberately independent of the product's reader.
func pcapngInterfaces(t *testing.T, file string) (links []uint16, packets map[uint32]int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	links, packets, err = parsePcapng(b, false)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return links, packets
}

// parsePcapng is pcapngInterfaces on bytes; partial accepts a file still
// being written (an incomplete last block is ignored).
func parsePcapng(b []byte, partial bool) (links []uint16, packets map[uint32]int, err error) {
	packets = map[uint32]int{}
	for off := 0; off < len(b); {
		if len(b)-off < 12 {
			if partial {
				break
			}
			return nil, nil, fmt.Errorf("block at %d: %d bytes left, shorter than a block", off, len(b)-off)
		}
		typ := binary.LittleEndian.Uint32(b[off:])
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		if partial && n >= 12 && off+n > len(b) {
			break
		}
		if n < 12 || n%4 != 0 || off+n > len(b) {
			return nil, nil, fmt.Errorf("block at %d: bad length %d (a big-endian file is not expected from dumpcap here)", off, n)
		}
		body := b[off+8 : off+n-4]
		switch typ {
		case 0x0A0D0D0A:
			if binary.LittleEndian.Uint32(body) != 0x1A2B3C4D {
				return nil, nil, fmt.Errorf("section header at %d: not little endian", off)
			}
		case 1: // interface description
			links = append(links, binary.LittleEndian.Uint16(body))
		case 6: // enhanced packet
			packets[binary.LittleEndian.Uint32(body)]++
		}
		off += n
	}
	return links, packets, nil
}

// ---- the capture's sessions, independently of tcopy-tun ----

// capturedSessions rebuilds the capture's sessions for port the way
// tcopy-tun does by default (newSelection: every captured server on the
// target's port), so report rows can be matched by ID. It asserts that the
// capture is complete: every session has its handshake and no holes.
func capturedSessions(t *testing.T, file string, port uint16) []*session.Session {
	t.Helper()
	src, err := capture.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ss []*session.Session
	cfg := session.Config{Servers: []netip.AddrPort{netip.AddrPortFrom(netip.Addr{}, port)}, ServerDataLimit: 1 << 20}
	if _, err := session.Build(capture.NewReader(src, file), cfg, func(s *session.Session) { ss = append(ss, s) }); err != nil {
		t.Fatalf("rebuild sessions of %s: %v", file, err)
	}
	for i, s := range ss {
		if s.ID != uint64(i) {
			t.Fatalf("%s: session %d has ID %d", file, i, s.ID)
		}
		if s.Flags&(session.Partial|session.Holes|session.Truncated) != 0 {
			t.Errorf("%s: session %d (%s): flags %s: the capture lost packets", file, s.ID, s.Client, s.Flags)
		}
	}
	if len(ss) == 0 {
		t.Fatalf("%s: no sessions on port %d", file, port)
	}
	return ss
}

// tsharkConnections counts the TCP connections on port in file with
// tshark, a decoder independent of tcopy-tun's: every one must become a
// session.
func tsharkConnections(t *testing.T, file string, port uint16) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tshark", "-n", "-r", file, "-Y", fmt.Sprintf("tcp.port == %d", port), "-T", "fields", "-e", "tcp.stream").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v", file, err)
	}
	streams := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		streams[l] = true
	}
	return len(streams)
}

// ---- replay and report ----

// realReport is the part of tcopy-tun's JSON report the suite checks.
type realReport struct {
	Version int `json:"version"`
	Summary struct {
		Speed      string         `json:"speed"`
		Wall       float64        `json:"wall_seconds"`
		Read       int            `json:"sessions_read"`
		Planned    int            `json:"sessions_planned"`
		Replayed   int            `json:"sessions_replayed"`
		NotStarted int            `json:"sessions_not_started"`
		Succeeded  int            `json:"sessions_succeeded"`
		Failed     int            `json:"sessions_failed"`
		BytesSent  int64          `json:"bytes_sent"`
		BytesRecv  int64          `json:"bytes_received"`
		Deviations map[string]int `json:"deviations"`
	} `json:"summary"`
	Totals struct {
		Sessions    int            `json:"sessions"`
		Outcomes    map[string]int `json:"outcomes"`
		Match       map[string]int `json:"match"`
		EndMismatch int            `json:"end_mismatch"`
	} `json:"totals"`
	Sessions []realRow `json:"sessions"`
}

type realRow struct {
	ID                  uint64         `json:"id"`
	CapturedClient      string         `json:"captured_client"`
	MappedClient        string         `json:"mapped_client"`
	Target              string         `json:"target"`
	Outcome             string         `json:"outcome"`
	Error               string         `json:"error"`
	EndCaptured         string         `json:"end_captured"`
	EndReplayed         string         `json:"end_replayed"`
	ChunksSent          int            `json:"chunks_sent"`
	Chunks              int            `json:"chunks"`
	BytesSent           int64          `json:"bytes_sent"`
	CapturedClientBytes int64          `json:"captured_client_bytes"`
	Match               string         `json:"match"`
	FirstDiff           int64          `json:"first_diff"`
	DiffCaptured        string         `json:"diff_captured"`
	DiffReplayed        string         `json:"diff_replayed"`
	Deviations          map[string]int `json:"deviations"`
	Scheduled           time.Time      `json:"scheduled"`
	DurationMS          float64        `json:"duration_ms"`
}

// keptPause looks for an idle pause of the capture (at least minPause
// when no session was open) that the replay kept: the session after it
// became ready at least half the pause after the replay of every session
// that had ended before it in the capture. It compares the replay with
// itself, so a slow target or a slow machine (-race) cannot fail it; only
// waiting out captured time can.
// pauses counts the pauses it looked at.
func keptPause(ss []*session.Session, rows []realRow) (what string, pauses int, kept bool) {
	const minPause = 150 * time.Millisecond
	byID := make(map[uint64]realRow, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	order := make([]int, len(ss))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ss[order[a]].StartOffset < ss[order[b]].StartOffset })
	var capEnd time.Duration // the latest end of the sessions started so far
	var repEnd time.Time     // the same in the replay
	for n, i := range order {
		s := ss[i]
		r, ok := byID[uint64(i)]
		if !ok || r.Scheduled.IsZero() {
			return "", 0, false // checkReport names the missing rows
		}
		if pause := s.StartOffset - capEnd; n > 0 && pause >= minPause {
			pauses++
			if gap := r.Scheduled.Sub(repEnd); gap >= pause/2 {
				return fmt.Sprintf("session %d followed a pause of %v in the capture; the replay waited %v before it, after the sessions before it were done",
					i, pause.Round(time.Millisecond), gap.Round(time.Millisecond)), pauses, true
			}
		}
		capEnd = max(capEnd, s.StartOffset+s.Duration)
		if end := r.Scheduled.Add(time.Duration(r.DurationMS * float64(time.Millisecond))); end.After(repEnd) {
			repEnd = end
		}
	}
	return "", pauses, false
}

// replayRun is one tcopy-tun run's result.
type replayRun struct {
	report *realReport
	wall   time.Duration // of the whole process, start to exit
	stderr string
}

// replay runs the built tcopy-tun in ns on file against target at speed
// and returns its report. It fails the test unless tcopy-tun exits 0
// (exit 0 means every session succeeded).
func (e *realEnv) replay(t *testing.T, ns *tuntest.Netns, file string, target netip.AddrPort, speed string, extra ...string) replayRun {
	t.Helper()
	return e.replayExit(t, ns, file, target, speed, 0, extra...)
}

// replayExit is replay for a run that must exit with code want.
func (e *realEnv) replayExit(t *testing.T, ns *tuntest.Netns, file string, target netip.AddrPort, speed string, want int, extra ...string) replayRun {
	t.Helper()
	run, _ := e.runTcopyTun(t, ns, file, target, speed, want, extra...)
	return run
}

// replayAnyExit is replay for a run whose exit status the test checks
// itself, after it has looked at the server: it returns the run and the
// status.
func (e *realEnv) replayAnyExit(t *testing.T, ns *tuntest.Netns, file string, target netip.AddrPort, speed string, extra ...string) (replayRun, int) {
	t.Helper()
	return e.runTcopyTun(t, ns, file, target, speed, -1, extra...)
}

// runTcopyTun runs tcopy-tun for replay, replayExit and replayAnyExit: it
// fails the test if the exit status is not want (any, for -1) or there is
// no report.
func (e *realEnv) runTcopyTun(t *testing.T, ns *tuntest.Netns, file string, target netip.AddrPort, speed string, want int, extra ...string) (replayRun, int) {
	t.Helper()
	rep := filepath.Join(e.dir, fmt.Sprintf("report-%s-%d.json", speed, time.Now().UnixNano()))
	args := append([]string{e.bin, "--pcap", file, "--target", target.String(), "--speed", speed,
		"--report", rep, "--progress", "never"}, extra...)
	began := time.Now()
	p := startProc(t, ns, "tcopy-tun", args...)
	err := p.wait(t, realReplayTimeout)
	run := replayRun{wall: time.Since(began), stderr: p.out.String()}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tcopy-tun %s: %v\n%s", strings.Join(args[1:], " "), err, run.stderr)
	}
	if want >= 0 && code != want {
		t.Fatalf("tcopy-tun %s: exit status %d, want %d\n%s", strings.Join(args[1:], " "), code, want, run.stderr)
	}
	b, err := os.ReadFile(rep)
	if err != nil {
		t.Fatalf("tcopy-tun (exit status %d) wrote no report: %v\n%s", code, err, run.stderr)
	}
	run.report = &realReport{}
	if err := json.Unmarshal(b, run.report); err != nil {
		t.Fatalf("report %s: %v", rep, err)
	}
	return run, code
}

// checkReport asserts what the issue asks of the report: every captured
// session was replayed and delivered (outcome ok), it ended as captured, and
// its match class is the one the server's answers call for.
func checkReport(t *testing.T, srv realServer, r *realReport, ss []*session.Session, target netip.AddrPort, speed string) {
	t.Helper()
	clientNet := netip.MustParsePrefix(realClientNet)
	n := len(ss)
	s := r.Summary
	if r.Version != 1 || s.Speed != speed {
		t.Errorf("report version %d, speed %q; want 1 and %q", r.Version, s.Speed, speed)
	}
	if s.Read != n || s.Planned != n || s.Replayed != n || s.Succeeded != n || s.Failed != 0 || s.NotStarted != 0 {
		t.Errorf("summary: read %d, planned %d, replayed %d, succeeded %d, failed %d, not started %d; want %d sessions all delivered",
			s.Read, s.Planned, s.Replayed, s.Succeeded, s.Failed, s.NotStarted, n)
	}
	if r.Totals.Sessions != n || r.Totals.Outcomes["ok"] != n {
		t.Errorf("totals: %d sessions, %d ok; want %d and %d", r.Totals.Sessions, r.Totals.Outcomes["ok"], n, n)
	}
	if len(r.Sessions) != n {
		t.Fatalf("report has %d session rows, want %d", len(r.Sessions), n)
	}
	bad, raced := 0, 0
	for _, row := range r.Sessions {
		if row.ID >= uint64(n) {
			t.Fatalf("report row id %d out of range (%d sessions)", row.ID, n)
		}
		cs := ss[row.ID]
		var errs []string
		if row.CapturedClient != cs.Client.String() {
			errs = append(errs, fmt.Sprintf("captured client %s, the capture's session %d is %s", row.CapturedClient, row.ID, cs.Client))
		}
		if mc, err := netip.ParseAddrPort(row.MappedClient); err != nil || !clientNet.Contains(mc.Addr()) || row.Target != target.String() {
			errs = append(errs, fmt.Sprintf("replayed %s → %s, want a client in %s and target %s", row.MappedClient, row.Target, clientNet, target))
		}
		if row.Outcome != "ok" {
			errs = append(errs, fmt.Sprintf("outcome %s (%s)", row.Outcome, row.Error))
		}
		if row.Chunks != len(cs.Chunks) || row.ChunksSent != len(cs.Chunks) || row.BytesSent != cs.ClientBytes || row.CapturedClientBytes != cs.ClientBytes {
			errs = append(errs, fmt.Sprintf("sent %d of %d chunks, %d of %d bytes; the capture has %d chunks, %d bytes",
				row.ChunksSent, row.Chunks, row.BytesSent, row.CapturedClientBytes, len(cs.Chunks), cs.ClientBytes))
		}
		if row.EndCaptured != cs.End.String() {
			errs = append(errs, fmt.Sprintf("end_captured %s, the capture says %s", row.EndCaptured, cs.End))
		}
		if row.EndReplayed != row.EndCaptured && row.EndCaptured != session.EndCaptureEnd.String() {
			if closeRace(cs, row.EndReplayed) {
				raced++
			} else {
				errs = append(errs, fmt.Sprintf("ended %s, captured %s", row.EndReplayed, row.EndCaptured))
			}
		}
		if row.Deviations["turn_timeouts"] != 0 || row.Deviations["early_close"] != 0 {
			errs = append(errs, fmt.Sprintf("deviations %v", row.Deviations))
		}
		if err := srv.checkMatch(cs, row.Match); err != nil {
			errs = append(errs, fmt.Sprintf("%v (first diff at %d: captured %q, replayed %q)", err, row.FirstDiff, row.DiffCaptured, row.DiffReplayed))
		}
		if len(errs) > 0 {
			bad++
			if bad <= 10 {
				t.Errorf("speed %s: session %d (%s → %s): %s", speed, row.ID, cs.Client, row.MappedClient, strings.Join(errs, "; "))
			}
		}
	}
	if bad > 10 {
		t.Errorf("speed %s: %d sessions wrong in all (first 10 shown)", speed, bad)
	}
	if r.Totals.EndMismatch != raced {
		t.Errorf("totals: %d sessions ended differently than captured, want %d (the close races)", r.Totals.EndMismatch, raced)
	}
}

// closeRace reports whether a session that ended with replayed instead of
// its captured end is a race that neither side decides: the captured answer
// ends with an HTTP "Connection: close", so the server closes right after
// writing it while the client closes as soon as it has read it. Which FIN
// comes first depends on scheduling, in the capture as in the replay.
func closeRace(s *session.Session, replayed string) bool {
	fins := map[string]bool{session.EndClientFIN.String(): true, session.EndServerFIN.String(): true}
	return fins[s.End.String()] && fins[replayed] &&
		bytes.Contains(bytes.ToLower(s.ServerData), []byte("\r\nconnection: close\r\n"))
}

// ---- the scenario ----

// realScenario is one pair of real server and real client, captured in one
// shape, and replayed at each speed.
type realScenario struct {
	server realServer
	shape  captureShape
	// drive runs the real clients against the capture-phase server.
	drive func(t *testing.T, e *realEnv)
	// forward: tcopy-tun runs in the client namespace with --forward, the
	// target across the veth ("target on another host").
	forward bool
	// after, when set, runs once the replays are done, with the capture.
	after func(t *testing.T, e *realEnv, capture string)
}

// realSpeeds are the replay speeds of every scenario.
var realSpeeds = []string{"1", "max"}

// runRealScenario is the suite's procedure: fresh server, real client,
// capture; fresh server, replay, compare, at each speed.
func runRealScenario(t *testing.T, bin string, sc realScenario) {
	t.Helper()
	requireReal(t, sc.shape.tools...)
	e := newRealEnv(t, bin)
	port := sc.server.port()
	target := netip.AddrPortFrom(netip.MustParseAddr(realServerIP), port)
	replayNS := e.srv
	if sc.forward {
		// Host B (the server) routes the client range back to host A.
		e.srv.Run(t, "ip", "route", "add", realClientNet, "via", realClientIP)
		replayNS = e.cli
	}

	cp := captureReal(t, e, sc.server, sc.shape, sc.drive)
	want, ss := cp.want, cp.sessions
	// lastStart is when the last session started, from the capture's first
	// packet: --speed 1 cannot be done before.
	var lastStart time.Duration
	for _, s := range ss {
		lastStart = max(lastStart, s.StartOffset)
	}
	t.Logf("%s, %s capture: %d packets, %d sessions, the last starting at +%v (the clients ran %v); server state %d lines",
		sc.server.name(), sc.shape.name, cp.packets, len(ss), lastStart.Round(time.Millisecond), cp.clients.Round(time.Millisecond), len(want))
	if t.Failed() {
		return
	}

	// HTTP Date headers have a resolution of one second: replaying at least
	// two seconds after the capture began means that every replayed answer
	// carries another Date than the captured one (a session is never
	// replayed earlier than its captured offset), so the report must call
	// those answers volatile, never identical and never different.
	time.Sleep(time.Until(cp.began.Add(realDateResolution)))

	for _, speed := range realSpeeds {
		t.Run("speed-"+speed, func(t *testing.T) {
			var before map[string]string
			if sc.forward {
				before = forwardSysctls(t, e)
			}
			inst := sc.server.start(t, e, "replay-"+speed)
			var extra []string
			if sc.forward {
				extra = append(extra, "--forward")
			}
			run := e.replay(t, replayNS, cp.file, target, speed, extra...)
			got := inst.state(t)
			if diff := diffLines(want, got); diff != "" {
				t.Errorf("%s state after the replay at speed %s differs from the captured run (- captured run, + replay):\n%s", sc.server.name(), speed, diff)
			}
			checkReport(t, sc.server, run.report, ss, target, speed)
			wall := time.Duration(run.report.Summary.Wall * float64(time.Second))
			switch speed {
			case "1":
				if wall < lastStart*95/100 {
					t.Errorf("speed 1: the replay took %v, but the last session started at +%v in the capture", wall, lastStart)
				}
				// The check below, seen to hold where it must.
				if _, pauses, kept := keptPause(ss, run.report.Sessions); pauses > 0 && !kept {
					t.Errorf("speed 1: the capture has %d pauses, and the replay kept none", pauses)
				}
			case "max":
				// The captures with think time: at max speed the pauses
				// are skipped, however slow the target answers.
				if p, _, kept := keptPause(ss, run.report.Sessions); kept {
					t.Errorf("speed max: %s", p)
				}
			}
			if sc.forward {
				checkForwardUndone(t, e, before)
			}
			t.Logf("speed %s: %d sessions in %v (tcopy-tun ran %v), %d bytes sent, %d received; match %v; deviations %v",
				speed, run.report.Summary.Replayed, wall.Round(time.Millisecond), run.wall.Round(time.Millisecond),
				run.report.Summary.BytesSent, run.report.Summary.BytesRecv, nonZero(run.report.Totals.Match), nonZero(run.report.Summary.Deviations))
		})
	}
	if sc.after != nil {
		sc.after(t, e, cp.file)
	}
}

// realCapture is what a scenario's capture phase produced.
type realCapture struct {
	file     string
	packets  int                // written by the capture tool
	want     []string           // the server's state after the real clients
	sessions []*session.Session // the capture's, complete (capturedSessions)
	began    time.Time          // when the clients started
	clients  time.Duration      // how long they ran
}

// captureReal is the capture phase of the suite's procedure: a fresh
// server, the capture tool, the real clients (drive); then the server's
// state, the capture's shape and its sessions, which tshark must count as
// tcopy-tun's reader does.
func captureReal(t *testing.T, e *realEnv, server realServer, shape captureShape, drive func(t *testing.T, e *realEnv)) realCapture {
	t.Helper()
	port := server.port()
	inst := server.start(t, e, "capture")
	cp := startCapture(t, e, shape, port)
	c := realCapture{file: cp.file, began: time.Now()}
	drive(t, e)
	c.clients = time.Since(c.began)
	c.packets = cp.stop(t) // no packet dropped by the kernel, every one written
	c.want = inst.state(t)
	shape.check(t, cp.file)
	c.sessions = capturedSessions(t, cp.file, port)
	if n := tsharkConnections(t, cp.file, port); n != len(c.sessions) {
		t.Errorf("tshark counts %d TCP connections on port %d in %s, tcopy-tun's reader %d sessions", n, port, cp.file, len(c.sessions))
	}
	return c
}

// diffLines returns the lines only in want (-) and only in got (+), or "".
func diffLines(want, got []string) string {
	count := map[string]int{}
	for _, l := range want {
		count[l]++
	}
	for _, l := range got {
		count[l]--
	}
	var out []string
	for l, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+l)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][2:] < out[j][2:] || out[i][2:] == out[j][2:] && out[i] < out[j] })
	return strings.Join(out, "\n")
}

// nonZero drops the zero counters of m, for short log lines.
func nonZero(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// sortedLines returns the non-empty lines of s, sorted.
func sortedLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// countLines turns counted keys into sorted "key ×n" lines.
func countLines(counts map[string]int) []string {
	out := make([]string, 0, len(counts))
	for k, n := range counts {
		out = append(out, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(out)
	return out
}

// readFile reads a file the test expects to exist.
func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
