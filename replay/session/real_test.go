package session

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// realDir finds ../shared/pcaps/real next to the module root (the public
// captures described in its SOURCES.md), or skips the test.
func realDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
	real := filepath.Join(dir, "..", "shared", "pcaps", "real")
	if _, err := os.Stat(filepath.Join(real, "SOURCES.md")); err != nil {
		t.Skipf("real captures not available: %v (they live in ../shared/pcaps/real beside the checkout)", err)
	}
	return real
}

type realResult struct {
	sessions []*Session
	stats    Stats
	reader   capture.Stats
	err      error // from Open or Build
}

func buildFile(t testing.TB, path string, cfg Config) realResult {
	t.Helper()
	src, err := capture.Open(path)
	if err != nil {
		return realResult{err: err}
	}
	r := capture.NewReader(src, path)
	defer r.Close()
	var res realResult
	res.stats, res.err = Build(r, cfg, func(s *Session) { res.sessions = append(res.sessions, s) })
	res.reader = r.Stats()
	return res
}

// TestRealSessionCounts compares, per file, the sessions built with the
// TCP conversations tshark counts (SOURCES.md, "TCP convs"). Where they
// differ, the difference is deliberate and explained: tshark counts every
// 4-tuple that carried a TCP packet, a session needs something to replay,
// so a conversation without a handshake whose client never sent a byte is
// counted in Stats.NoClientData instead.
func TestRealSessionCounts(t *testing.T) {
	dir := realDir(t)
	tests := []struct {
		file         string
		tshark       int // "TCP convs" in SOURCES.md
		sessions     int
		noClientData int
		why          string
	}{
		{"zeek/http/methods.pcap", 49, 49, 0, ""},
		{"zeek/http/bro.org.pcap", 13, 13, 0, ""},
		{"zeek/wikipedia.pcap", 10, 10, 0, ""},
		{"suricata-verify/http-range-multiflows/input.pcap", 41, 41, 0, ""},
		{"pcapplusplus/4KHttpRequests.pcap", 121, 121, 0, "requests only, no handshakes: 121 partial sessions"},
		{"pcapplusplus/many-protocols.pcap", 126, 126, 0, "one connection retransmits its FIN and sends keepalives for 11 s after both FINs: Linger absorbs them"},
		{"tcpdump/resp_1_benchmark.pcap", 15, 15, 0, ""},
		{"zeek/redis/pubsub.pcap", 4, 4, 0, ""},
		{"deepflow/redis/redis.pcap", 6, 4, 2, "two mid-session conversations are only keepalive ACKs"},
		{"zeek/mysql/auth.pcap", 13, 13, 0, ""},
		{"deepflow/mysql/171-mysql.pcap", 6, 6, 0, "all mid-session: partial"},
		{"zeek/ftp/bruteforce.pcap", 30, 30, 0, ""},
		{"zeek/ftp/ipv6.pcap", 6, 6, 0, ""},
		{"zeek/tls/google-cert-repeat.pcap", 8, 8, 0, ""},
		{"zeek/rotation.pcap", 20, 20, 0, "SYN-only connections are sessions: they have a handshake to replay"},
		{"zeek/smtp.pcap", 6, 5, 1, "one mid-session TLS conversation carries only server bytes and ACKs"},
		{"zeek/http/cooper-grill-dvwa.pcapng", 4, 3, 1, "one mid-session conversation is ACKs and FINs only"},
		{"pcapplusplus/pcapng-example.pcapng", 15, 11, 4, "four mid-session conversations carry no client byte"},
		{"pcapplusplus/pcapng-example.pcapng.zst", 15, 11, 4, "same capture, zstd-compressed"},
		{"pcapplusplus/sll2.pcap", 1, 0, 1, "one mid-session TLS record from the server, then FINs: nothing to replay"},
		{"pcapplusplus/four_ipv6_http_streams.pcap", 4, 4, 0, ""},
		{"zeek/ipv6-http-atomic-frag.pcap", 4, 4, 0, ""},
		{"zeek/ipv4/fragmented-4.pcap", 2, 2, 0, ""},
		{"tcpreplay/test.pcap", 7, 7, 0, ""},
		{"zeek/tcp/tcp-fast-open.pcap", 2, 2, 0, ""},
		{"deepflow/l4-source-port-reuse.pcap", 1, 1, 0, "the new SYN is the session; the old connection's late packets are stray"},
		{"zeek/http/1000-requests-one-dropped-response.pcap.gz", 1, 1, 0, ""},
		{"zeek/http/206_example_b.pcap", 2, 2, 0, ""},
		{"zeek/postgresql/greenhouse-app.pcap", 2, 2, 0, ""},
		{"suricata-verify/pgsql-cancel-request/input.pcap", 2, 2, 0, ""},
		{"suricata-verify/pgsql-5000-query-results/input.pcap", 2, 2, 0, "cut short in the last record: everything before is used"},
		{"zeek/empty.pcap", 0, 0, 0, ""},
		{"gopacket/be/test202.pcapng", 0, 0, 0, "no TCP at all"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			if tt.sessions+tt.noClientData != tt.tshark {
				t.Fatalf("table: %d sessions + %d without client data do not account for tshark's %d", tt.sessions, tt.noClientData, tt.tshark)
			}
			res := buildFile(t, filepath.Join(dir, tt.file), Config{})
			if res.err != nil {
				t.Fatalf("build: %v", res.err)
			}
			if len(res.sessions) != tt.sessions || int(res.stats.NoClientData) != tt.noClientData {
				t.Errorf("%d sessions and %d without client data, want %d and %d (%s)", len(res.sessions), res.stats.NoClientData, tt.sessions, tt.noClientData, tt.why)
			}
			for _, s := range res.sessions {
				checkInvariants(t, s)
			}
		})
	}
}

