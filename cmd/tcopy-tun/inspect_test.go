package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// inspectCapture is a generated capture with known contents: an HTTP load
// on one server, a Redis session, a PostgreSQL session captured without its
// handshake (partial), and an SMTP session where the server speaks first.
type inspectCapture struct {
	pcap     []byte
	packets  int
	sessions int
	servers  map[string]inspectWant
}

type inspectWant struct {
	proto                    string
	sessions, partial        int
	clientBytes, serverBytes int64
}

func newInspectCapture(t *testing.T) *inspectCapture {
	t.Helper()
	load := rt.HTTPLoad{Sessions: 20, Requests: 2, BodySize: 100, Clients: 4}.Packets()
	t0 := rt.DemoStart()
	redis := rt.NewConv("10.2.9.1:41000", "10.1.0.2:6379", t0.Add(time.Millisecond)).
		Handshake().Send("*1\r\n$4\r\nPING\r\n").Reply("+PONG\r\n").CloseClient().Packets()
	// No handshake: the capture starts in the middle of this one.
	pg := rt.NewConv("10.2.9.2:41001", "10.1.0.3:5432", t0.Add(2*time.Millisecond)).
		Send("Q\x00\x00\x00\x0dselect 1\x00").Reply("T\x00\x00\x00\x06\x00\x00Z\x00\x00\x00\x05I").Packets()
	smtp := rt.NewConv("10.2.9.3:41002", "10.1.0.4:25", t0.Add(3*time.Millisecond)).
		Handshake().Reply("220 mail.example ESMTP\r\n").Send("EHLO me\r\n").Reply("250 ok\r\n").
		Send("QUIT\r\n").Reply("221 bye\r\n").CloseServer().Packets()
	all := rt.Merge(load, redis, pg, smtp)
	frames, err := rt.Frames(rt.LinkEthernet, all)
	if err != nil {
		t.Fatal(err)
	}
	c := &inspectCapture{
		pcap:     rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet, Nano: true}, frames),
		packets:  len(all),
		sessions: 23,
		servers: map[string]inspectWant{
			"10.1.0.1:8080": {proto: "http", sessions: 20},
			"10.1.0.2:6379": {proto: "resp", sessions: 1},
			"10.1.0.3:5432": {proto: "postgresql", sessions: 1, partial: 1},
			"10.1.0.4:25":   {proto: "smtp", sessions: 1},
		},
	}
	// Bytes each way, counted from the packets themselves.
	for _, p := range all {
		for name, w := range c.servers {
			srv := netip.MustParseAddrPort(name)
			switch srv {
			case p.Dst:
				w.clientBytes += int64(len(p.Payload))
			case p.Src:
				w.serverBytes += int64(len(p.Payload))
			}
			c.servers[name] = w
		}
	}
	return c
}

func (c *inspectCapture) file(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "load.pcap")
	if err := os.WriteFile(path, c.pcap, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCmd runs the command in process with stdin and returns exit code,
// stdout and stderr.
func runCmd(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(env{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

// serverRows parses the server table of inspect's text output.
func serverRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	in := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "SERVER":
			in = true
		case len(f) == 0:
			in = false
		case in:
			rows[f[0]] = f
		}
	}
	return rows
}

func TestInspectTable(t *testing.T) {
	c := newInspectCapture(t)
	code, out, errs := runCmd(t, nil, "inspect", c.file(t))
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	rows := serverRows(t, out)
	if len(rows) != len(c.servers) {
		t.Fatalf("server rows %v, want %d servers:\n%s", rows, len(c.servers), out)
	}
	for name, w := range c.servers {
		f := rows[name]
		want := []string{name, w.proto, strconv.Itoa(w.sessions), strconv.Itoa(w.partial),
			strconv.FormatInt(w.clientBytes, 10), strconv.FormatInt(w.serverBytes, 10)}
		if len(f) != 8 || strings.Join(f[:6], " ") != strings.Join(want, " ") {
			t.Errorf("row %q, want %q + times", f, want)
		}
	}
	// Most sessions first.
	if first := strings.Fields(strings.Split(out, "\n")[1])[0]; first != "10.1.0.1:8080" {
		t.Errorf("first row is %s, want the HTTP server with 20 sessions", first)
	}
	wantTotal := fmt.Sprintf("%d sessions (1 partial) to 4 servers, from %d TCP segments in %d frames", c.sessions, c.packets, c.packets)
	if !strings.Contains(out, wantTotal) {
		t.Errorf("output lacks %q:\n%s", wantTotal, out)
	}
	if strings.Contains(out, "ID ") {
		t.Errorf("session rows without -v:\n%s", out)
	}
}

func TestInspectVerbose(t *testing.T) {
	c := newInspectCapture(t)
	code, out, errs := runCmd(t, nil, "inspect", c.file(t), "-v") // flags after the file work too
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[0]); len(f) == 0 || f[0] != "ID" {
		t.Fatalf("first line %q, want the session header", lines[0])
	}
	ids := map[int]bool{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			break
		}
		id, err := strconv.Atoi(f[0])
		if err != nil || len(f) != 11 {
			t.Fatalf("session row %q", line)
		}
		ids[id] = true
		client, server, end, proto, flags := f[1], f[2], f[8], f[9], f[10]
		w, ok := c.servers[server]
		if !ok || !strings.HasPrefix(client, "10.2.") {
			t.Errorf("row %q: client %s server %s", line, client, server)
		}
		if proto != w.proto {
			t.Errorf("row %q: protocol %s, want %s", line, proto, w.proto)
		}
		switch server {
		case "10.1.0.3:5432":
			if flags != "partial" || end != "capture-end" {
				t.Errorf("partial session row %q", line)
			}
		case "10.1.0.4:25":
			if flags != "server-first" || end != "server-fin" {
				t.Errorf("SMTP session row %q", line)
			}
		default:
			if flags != "-" || end != "client-fin" {
				t.Errorf("row %q: want a clean client close", line)
			}
		}
	}
	if len(ids) != c.sessions || !ids[0] || !ids[c.sessions-1] {
		t.Errorf("%d session rows with IDs %v, want 0..%d", len(ids), ids, c.sessions-1)
	}
	if len(serverRows(t, out)) != len(c.servers) {
		t.Errorf("no server table after the sessions:\n%s", out)
	}
}

