package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// The selection is worked out once from the flags, and answers the session
// builder, a live capture's filter and the messages alike.
func TestSelectionFromFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		words string
		ports []uint16
		named bool
		has   []string // captured servers selected
		not   []string // and not
	}{
		{
			name: "target port", args: []string{"--target", "127.0.0.1:8080"},
			words: "port 8080", ports: []uint16{8080},
			has: []string{"10.1.0.1:8080", "[2001:db8::1]:8080"}, not: []string{"10.1.0.1:8081"},
		},
		{
			name: "server", args: []string{"--target", "127.0.0.1:8080", "--server", "10.1.0.1:9000"},
			words: "10.1.0.1:9000", ports: []uint16{9000}, named: true,
			has: []string{"10.1.0.1:9000"}, not: []string{"10.1.0.2:9000", "10.1.0.1:8080"},
		},
		{
			name: "server, IPv4-mapped", args: []string{"--target", "127.0.0.1:8080", "--server", "[::ffff:10.1.0.1]:9000"},
			words: "[::ffff:10.1.0.1]:9000", ports: []uint16{9000}, named: true,
			has: []string{"10.1.0.1:9000"}, not: []string{"10.1.0.2:9000"},
		},
		{
			name: "server on any address", args: []string{"--target", "127.0.0.1:8080", "--server", "0.0.0.0:9000"},
			words: "port 9000", ports: []uint16{9000}, named: true,
			has: []string{"10.1.0.1:9000", "[::1]:9000"}, not: []string{"10.1.0.1:8080"},
		},
		{
			name: "maps", args: []string{"--map", "10.1.0.2:9001=127.0.0.1:2", "--map", "10.1.0.1:9000=127.0.0.1:1", "--map", "0.0.0.0:9000=127.0.0.1:3"},
			words: "port 9000, 10.1.0.1:9000, 10.1.0.2:9001", ports: []uint16{9000, 9001}, named: true,
			has: []string{"10.1.0.1:9000", "10.7.7.7:9000", "10.1.0.2:9001"}, not: []string{"10.1.0.1:9001", "127.0.0.1:1"},
		},
		{
			// --server wins over --map, as it always did.
			name: "server and maps", args: []string{"--server", "10.1.0.1:9000", "--map", "10.1.0.2:9001=127.0.0.1:2"},
			words: "10.1.0.1:9000", ports: []uint16{9000}, named: true,
			has: []string{"10.1.0.1:9000"}, not: []string{"10.1.0.2:9001"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseReplayFlags(append([]string{"--pcap", "x.pcap"}, tc.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			sel := newSelection(f)
			if sel.String() != tc.words || !slices.Equal(sel.ports(), tc.ports) || sel.named != tc.named {
				t.Errorf("selection %q, ports %v, named %v; want %q, %v, %v", sel, sel.ports(), sel.named, tc.words, tc.ports, tc.named)
			}
			for _, s := range tc.has {
				if !sel.has(netip.MustParseAddrPort(s)) {
					t.Errorf("%s not selected", s)
				}
			}
			for _, s := range tc.not {
				if sel.has(netip.MustParseAddrPort(s)) {
					t.Errorf("%s selected", s)
				}
			}
		})
	}
}

// serversSeen records the server of each connection, also of connections
// without a handshake, where Config.Keep is asked about both endpoints
// first: recording every endpoint Keep is asked about would count their
// clients as servers.
func TestServersSeen(t *testing.T) {
	t0 := replaytest.DemoStart()
	conv := func(client, server string, start time.Duration, handshake bool) []capture.Packet {
		c := replaytest.NewConv(client, server, t0.Add(start))
		c.Handshake().Send("GET / HTTP/1.1\r\n\r\n").Reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").ClientAck().
			Send("GET /2 HTTP/1.1\r\n\r\n").Reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").CloseClient()
		p := c.Packets()
		if !handshake {
			p = p[3:]
		}
		return p
	}
	serverFirst := conv("10.0.0.4:40004", "10.1.0.1:9000", 3*time.Millisecond, false)
	serverFirst = serverFirst[1:] // starts with the server's answer
	for _, tc := range []struct {
		name   string
		sel    selection
		pkts   []capture.Packet
		seen   []string
		others []string
	}{
		{
			name: "one server, with and without handshakes",
			sel:  selection{servers: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8080")}},
			pkts: replaytest.Merge(
				conv("10.0.0.1:40001", "10.1.0.1:9000", 0, true),
				conv("10.0.0.2:40002", "10.1.0.1:9000", time.Millisecond, false),
				conv("10.0.0.3:40003", "10.1.0.1:9000", 2*time.Millisecond, false),
				serverFirst,
			),
			seen: []string{"10.1.0.1:9000"}, others: []string{"10.1.0.1:9000"},
		},
		{
			name: "two servers, one selected",
			sel:  selection{servers: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:9001")}},
			pkts: replaytest.Merge(
				conv("10.0.0.1:40001", "10.1.0.1:9000", 0, false),
				conv("10.0.0.2:40002", "10.1.0.2:9001", time.Millisecond, true),
			),
			seen: []string{"10.1.0.1:9000", "10.1.0.2:9001"}, others: []string{"10.1.0.1:9000"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := newServersSeen(tc.sel)
			b := passBuilder{session.NewBuilder(session.Config{Keep: seen.keep}, session.Collect(func(*session.Session) {})), seen, nil}
			for i := range tc.pkts {
				b.Add(&tc.pkts[i])
			}
			b.Close()
			if got := addrStrings(seen.list); !slices.Equal(got, tc.seen) || seen.more {
				t.Errorf("seen %v (more %v), want %v", got, seen.more, tc.seen)
			}
			if got := addrStrings(seen.others()); !slices.Equal(got, tc.others) {
				t.Errorf("others %v, want %v", got, tc.others)
			}
		})
	}

	// Past maxServersSeen distinct servers, it says there are more.
	var convs [][]capture.Packet
	for i := range maxServersSeen + 2 {
		convs = append(convs, conv("10.0.0.1:40001", netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), uint16(9000+i)).String(), time.Duration(i)*time.Millisecond, true))
	}
	seen := newServersSeen(selection{})
	b := passBuilder{session.NewBuilder(session.Config{Keep: seen.keep}, session.Collect(func(*session.Session) {})), seen, nil}
	for _, p := range replaytest.Merge(convs...) {
		b.Add(&p)
	}
	if len(seen.list) != maxServersSeen || !seen.more || !strings.HasSuffix(seen.othersString(), " and others") {
		t.Errorf("%d servers: seen %d, more %v, %q", maxServersSeen+2, len(seen.list), seen.more, seen.othersString())
	}
}

func addrStrings(aps []netip.AddrPort) []string {
	var out []string
	for _, ap := range aps {
		out = append(out, ap.String())
	}
	return out
}

// On the public captures, what one pass that selects nothing records
// agrees with the servers of the sessions a full rebuild without selection
// finds (what the command read the capture a second time for): every
// session's server is among them, and where the sessions have one server,
// that is the only one recorded. It may record more (a connection without
// a handshake that never carried client data is not a session).
func TestServersSeenRealCaptures(t *testing.T) {
	dir := realCapturesDir(t)
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".md") {
			return err
		}
		sessions := map[netip.AddrPort]bool{}
		if !readCapture1(path, func(r *capture.Reader) {
			session.Build(r, session.Config{ServerDataLimit: -1}, func(s *session.Session) { sessions[s.Server] = true })
		}) {
			return nil // not a capture the reader opens
		}
		files++
		seen := newServersSeen(selection{})
		readCapture1(path, func(r *capture.Reader) {
			b := passBuilder{session.NewBuilder(session.Config{ServerDataLimit: -1, Keep: seen.keep}, session.Collect(func(*session.Session) {})), seen, nil}
			for {
				p, err := r.Next()
				if err != nil {
					break
				}
				b.Add(p)
			}
			b.Close()
		})
		rel, _ := filepath.Rel(dir, path)
		for s := range sessions {
			if !seen.more && !slices.Contains(seen.list, s) {
				t.Errorf("%s: sessions of %s, but the pass recorded %v", rel, s, seen.list)
			}
		}
		if len(sessions) == 1 && (len(seen.list) != 1 || seen.more) {
			t.Errorf("%s: the sessions have one server, %v; the pass recorded %v (more %v)", rel, sessions, seen.list, seen.more)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no capture read in %s", dir)
	}
}

