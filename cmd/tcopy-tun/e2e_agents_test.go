package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// The capture agents' topology: two production hosts, each in its own
// namespace with a redis-server, its clients and an agent (tcpdump -U -w -
// | nc), joined by veth pairs to the replayer's namespace, where tcopy-tun
// --pcap-listen runs with one target redis-server per production host.
const (
	agentsPort       = "57012"
	agentsAllow      = "10.91.0.0/16"
	agentsProdPort   = 6379
	agentsTargetPort = 6390 // + the host's index
	agentsShort      = 10   // redis-cli sessions per host and phase
	agentsLong       = 12   // SETs on the long-lived connection
	agentsWait       = 30 * time.Second
)

var toolNc = realTool{"nc", "netcat-openbsd"}

// agentHost is one production host of the topology.
type agentHost struct {
	name       string // "a", "b": also the prefix of its keys
	ns         *tuntest.Netns
	ip         string // its server's (and clients') address
	replayer   string // the replayer's address on its link
	prod       *liveRedis
	target     *liveRedis // in the replayer's namespace
	targetPort int
	dump, nc   *realProc
}

// agentsSetup builds the topology and starts tcopy-tun in x's namespace;
// it returns once both agents are connected.
func agentsSetup(t *testing.T) (*e2e, []*agentHost, *e2eProc, string) {
	t.Helper()
	requireReal(t, toolGo, toolTcpdump, toolRedisServer, toolRedisCli, toolNc)
	x := newE2E(t)
	var hosts []*agentHost
	for i, name := range []string{"a", "b"} {
		h := &agentHost{name: name, ns: tuntest.NewNetns(t), ip: fmt.Sprintf("10.91.%d.1", i+1),
			replayer: fmt.Sprintf("10.91.%d.2", i+1), targetPort: agentsTargetPort + i}
		v := tuntest.Veth(t, h.ns, x.ns, h.ip+"/24", h.replayer+"/24")
		// IPv4 only: an IPv6 link-local address settling after the
		// snapshot would read as a change tcopy-tun made.
		x.ns.SetSysctl(t, "net/ipv6/conf/"+v.B+"/disable_ipv6", "1")
		h.prod = startLiveRedis(t, h.ns, "production "+name, h.ip, agentsProdPort)
		h.target = startLiveRedis(t, x.ns, "target "+name, "127.0.0.1", h.targetPort)
		hosts = append(hosts, h)
	}
	x.snapshot()
	rep := filepath.Join(x.dir, "report.json")
	args := []string{"--pcap-listen", ":" + agentsPort, "--pcap-allow", agentsAllow, "--report", rep, "--progress", "never"}
	for _, h := range hosts {
		args = append(args, "--map", fmt.Sprintf("%s:%d=localhost:%d", h.ip, agentsProdPort, h.targetPort))
	}
	p := x.start(args...)
	waitStderr(t, p, "waiting for capture agents")
	x.waitTUN(p)
	for _, h := range hosts {
		h.startAgent(t)
		waitStderr(t, p, "agent "+h.ip+":")
	}
	return x, hosts, p, rep
}

// waitStderr waits until tcopy-tun has written s on stderr.
func waitStderr(t *testing.T, p *e2eProc, s string) {
	t.Helper()
	for deadline := time.Now().Add(realStartTimeout); !strings.Contains(p.stderr.String(), s); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.signal(syscall.SIGKILL)
			t.Fatalf("tcopy-tun did not write %q within %v\nstderr:\n%s", s, realStartTimeout, p.wait(5*time.Second).stderr)
		}
	}
}

// startAgent starts the host's capture agent as an operator would run it:
// tcpdump -U -w - 'tcp port 6379' | nc -N REPLAYER 57012 (two processes
// joined by a pipe, each stopped by PID).
func (h *agentHost) startAgent(t *testing.T) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	dump := h.ns.Command("tcpdump", "-U", "--immediate-mode", "-n", "-i", "lo", "-w", "-", fmt.Sprintf("tcp port %d", agentsProdPort))
	dump.Stdout = pw
	nc := h.ns.Command("nc", "-N", h.replayer, agentsPort)
	nc.Stdin = pr
	h.nc = startProcCmd(t, "nc on "+h.name, nc)
	h.dump = startProcCmd(t, "tcpdump on "+h.name, dump)
	pr.Close()
	pw.Close()
	h.dump.waitOutput(t, "listening on")
}