type inspectDoc struct {
	Version  int                  `json:"version"`
	File     string               `json:"file"`
	Sessions []inspectSessionJSON `json:"sessions"`
	Servers  []inspectServerJSON  `json:"servers"`
	Stats    inspectStatsJSON     `json:"stats"`
	Error    string               `json:"error"`
}

func TestInspectJSON(t *testing.T) {
	c := newInspectCapture(t)
	path := c.file(t)
	code, out, errs := runCmd(t, nil, "inspect", "--json", "-v", path)
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var doc inspectDoc
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if doc.Version != 1 || doc.File != path || doc.Error != "" {
		t.Errorf("version %d file %q error %q", doc.Version, doc.File, doc.Error)
	}
	if len(doc.Sessions) != c.sessions {
		t.Errorf("%d sessions, want %d", len(doc.Sessions), c.sessions)
	}
	for i, s := range doc.Sessions {
		if s.ID != uint64(i) || s.EndedBefore > s.ID || s.Flags == nil {
			t.Errorf("session %d: %+v", i, s)
		}
	}
	if len(doc.Servers) != len(c.servers) {
		t.Fatalf("servers %+v", doc.Servers)
	}
	for _, s := range doc.Servers {
		w := c.servers[s.Server]
		if s.Protocol != w.proto || s.Sessions != w.sessions || s.Partial != w.partial ||
			s.ClientBytes != w.clientBytes || s.ServerBytes != w.serverBytes {
			t.Errorf("server %+v, want %+v", s, w)
		}
		if s.Server == "10.1.0.4:25" && s.ServerFirst != 1 {
			t.Errorf("SMTP server_first %d", s.ServerFirst)
		}
	}
	st := doc.Stats
	if st.Frames != int64(c.packets) || st.TCPSegments != int64(c.packets) || st.Sessions != uint64(c.sessions) ||
		len(st.LinkTypes) != 1 || st.LinkTypes[0].Name != "ETHERNET" || st.First == "" || st.DurationS <= 0 {
		t.Errorf("stats %+v", st)
	}

	// Without -v there is no session list at all.
	_, out, _ = runCmd(t, nil, "inspect", "--json", path)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["sessions"]; ok {
		t.Errorf("sessions listed without -v")
	}
}

// TestInspectStdin: "-" reads the capture from standard input, with the
// same listing as the file.
func TestInspectStdin(t *testing.T) {
	c := newInspectCapture(t)
	_, fromFile, _ := runCmd(t, nil, "inspect", "-v", c.file(t))
	code, fromStdin, errs := runCmd(t, c.pcap, "inspect", "-v", "-")
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if fromStdin != fromFile {
		t.Errorf("stdin listing differs from the file's:\n%s\nvs\n%s", fromStdin, fromFile)
	}
	// Compressed on stdin too.
	code, gz, _ := runCmd(t, rt.Gzip(c.pcap), "inspect", "-v", "-")
	if code != exitOK || gz != fromFile {
		t.Errorf("gzip on stdin: exit %d, listing differs", code)
	}
}