// readCapture1 opens a capture file and hands its reader to fn; false if
// it does not open.
func readCapture1(path string, fn func(r *capture.Reader)) bool {
	src, err := capture.Open(path)
	if err != nil {
		return false
	}
	r := capture.NewReader(src, path)
	defer r.Close()
	fn(r)
	return true
}

// realCapturesDir finds ../shared/pcaps/real next to the module root (the
// public captures its SOURCES.md describes), or skips the test.
func realCapturesDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "..", "shared", "pcaps", "real")
	if _, err := os.Stat(filepath.Join(real, "SOURCES.md")); err != nil {
		t.Skipf("real captures not available: %v (they live in ../shared/pcaps/real beside the checkout)", err)
	}
	return real
}

// The error when nothing was selected says what the capture held and how to
// choose; standard input, which cannot be read again, names the --server
// to run with when there was one server.
func TestNoSessionsError(t *testing.T) {
	port := selection{servers: []netip.AddrPort{netip.AddrPortFrom(netip.Addr{}, 8080)}}
	seen := func(servers ...string) *serversSeen {
		s := newServersSeen(port)
		for _, a := range servers {
			s.keep(netip.MustParseAddrPort(a))
			s.added()
		}
		return s
	}
	tcp := capture.Stats{Frames: 20, TCP: 18}
	for _, tc := range []struct {
		name string
		f    replayFlags
		sel  selection
		c    capture.Stats
		seen *serversSeen
		want string
	}{
		{
			name: "file, two servers", f: replayFlags{pcap: "x.pcap"}, sel: port, c: tcp, seen: seen("10.1.0.1:9000", "10.1.0.2:9001"),
			want: `read "x.pcap": no sessions of the captured server port 8080 (the capture holds 18 TCP segments, of connections to 10.1.0.1:9000 and 10.1.0.2:9001; run 'tcopy-tun inspect x.pcap' and choose with --server IP:PORT)`,
		},
		{
			name: "file, nothing seen", f: replayFlags{pcap: "x.pcap"}, sel: port, c: tcp, seen: seen(),
			want: `read "x.pcap": no sessions of the captured server port 8080 (the capture holds 18 TCP segments; run 'tcopy-tun inspect x.pcap' and choose with --server IP:PORT)`,
		},
		{
			name: "file, named servers", f: replayFlags{pcap: "x.pcap"}, c: tcp, seen: seen("10.1.0.1:9000"),
			sel:  selection{servers: []netip.AddrPort{netip.MustParseAddrPort("10.1.0.3:1"), netip.MustParseAddrPort("0.0.0.0:2")}, named: true},
			want: `read "x.pcap": no sessions of the captured servers 10.1.0.3:1, port 2 (the capture holds 18 TCP segments, of connections to 10.1.0.1:9000; run 'tcopy-tun inspect x.pcap' and choose with --server IP:PORT)`,
		},
		{
			name: "stdin, one server", f: replayFlags{pcap: "-"}, sel: port, c: tcp, seen: seen("10.1.0.1:9000", "10.1.0.1:9000"),
			want: `read "-": no sessions of the captured server port 8080 (the capture holds 18 TCP segments, of connections to 10.1.0.1:9000; standard input cannot be read again: run again with --server 10.1.0.1:9000)`,
		},
		{
			name: "stdin, two servers", f: replayFlags{pcap: "-"}, sel: port, c: tcp, seen: seen("10.1.0.1:9000", "10.1.0.2:9001"),
			want: `read "-": no sessions of the captured server port 8080 (the capture holds 18 TCP segments, of connections to 10.1.0.1:9000 and 10.1.0.2:9001; run 'tcopy-tun inspect -' and choose with --server IP:PORT)`,
		},
		{
			name: "no TCP", f: replayFlags{pcap: "x.pcap"}, sel: port, c: capture.Stats{Frames: 3}, seen: seen(),
			want: `read "x.pcap": no TCP segments in 3 frames: nothing to replay`,
		},
		{
			name: "live", f: replayFlags{live: "eth0"}, sel: port, c: tcp, seen: seen(),
			want: `live capture on eth0: no sessions of the selected server were seen (18 TCP segments)`,
		},
		{
			name: "live, another server", f: replayFlags{live: "eth0"}, sel: port, c: tcp, seen: seen("127.0.0.1:8081"),
			want: `live capture on eth0: no sessions of the selected server were seen (18 TCP segments, of connections to 127.0.0.1:8081; choose with --server IP:PORT)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := noSessionsError(&tc.f, tc.sel, tc.c, tc.seen).Error(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// When nothing is on the target's port and the capture file holds one
// server, the command replays that server, reading the file twice: once
// to find it (the pass that selected nothing) and once to replay it. With
// two servers it reads once and says which. inotify counts how often the
// capture is opened. The replay runs in process through
// kernel sockets (--via socket: no privileges) against the e2e test server.
func TestReplayOnlyServerReadsTwice(t *testing.T) {
	oneServer := e2eCapture(t, []e2eSession{
		{Client: "10.0.0.1:40000", Server: "10.1.0.1:9000", Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/a"}}},
		{Client: "10.0.0.2:40000", Server: "10.1.0.1:9000", Start: 5 * time.Millisecond, Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/b"}}},
	})
	twoServers := e2eCapture(t, []e2eSession{
		{Client: "10.0.0.1:40000", Server: "10.1.0.1:9000", Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/a"}}},
		{Client: "10.0.0.2:40000", Server: "10.1.0.2:9001", Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/b"}}},
	})
	for _, tc := range []struct {
		name    string
		capture []byte
		extra   []string
		code    int
		opens   int
		stderr  string
		reqs    int
	}{
		{"one server", oneServer, nil, exitOK, 2, "no captured server on port PORT; replaying the only server in the capture, 10.1.0.1:9000", 2},
		{"one server, --loop 3", oneServer, []string{"--loop", "3"}, exitOK, 1 + 3, "replaying the only server in the capture, 10.1.0.1:9000", 6},
		{"two servers", twoServers, nil, exitInput, 1, "of connections to 10.1.0.1:9000 and 10.1.0.2:9001; run 'tcopy-tun inspect", 0},
		{"named server", oneServer, []string{"--server", "10.1.0.1:9001"}, exitInput, 1, "no sessions of the captured server 10.1.0.1:9001", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startInProcessServer(t)
			file := filepath.Join(t.TempDir(), "capture.pcap")
			if err := os.WriteFile(file, tc.capture, 0o644); err != nil {
				t.Fatal(err)
			}
			opened := countOpens(t, file)
			var stdout, stderr bytes.Buffer
			target := srv.ln.Addr().String()
			args := append([]string{"--pcap", file, "--target", target, "--via", "socket", "--speed", "max", "--progress", "never"}, tc.extra...)
			code := run(env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}, args)
			opens := opened()
			reqs := srv.requests()
			t.Logf("tcopy-tun %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
			want := strings.ReplaceAll(tc.stderr, "PORT", target[strings.LastIndexByte(target, ':')+1:])
			if code != tc.code || opens != tc.opens || !strings.Contains(stderr.String(), want) || reqs != tc.reqs {
				t.Errorf("exit %d, capture opened %d times, %d requests served; want %d, %d, %d and stderr with %q", code, opens, reqs, tc.code, tc.opens, tc.reqs, want)
			}
		})
	}
}

// startInProcessServer runs the e2e test server ("http" mode: it answers
// as the generated captures' server did) on a loopback port of this
// process until the test ends.
func startInProcessServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &testServer{mode: "http", ln: ln, out: bufio.NewWriter(io.Discard), live: map[net.Conn]int{}}
	srv.wg.Add(1)
	go srv.serve()
	t.Cleanup(func() { srv.stop() })
	return srv
}

// requests counts the requests the server has parsed.
func (s *testServer) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		n += len(c.Requests)
	}
	return n
}

// countOpens watches path with inotify and returns a function that says
// how often it has been opened since. Opens and closes alternate in the
// event queue, so the kernel does not merge two opens into one event.
func countOpens(t *testing.T, path string) func() int {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if _, err := syscall.InotifyAddWatch(fd, path, syscall.IN_OPEN|syscall.IN_CLOSE_NOWRITE|syscall.IN_CLOSE_WRITE); err != nil {
		t.Fatalf("inotify watch %s: %v", path, err)
	}
	opens := 0
	return func() int {
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil || n <= 0 {
				return opens // EAGAIN: every event read
			}
			// struct inotify_event: wd, mask, cookie, len, then len bytes of name.
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				if binary.NativeEndian.Uint32(buf[off+4:])&syscall.IN_OPEN != 0 {
					opens++
				}
				off += syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
			}
		}
	}
}