// stopAgent stops tcpdump with SIGINT (it writes what it holds and exits,
// which ends nc's input: nc -N then ends the stream) and returns how many
// packets tcpdump wrote.
func (h *agentHost) stopAgent(t *testing.T) int {
	t.Helper()
	if err := h.dump.stop(t, syscall.SIGINT); err != nil {
		t.Errorf("tcpdump on %s: %v", h.name, err)
	}
	if err := h.nc.wait(t, realStopTimeout); err != nil {
		t.Errorf("nc on %s: %v", h.name, err)
	}
	m := regexp.MustCompile(`(\d+) packets? captured`).FindStringSubmatch(h.dump.out.String())
	if m == nil {
		t.Fatalf("tcpdump on %s did not say how many packets it wrote:\n%s", h.name, h.dump.out.String())
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// short runs one redis-cli session per key, SET name:i i for i in [from,
// to), on the production host.
func (h *agentHost) short(t *testing.T, from, to int, want map[string]string) {
	t.Helper()
	for i := from; i < to; i++ {
		k, v := fmt.Sprintf("%s:%d", h.name, i), strconv.Itoa(i)
		if out := strings.TrimSpace(h.ns.Run(t, "redis-cli", "-h", h.ip, "-p", strconv.Itoa(agentsProdPort), "SET", k, v)); out != "OK" {
			t.Fatalf("production %s: SET %s: %q", h.name, k, out)
		}
		want[k] = v
	}
}

// waitKeys waits until the target holds every key of want with its value.
func waitKeys(t *testing.T, c *respClient, name string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(agentsWait)
	for {
		var missing []string
		for k, v := range want {
			if got, err := c.do("GET", k); err != nil || got != v {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %s: %d of %d keys missing after %v: %v", name, len(missing), len(want), agentsWait, missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentFrames reads, from the summary, how many frames the agent at ip
// sent.
func agentFrames(t *testing.T, stderr, ip string) (int, string) {
	t.Helper()
	m := regexp.MustCompile(`agent ` + regexp.QuoteMeta(ip) + `:\d+: (\d+) frames, \d+ late, \d+ stalls; (.*)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no summary line for the agent on %s:\n%s", ip, stderr)
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2]
}

// readAgentsReport reads the "agents" member of a JSON report.
func readAgentsReport(t *testing.T, file string) agentsJSON {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Agents *agentsJSON `json:"agents"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Agents == nil {
		t.Fatalf("report %s: %v; agents %v", file, err, r.Agents)
	}
	return *r.Agents
}

// TestPrivilegedAgentsTwoHosts: online copy from two capture hosts. Each
// production host has a redis-server, redis-cli clients and an agent
// streaming its capture over TCP to tcopy-tun --pcap-listen in a third
// namespace, which replays both hosts' servers at once (--map for each,
// no --target) onto their target redis-servers. A client on host a keeps
// one connection open and sends a SET every 100 ms; while it is still
// open, the target must already hold what it sent (sessions stream).
// Then every session of both hosts has reached its target, every packet
// tcpdump wrote reached tcopy-tun, the run (stopped with SIGINT) exits 0
// with every session answered identically, and nothing is left behind.
func TestPrivilegedAgentsTwoHosts(t *testing.T) {
	x, hosts, p, rep := agentsSetup(t)
	a, b := hosts[0], hosts[1]
	want := []map[string]string{{}, {}}
	tgt := []*respClient{a.target.dial(t), b.target.dial(t)}

	// The long-lived connection on a, open across the short sessions.
	var conn net.Conn
	if err := a.ns.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", a.ip, agentsProdPort), 5*time.Second)
		conn = c
		return err
	}); err != nil {
		t.Fatalf("connect to production a: %v", err)
	}
	defer conn.Close()
	long := newRESP(conn)
	longWant := map[string]string{}
	for i := range agentsLong {
		k, v := fmt.Sprintf("long:%d", i), strconv.Itoa(i)
		if r, err := long.do("SET", k, v); err != nil || r != "OK" {
			t.Fatalf("production a: SET %s: %q, %v", k, r, err)
		}
		longWant[k], want[0][k] = v, v
		if i == agentsLong/2 {
			a.short(t, 0, agentsShort, want[0])
			b.short(t, 0, agentsShort, want[1])
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Still open: what it sent is on the target already.
	waitKeys(t, tgt[0], "a (the long-lived connection, still open)", longWant)
	t.Logf("the long-lived connection's %d keys reached the target while it was open", len(longWant))
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	for i, h := range hosts {
		waitKeys(t, tgt[i], h.name, want[i])
	}
	captured := []int{a.stopAgent(t), b.stopAgent(t)}
	waitStderr(t, p, "agent "+b.ip+":")
	p.signal(syscall.SIGINT)
	r := p.wait(realReplayTimeout)
	if r.code != exitOK {
		t.Errorf("exit %d, want %d (a stopped live copy is a normal end)", r.code, exitOK)
	}
	for i, h := range hosts {
		frames, end := agentFrames(t, r.stderr, h.ip)
		if frames != captured[i] || end != "end of stream" {
			t.Errorf("agent on %s: tcopy-tun got %d frames (%s), tcpdump wrote %d", h.ip, frames, end, captured[i])
		}
		if n, err := tgt[i].integer("DBSIZE"); err != nil || n != len(want[i]) {
			t.Errorf("target %s: DBSIZE %d, %v; want %d", h.name, n, err, len(want[i]))
		}
	}
	if m := regexp.MustCompile(`live: +lag from capture to write .*`).FindString(r.stderr); m == "" {
		t.Errorf("no live lag line in the summary (agents are a live source)")
	} else {
		t.Logf("%s", m)
	}
	if !strings.Contains(r.stderr, "agents:      2 connected in all, 0 failed, 0 refused") {
		t.Errorf("the summary's agents line is missing or counts otherwise:\n%s", r.stderr)
	}
	assertAllIdentical(t, readReport(t, rep), 2*agentsShort+1)
	ra := readAgentsReport(t, rep)
	if ra.Accepted != 2 || ra.Failed != 0 || ra.Late != 0 || len(ra.List) != 2 || ra.Frames != int64(captured[0]+captured[1]) {
		t.Errorf("report's agents: %+v; want 2 accepted, none failed or late, %d+%d frames", ra, captured[0], captured[1])
	}
	x.assertClean()
}

// TestPrivilegedAgentsOneDisconnects: an agent that disconnects mid-run
// (its nc killed) is reported, and the other goes on: sessions on host a
// after b's agent is gone still reach a's target, the run exits 0, and
// the summary names b's end.
func TestPrivilegedAgentsOneDisconnects(t *testing.T) {
	x, hosts, p, rep := agentsSetup(t)
	a, b := hosts[0], hosts[1]
	want := []map[string]string{{}, {}}
	tgt := []*respClient{a.target.dial(t), b.target.dial(t)}
	a.short(t, 0, agentsShort, want[0])
	b.short(t, 0, agentsShort, want[1])
	for i, h := range hosts {
		waitKeys(t, tgt[i], h.name, want[i])
	}
	if err := b.nc.stop(t, syscall.SIGKILL); err == nil {
		t.Errorf("nc on b was killed, but exited cleanly")
	}
	waitStderr(t, p, "agent "+b.ip)
	waitStderr(t, p, "disconnected after")
	b.dump.stop(t, syscall.SIGINT) // its pipe is gone: how it ends does not matter
	a.short(t, agentsShort, 2*agentsShort, want[0])
	waitKeys(t, tgt[0], "a (after b's agent left)", want[0])
	captured := a.stopAgent(t)
	p.signal(syscall.SIGINT)
	r := p.wait(realReplayTimeout)
	if r.code != exitOK {
		t.Errorf("exit %d, want %d", r.code, exitOK)
	}
	if frames, end := agentFrames(t, r.stderr, a.ip); frames != captured || end != "end of stream" {
		t.Errorf("agent on a: tcopy-tun got %d frames (%s), tcpdump wrote %d", frames, end, captured)
	}
	if _, end := agentFrames(t, r.stderr, b.ip); end == "connected at the end" {
		t.Errorf("agent on b: %q, want how it ended", end)
	}
	if !regexp.MustCompile(`agent ` + regexp.QuoteMeta(b.ip) + `:\d+: .*disconnected after \d+ frames \(1 connected\); the others go on`).MatchString(r.stderr) {
		t.Errorf("no log line for b's disconnection:\n%s", r.stderr)
	}
	for i, h := range hosts {
		if n, err := tgt[i].integer("DBSIZE"); err != nil || n != len(want[i]) {
			t.Errorf("target %s: DBSIZE %d, %v; want %d", h.name, n, err, len(want[i]))
		}
	}
	assertAllIdentical(t, readReport(t, rep), 3*agentsShort)
	x.assertClean()
}

// TestPrivilegedAgentDialed: --pcap tcp://HOST:PORT connects to an agent
// that serves its capture (tcpdump -U -w - | nc -N -l PORT), by host name:
// the replayer's namespace resolves prod-a.test through its own hosts
// file (ip netns exec mounts /etc/netns/NAME/hosts over /etc/hosts), and
// --map names the captured server by the same name and the target as
// localhost. The run ends by itself when the agent's stream ends: every
// session reached the target and every packet tcpdump wrote reached
// tcopy-tun. Where ip netns exec cannot run (/ is not a mount point: a
// chroot), the agent and the server are named by address instead, and the
// test says so; host names are also covered by resolve_test.go.
func TestPrivilegedAgentDialed(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolRedisServer, toolRedisCli, toolNc)
	x := newE2E(t)
	h := &agentHost{name: "a", ns: tuntest.NewNetns(t), ip: "10.91.1.1", replayer: "10.91.1.2", targetPort: agentsTargetPort}
	v := tuntest.Veth(t, h.ns, x.ns, h.ip+"/24", h.replayer+"/24")
	x.ns.SetSysctl(t, "net/ipv6/conf/"+v.B+"/disable_ipv6", "1")
	h.prod = startLiveRedis(t, h.ns, "production a", h.ip, agentsProdPort)
	h.target = startLiveRedis(t, x.ns, "target a", "127.0.0.1", h.targetPort)
	etc := filepath.Join("/etc/netns", x.ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n"+h.ip+" prod-a.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	x.snapshot()

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	dump := h.ns.Command("tcpdump", "-U", "--immediate-mode", "-n", "-i", "lo", "-w", "-", fmt.Sprintf("tcp port %d", agentsProdPort))
	dump.Stdout = pw
	nc := h.ns.Command("nc", "-N", "-l", agentsPort)
	nc.Stdin = pr
	h.nc = startProcCmd(t, "nc -l on a", nc)
	h.dump = startProcCmd(t, "tcpdump on a", dump)
	pr.Close()
	pw.Close()
	h.dump.waitOutput(t, "listening on")
	// nc -l serves one connection: wait for its socket without a probe.
	for deadline := time.Now().Add(realStartTimeout); !strings.Contains(h.ns.Run(t, "ss", "-ltnH"), ":"+agentsPort); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nc is not listening on %s within %v", agentsPort, realStartTimeout)
		}
	}

	rep := filepath.Join(x.dir, "report.json")
	prodName, start := "prod-a.test", x.ns.EtcCommand
	if err := tuntest.EtcWorks(); err != nil {
		t.Logf("no hosts file of the namespace's own (%v): the agent by its address", err)
		prodName, start = h.ip, x.ns.Command
	}
	p := x.startCmd(start(x.bin, "--pcap", "tcp://"+prodName+":"+agentsPort, "--map", fmt.Sprintf("%s:%d=localhost:%d", prodName, agentsProdPort, h.targetPort),
		"--report", rep, "--progress", "never"))
	waitStderr(t, p, "agent "+h.ip+":"+agentsPort+" connected")
	want := map[string]string{}
	h.short(t, 0, agentsShort, want)
	tgt := h.target.dial(t)
	waitKeys(t, tgt, "a", want)
	captured := h.stopAgent(t)
	r := p.wait(realReplayTimeout) // the stream's end ends the run
	if r.code != exitOK {
		t.Errorf("exit %d, want %d", r.code, exitOK)
	}
	if frames, end := agentFrames(t, r.stderr, h.ip); frames != captured || end != "end of stream" {
		t.Errorf("tcopy-tun got %d frames (%s), tcpdump wrote %d", frames, end, captured)
	}
	assertAllIdentical(t, readReport(t, rep), agentsShort)
	x.assertClean()
}