// TestInspectServerSelection: --server keeps one endpoint.
func TestInspectServerSelection(t *testing.T) {
	c := newInspectCapture(t)
	code, out, errs := runCmd(t, nil, "inspect", "--server", "10.1.0.2:6379", c.file(t))
	if code != exitOK || errs != "" {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	rows := serverRows(t, out)
	if len(rows) != 1 || rows["10.1.0.2:6379"] == nil || !strings.Contains(out, "segments to servers not selected") {
		t.Errorf("rows %v:\n%s", rows, out)
	}
}

// pcapRecords returns the offsets of the record headers of a
// little-endian pcap.
func pcapRecords(b []byte) []int {
	var offs []int
	for off := 24; off+16 <= len(b); {
		offs = append(offs, off)
		off += 16 + int(binary.LittleEndian.Uint32(b[off+8:]))
	}
	return offs
}

func TestInspectErrors(t *testing.T) {
	c := newInspectCapture(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.pcap", c.pcap)
	empty := write("empty.pcap", rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, nil))
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	noTCP := write("arp.pcap", rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet},
		[]capture.Frame{{N: 1, Time: rt.DemoStart(), LinkType: rt.LinkEthernet, Data: arp, Len: len(arp)}}))
	text := write("notes.txt", []byte("GET / HTTP/1.1\r\nthis is not a capture\n"))
	damagedBytes := bytes.Clone(c.pcap)
	recs := pcapRecords(damagedBytes)
	binary.LittleEndian.PutUint32(damagedBytes[recs[len(recs)/2]+8:], 0xfffffff0) // bogus captured length
	damaged := write("damaged.pcap", damagedBytes)
	cut := write("cut.pcap", c.pcap[:len(c.pcap)-5])

	tests := []struct {
		name     string
		args     []string
		code     int
		stderr   string // the first stderr line contains it
		stdout   bool   // a listing is still printed
		jsonDoc  bool   // stdout is a JSON document
		oneError bool   // stderr is exactly one error line (plus at most a hint)
	}{
		{name: "no file", args: []string{}, code: exitUsage, stderr: "no capture given", oneError: true},
		{name: "two files", args: []string{good, good}, code: exitUsage, stderr: "one capture at a time", oneError: true},
		{name: "unknown flag", args: []string{"--nope", good}, code: exitUsage, stderr: "flag provided but not defined", oneError: true},
		{name: "bad server", args: []string{"--server", "nothing", good}, code: exitUsage, stderr: "want HOST:PORT", oneError: true},
		{name: "missing file", args: []string{filepath.Join(dir, "nope.pcap")}, code: exitInput, stderr: "no such file", oneError: true},
		{name: "not a capture", args: []string{text}, code: exitInput, stderr: "not a pcap or pcapng capture", oneError: true},
		{name: "empty capture", args: []string{empty}, code: exitInput, stderr: "no TCP sessions in the capture (it holds no packets)", oneError: true},
		{name: "no TCP", args: []string{noTCP}, code: exitInput, stderr: "1 frames, none of them TCP", oneError: true},
		{name: "nothing selected", args: []string{"--server", "10.9.9.9:1", good}, code: exitInput, stderr: "none to the selected server", oneError: true},
		{name: "empty capture, json", args: []string{"--json", empty}, code: exitInput, stderr: "no TCP sessions", oneError: true},
		{name: "damaged midway", args: []string{damaged}, code: exitInput, stderr: "capture is damaged", stdout: true},
		{name: "damaged midway, json", args: []string{"--json", "-v", damaged}, code: exitInput, stderr: "capture is damaged", stdout: true, jsonDoc: true},
		{name: "cut short", args: []string{cut}, code: exitOK, stderr: "warning:", stdout: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCmd(t, nil, append([]string{"inspect"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(errs, "\n"), "\n")
			if !strings.HasPrefix(lines[0], "tcopy-tun: ") || !strings.Contains(lines[0], tt.stderr) {
				t.Errorf("stderr %q, want a tcopy-tun: line with %q", errs, tt.stderr)
			}
			if tt.oneError && (len(lines) > 2 || (len(lines) == 2 && !strings.HasPrefix(lines[1], "hint: "))) {
				t.Errorf("stderr is not one error line: %q", errs)
			}
			if tt.stdout != (out != "") {
				t.Errorf("stdout %q, want a listing: %v", out, tt.stdout)
			}
			if tt.jsonDoc {
				var doc inspectDoc
				if err := json.Unmarshal([]byte(out), &doc); err != nil {
					t.Fatalf("stdout is not JSON: %v\n%s", err, out)
				}
				if !strings.Contains(doc.Error, "damaged") || len(doc.Sessions) == 0 || doc.Stats.Frames == 0 {
					t.Errorf("document error %q, %d sessions, %d frames", doc.Error, len(doc.Sessions), doc.Stats.Frames)
				}
			}
		})
	}
}

func TestInspectHelp(t *testing.T) {
	code, out, errs := runCmd(t, nil, "inspect", "-h")
	if code != exitOK || errs != "" || !strings.HasPrefix(out, "usage: tcopy-tun inspect") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}
