package main

// Privileged end-to-end tests of --write-pcap: the replay's own capture,
// read back by tshark (a decoder independent of tcopy-tun's).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// pcapRow is the part of a report row that names a connection.
type pcapRow struct {
	ID           int    `json:"id"`
	StartID      int    `json:"start_id"`
	Pass         int    `json:"pass"`
	Copy         int    `json:"copy"`
	MappedClient string `json:"mapped_client"`
	Server       string `json:"server"`
	Target       string `json:"target"`
	LocalAddr    string `json:"local_addr"`
	Outcome      string `json:"outcome"`
}

func readPcapRows(t *testing.T, path string) []pcapRow {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var r struct {
		Sessions []pcapRow `json:"sessions"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report %s: %v", path, err)
	}
	return r.Sessions
}

// tsharkConn is one TCP conversation as tshark reads it.
type tsharkConn struct {
	client, server string // from the first packet: the SYN the stack sent
	out, in        int    // packets the stack sent and received
	comments       []string
	firstComment   string // the first packet's comment
	rsts           int
}

// tsharkConns reads file with tshark: one entry per TCP stream. It fails
// the test when tshark reports a problem with the file (a block cut short).
func tsharkConns(t *testing.T, file string) map[int]*tsharkConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tshark", "-n", "-r", file, "-T", "fields", "-E", "separator=|",
		"-e", "tcp.stream", "-e", "frame.p2p_dir", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport",
		"-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "tcp.flags.reset", "-e", "frame.comment")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", file, err, stderr.String())
	}
	if s := strings.ReplaceAll(stderr.String(), "Running as user \"root\" and group \"root\". This could be dangerous.", ""); strings.TrimSpace(s) != "" {
		t.Errorf("tshark -r %s says: %s", file, s)
	}
	conns := map[int]*tsharkConn{}
	for line := range strings.Lines(string(out)) {
		f := strings.Split(strings.TrimRight(line, "\n"), "|")
		if len(f) != 10 {
			t.Fatalf("tshark line %q: %d fields", line, len(f))
		}
		stream, err := strconv.Atoi(f[0])
		if err != nil {
			t.Errorf("tshark line %q: not TCP", line)
			continue
		}
		src, dst := f[2]+f[3], f[5]+f[6]
		c := conns[stream]
		if c == nil {
			c = &tsharkConn{client: addrPort(src, f[4]), server: addrPort(dst, f[7]), firstComment: f[9]}
			conns[stream] = c
		}
		switch f[1] {
		case "0":
			c.out++
		case "1":
			c.in++
		default:
			t.Errorf("tshark line %q: direction %q, want 0 (sent) or 1 (received)", line, f[1])
		}
		if f[8] == "1" || f[8] == "True" {
			c.rsts++
		}
		if f[9] != "" {
			c.comments = append(c.comments, f[9])
		}
	}
	return conns
}

func addrPort(ip, port string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip + ":" + port
	}
	p, _ := strconv.Atoi(port)
	return netip.AddrPortFrom(a, uint16(p)).String()
}

var commentRE = regexp.MustCompile(`^tcopy-tun session start_id=(\d+) pass=(\d+) copy=(\d+) captured_client=\S+ server=(\S+) target=(\S+)$`)

// checkPcapAgainstReport checks a --write-pcap file against the report of
// the same run: one TCP conversation per connected session copy, from its
// mapped client to its target, packets both ways, and on its first packet a
// comment that names exactly that row (start_id, pass, copy, server,
// target). It returns the conversations.
func checkPcapAgainstReport(t *testing.T, file string, rows []pcapRow) map[int]*tsharkConn {
	t.Helper()
	conns := tsharkConns(t, file)
	type key struct{ start, pass, copy int }
	byKey := map[key]pcapRow{}
	connected := 0
	for _, r := range rows {
		byKey[key{r.StartID, r.Pass, r.Copy}] = r
		if r.LocalAddr != "" {
			connected++
		}
	}
	if len(conns) != connected {
		t.Errorf("tshark reads %d TCP conversations, the report has %d connected sessions", len(conns), connected)
	}
	seen := map[key]bool{}
	for stream, c := range conns {
		if c.out == 0 || c.in == 0 {
			t.Errorf("stream %d (%s → %s): %d packets sent, %d received; want both directions", stream, c.client, c.server, c.out, c.in)
		}
		if len(c.comments) != 1 || c.firstComment == "" {
			t.Errorf("stream %d (%s → %s): comments %q, want one, on its first packet", stream, c.client, c.server, c.comments)
			continue
		}
		m := commentRE.FindStringSubmatch(c.firstComment)
		if m == nil {
			t.Errorf("stream %d: comment %q does not read as a session", stream, c.firstComment)
			continue
		}
		start, _ := strconv.Atoi(m[1])
		pass, _ := strconv.Atoi(m[2])
		cp, _ := strconv.Atoi(m[3])
		k := key{start, pass, cp}
		r, ok := byKey[k]
		switch {
		case !ok:
			t.Errorf("stream %d: comment %q names no row of the report", stream, c.firstComment)
		case seen[k]:
			t.Errorf("stream %d: a second conversation for session %+v", stream, k)
		case r.MappedClient != c.client || r.Target != c.server || r.Server != m[4] || r.Target != m[5]:
			t.Errorf("stream %d %s → %s, comment %q; the report's row: mapped client %s, server %s, target %s", stream, c.client, c.server, c.firstComment, r.MappedClient, r.Server, r.Target)
		}
		seen[k] = true
	}
	return conns
}

// pcapStatsRE reads the summary's pcap line.
var pcapStatsRE = regexp.MustCompile(`pcap: +(\d+) packets \(\d+ bytes\) written to \S+, (\d+) connections named by their session`)

// --write-pcap, two captured servers mapped onto two targets, every session
// replayed twice (--multiply 2): tshark reads one conversation per session
// copy and target, both directions, each named by its comment as the report
// names it; the summary's count is the file's.
func TestPrivilegedE2EWritePcap(t *testing.T) {
	requireReal(t, toolTshark)
	x := newE2E(t)
	x.ns.AddDummy(t, "tgt0", "10.9.0.1/24")
	srvA := x.startServer("http", "10.9.0.1:8080")
	srvB := x.startServer("http", "10.9.0.1:8081")
	x.snapshot()
	get := func(p string) replaytest.DemoRequest { return replaytest.DemoRequest{Method: "GET", Path: p} }
	sessions := []e2eSession{
		{Client: "10.0.0.1:40000", Server: "10.1.0.1:8080", Requests: []replaytest.DemoRequest{get("/a/1"), get("/a/2")}},
		{Client: "10.0.0.2:40000", Server: "10.1.0.1:8080", Start: time.Millisecond, Pipelined: true, Requests: []replaytest.DemoRequest{get("/a/3"), get("/a/4")}},
		{Client: "10.0.0.3:40000", Server: "10.1.0.2:9090", Start: 2 * time.Millisecond, Requests: []replaytest.DemoRequest{get("/b/1")}},
		{Client: "10.0.0.1:40001", Server: "10.1.0.2:9090", Start: 3 * time.Millisecond, Requests: []replaytest.DemoRequest{get("/b/2"), {Method: "GET", Path: "/b/3", Close: true}}},
	}
	pcap := x.file("two.pcap", e2eCapture(t, sessions))
	rep := filepath.Join(x.dir, "report.json")
	out := filepath.Join(x.dir, "replay.pcapng")
	r := x.run(60*time.Second, "--pcap", pcap, "--map", "10.1.0.1:8080=10.9.0.1:8080", "--map", "10.1.0.2:9090=10.9.0.1:8081",
		"--multiply", "2", "--speed", "max", "--progress", "never", "--report", rep, "--write-pcap", out)
	srvA.stop()
	srvB.stop()
	if r.code != exitOK {
		t.Fatalf("exit %d, want %d", r.code, exitOK)
	}
	rows := readPcapRows(t, rep)
	if len(rows) != 2*len(sessions) {
		t.Fatalf("report: %d rows, want %d", len(rows), 2*len(sessions))
	}
	targets := map[string]int{}
	for _, row := range rows {
		if row.Outcome != "ok" {
			t.Errorf("session %d copy %d: %s", row.ID, row.Copy, row.Outcome)
		}
		targets[row.Target]++
	}
	if targets["10.9.0.1:8080"] != 4 || targets["10.9.0.1:8081"] != 4 {
		t.Errorf("rows per target %v, want 4 each", targets)
	}
	conns := checkPcapAgainstReport(t, out, rows)
	total := 0
	for _, c := range conns {
		total += c.in + c.out
	}
	m := pcapStatsRE.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no pcap line in the summary:\n%s", r.stderr)
	}
	if m[1] != strconv.Itoa(total) || m[2] != strconv.Itoa(len(rows)) {
		t.Errorf("summary: %s packets, %s connections named; the file holds %d packets of %d sessions", m[1], m[2], total, len(rows))
	}
	x.assertClean()
}

// SIGINT mid-run: the capture is flushed and whole (tshark reads it without
// complaint, every packet the summary counted is in it), it holds the
// aborted connections' resets, and the report is written too.
func TestPrivilegedE2EWritePcapInterrupted(t *testing.T) {
	requireReal(t, toolTshark)
	x := newE2E(t)
	const target = "127.0.0.1:8080"
	srv := x.startServer("http", target)
	x.snapshot()
	sessions := longSessions(3)
	pcap := x.file("long.pcap", e2eCapture(t, sessions))
	rep := filepath.Join(x.dir, "report.json")
	out := filepath.Join(x.dir, "replay.pcapng")
	p := x.start("--pcap", pcap, "--target", target, "--speed", "1", "--progress", "never", "--report", rep, "--write-pcap", out)
	srv.waitRequests(len(sessions), 20*time.Second)
	// The capture exists, with its header, from the start.
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Errorf("mid-run, %s: %v; want it created, with its header", out, err)
	}
	p.signal(syscall.SIGINT)
	r := p.wait(20 * time.Second)
	if r.code != exitSignaled {
		t.Errorf("exit %d, want %d", r.code, exitSignaled)
	}
	srv.stop()
	rows := readPcapRows(t, rep)
	if len(rows) != len(sessions) {
		t.Fatalf("report: %d rows, want %d", len(rows), len(sessions))
	}
	conns := checkPcapAgainstReport(t, out, rows)
	total, rsts := 0, 0
	for _, c := range conns {
		total += c.in + c.out
		rsts += c.rsts
	}
	if rsts == 0 {
		t.Errorf("no RST in the capture: the aborted connections' last packets are missing")
	}
	m := pcapStatsRE.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no pcap line in the summary:\n%s", r.stderr)
	}
	if m[1] != fmt.Sprint(total) {
		t.Errorf("the summary counts %s packets written, tshark reads %d", m[1], total)
	}
	x.assertClean()
}