// TestRealCapturesAll runs every file: each either yields sessions that
// keep the invariants, or fails with one of the capture package's clear
// errors; the files SOURCES.md lists as damaged are the ones that fail.
func TestRealCapturesAll(t *testing.T) {
	dir := realDir(t)
	damaged := map[string]bool{
		"libpcap/shb-option-too-long.pcapng":  true,
		"libpcap/pcap-invalid-version-1.pcap": true,
		// Damaged after 18 packets: the session read so far is flushed.
		"suricata-verify/smtp-to-comma/10.7.29.101_49898-178.63.41.150_25.pcap": true,
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "SOURCES.md" {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		n++
		res := buildFile(t, path, Config{})
		switch {
		case damaged[rel]:
			if !errors.Is(res.err, capture.ErrDamaged) {
				t.Errorf("%s: error %v, want a damaged-capture error", rel, res.err)
			} else if !strings.Contains(res.err.Error(), filepath.Base(rel)) {
				t.Errorf("%s: error %q does not name the file", rel, res.err)
			}
		case res.err != nil:
			t.Errorf("%s: %v", rel, res.err)
		}
		for i, s := range res.sessions {
			if s.ID != uint64(i) {
				t.Errorf("%s: session %d has ID %d", rel, i, s.ID)
			}
			checkInvariants(t, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 80 {
		t.Errorf("walked %d files, SOURCES.md lists 81", n)
	}
}

// TestRealSessionDetails checks what specific captures are known to hold.
func TestRealSessionDetails(t *testing.T) {
	dir := realDir(t)
	get := func(t *testing.T, file string) realResult {
		t.Helper()
		res := buildFile(t, filepath.Join(dir, file), Config{})
		if res.err != nil {
			t.Fatalf("%s: %v", file, res.err)
		}
		return res
	}
	t.Run("port reuse", func(t *testing.T) {
		res := get(t, "deepflow/l4-source-port-reuse.pcap")
		s := res.sessions[0]
		if len(s.Chunks) != 0 || s.ServerBytes != 0 || s.End != EndCaptureEnd || res.stats.Stray != 3 {
			t.Errorf("session %+v, stray %d: the old connection's data and resets must not join the new SYN", s, res.stats.Stray)
		}
	})
	t.Run("keep-alive with a lost response segment", func(t *testing.T) {
		s := get(t, "zeek/http/1000-requests-one-dropped-response.pcap.gz").sessions[0]
		if len(s.Chunks) != 1000 || s.Flags&Holes == 0 || len(s.Holes) != 1 || !s.Holes[0].Server {
			t.Errorf("%d chunks, flags %v, holes %+v; want 1000 requests and one server hole", len(s.Chunks), s.Flags, s.Holes)
		}
		for i, c := range s.Chunks {
			if !strings.HasPrefix(string(c.Data), "GET /") {
				t.Fatalf("chunk %d is not a request: %q", i, c.Data[:min(len(c.Data), 20)])
			}
			if i > 0 && c.ServerBytesBefore <= s.Chunks[i-1].ServerBytesBefore {
				t.Fatalf("request %d does not wait for the answer to %d: %d after %d", i, i-1, c.ServerBytesBefore, s.Chunks[i-1].ServerBytesBefore)
			}
		}
	})
	t.Run("data on the SYN", func(t *testing.T) {
		s := get(t, "zeek/tcp/tcp-fast-open.pcap").sessions[1]
		if len(s.Chunks) != 1 || len(s.Chunks[0].Data) != 86 || s.Chunks[0].Offset != 0 || s.Chunks[0].StreamOffset != 0 {
			t.Errorf("chunks %+v; want the 86 request bytes carried by the SYN", s.Chunks)
		}
	})
	t.Run("sequence wrap", func(t *testing.T) {
		s := get(t, "pcapplusplus/one_tcp_stream_max_seq.pcap").sessions[0]
		if s.Flags&Holes != 0 || s.ClientBytes == 0 || s.ServerBytes < 10000 || s.ISN < 1<<31 {
			t.Errorf("flags %v, bytes %d/%d, ISN %#x", s.Flags, s.ClientBytes, s.ServerBytes, s.ISN)
		}
	})
	t.Run("server first", func(t *testing.T) {
		s := get(t, "zeek/mysql/mysql.pcap").sessions[0]
		if s.Flags&ServerFirst == 0 || s.Chunks[0].ServerBytesBefore != 56 || Guess(s) != MySQL {
			t.Errorf("flags %v, first chunk waits for %d bytes, guess %s; want the 56-byte greeting first", s.Flags, s.Chunks[0].ServerBytesBefore, Guess(s))
		}
	})
	t.Run("mid-session start with a server reply", func(t *testing.T) {
		s := get(t, "zeek/redis/start-with-server.pcapng").sessions[0]
		if s.Flags&Partial == 0 || s.Flags&ServerFirst != 0 || s.Chunks[0].ServerBytesBefore != 0 || s.Server.Port() != 6379 {
			t.Errorf("%v → %v flags %v, first chunk waits for %d", s.Client, s.Server, s.Flags, s.Chunks[0].ServerBytesBefore)
		}
	})
	t.Run("snap length", func(t *testing.T) {
		res := get(t, "zeek/tcp/timestamp.pcap")
		s := res.sessions[0]
		if s.Flags&(SnapLen|Truncated|Holes) != SnapLen|Truncated|Holes || res.reader.Truncated == 0 {
			t.Errorf("flags %v, reader truncated %d", s.Flags, res.reader.Truncated)
		}
		// Records 16 bytes shorter than the wire length, but the IP
		// packets are whole: no TCP byte is missing, nothing is flagged.
		res = get(t, "deepflow/memcached/memcached-userdata.pcap")
		if s := res.sessions[0]; s.Flags != Partial {
			t.Errorf("memcached-userdata: flags %v", s.Flags)
		}
	})
	t.Run("protocol guesses", func(t *testing.T) {
		for file, want := range map[string]Protocol{
			"zeek/http/get.pcap":                         HTTP,
			"tcpdump/resp_1_benchmark.pcap":              RESP,
			"zeek/tls/tls-conn-with-extensions.pcap":     TLS,
			"zeek/postgresql/greenhouse-app.pcap":        PostgreSQL,
			"zeek/mysql/caching_sha2_password.pcap":      MySQL,
			"deepflow/memcached/memcached.pcap":          Memcached,
			"suricata-verify/smtp-pipelining/input.pcap": SMTP,
			"zeek/ftp/bruteforce.pcap":                   FTP,
			"deepflow/mysql/171-mysql.pcap":              MySQL, // mid-session, port 20130
			"deepflow/nats/nats-nrpc1.pcap":              Unknown,
		} {
			for _, s := range get(t, file).sessions {
				if g := Guess(s); g != want {
					t.Errorf("%s session %d (%v): %s, want %s", file, s.ID, s.Server, g, want)
				}
			}
		}
	})
}
