package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// smallSpecs are the workloads' captures at test size.
func smallSpecs() map[string]capSpec {
	ws := workloads(true)
	out := map[string]capSpec{}
	for _, w := range ws {
		s := w.Capture
		if s.TLS {
			continue // TestGeneratedTLSCaptures
		}
		switch s.Kind {
		case "short":
			s.Sessions, s.Clients = 300, 7 // clients reuse their address
		case "keepalive", "pipelined":
			s.Sessions, s.Requests = 12, 23 // 23 = two full batches of 10 and a short one
		case "bulk":
			s.Sessions, s.Body, s.Upload = 3, 1<<20+3, 2<<20+1
		case "upload":
			s.Upload = 3<<20 + 5
		}
		out[s.Kind] = s
	}
	return out
}

// readSessions rebuilds the sessions of a capture and checks that its
// frames are in time order.
func readSessions(t *testing.T, path string) ([]*session.Session, capture.Stats) {
	t.Helper()
	src, err := capture.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := capture.NewReader(src, path)
	var last time.Time
	var ss []*session.Session
	b := session.NewBuilder(session.Config{ServerDataLimit: -1}, session.Collect(func(s *session.Session) { ss = append(ss, s) }))
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Time.Before(last) {
			t.Fatalf("packet %d at %v before the previous one at %v", p.N, p.Time, last)
		}
		last = p.Time
		b.Add(p)
	}
	b.Close()
	return ss, r.Stats()
}

// TestGeneratedCaptures: each capture rebuilds into exactly the sessions,
// chunks, bytes and ends the spec describes, nothing partial or missing, in
// time order, and the writer's counters agree with what is read back.
func TestGeneratedCaptures(t *testing.T) {
	for kind, spec := range smallSpecs() {
		t.Run(kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), kind+".pcap")
			st, err := generate(spec, path)
			if err != nil {
				t.Fatal(err)
			}
			ss, cs := readSessions(t, path)
			if len(ss) != spec.Sessions {
				t.Fatalf("%d sessions, want %d", len(ss), spec.Sessions)
			}
			if cs.Frames != st.Frames || cs.Malformed != 0 {
				t.Errorf("reader stats %+v, writer %+v", cs, st)
			}
			var cb, sb int64
			clients := map[netip.Addr]bool{}
			for _, s := range ss {
				cb += s.ClientBytes
				sb += s.ServerBytes
				clients[s.Client.Addr()] = true
				if s.Flags != 0 || len(s.Holes) != 0 {
					t.Errorf("session %d: flags %v holes %v", s.ID, s.Flags, s.Holes)
				}
				if s.Server != benchServer {
					t.Errorf("session %d: server %v", s.ID, s.Server)
				}
				wantEnd := session.EndClientFIN
				if kind == "short" {
					wantEnd = session.EndServerFIN
				}
				if s.End != wantEnd {
					t.Errorf("session %d: end %v, want %v", s.ID, s.End, wantEnd)
				}
				if kind != "bulk" && kind != "upload" {
					// One chunk per turn: a request, or a pipelined batch.
					depth := max(spec.Depth, 1)
					if want := (spec.Requests + depth - 1) / depth; len(s.Chunks) != want {
						t.Errorf("session %d: %d chunks, want %d", s.ID, len(s.Chunks), want)
					}
				}
			}
			if cb != st.ClientBytes || sb != st.ServerBytes {
				t.Errorf("bytes read back %d/%d, written %d/%d", cb, sb, st.ClientBytes, st.ServerBytes)
			}
			if st.Requests != spec.totalRequests() {
				t.Errorf("%d requests, want %d", st.Requests, spec.totalRequests())
			}
			if len(clients) != min(spec.Clients, spec.Sessions) {
				t.Errorf("%d captured clients, want %d", len(clients), spec.Clients)
			}
		})
	}
}

// TestShortCaptureOverlap: the short workload's capture is a busy server,
// not a queue: sessions overlap, so causal order leaves room for
// concurrency, and a session does wait for earlier ones.
func TestShortCaptureOverlap(t *testing.T) {
	spec := smallSpecs()["short"]
	path := filepath.Join(t.TempDir(), "short.pcap")
	if _, err := generate(spec, path); err != nil {
		t.Fatal(err)
	}
	ss, _ := readSessions(t, path)
	last := ss[len(ss)-1]
	// With a session every 100µs lasting about 1.8 ms, about 18 overlap.
	if lag := last.ID - last.EndedBefore; lag < 10 || lag > 30 {
		t.Errorf("the last session waits for all but %d of the sessions before it, want 10–30", lag)
	}
}

// TestReplayMatchesCapture replays each small capture over kernel sockets
// on loopback against the bench's target: every session succeeds and every
// answer is identical to the captured one, which is what makes the bench's
// "delivered" and the intercept's verdicts meaningful.
func TestReplayMatchesCapture(t *testing.T) {
	s := startTestServer(t)
	target := netip.MustParseAddrPort(s.ln.Addr().String())
	for kind, spec := range smallSpecs() {
		t.Run(kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), kind+".pcap")
			st, err := generate(spec, path)
			if err != nil {
				t.Fatal(err)
			}
			before := s.stats()
			src, err := capture.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			rec := intercept.New(intercept.Options{})
			ch := make(chan *session.Session)
			go func() {
				defer close(ch)
				session.Build(capture.NewReader(src, path), session.Config{}, func(s *session.Session) { ch <- s })
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sum, err := replay.Run(ctx, replay.Config{Dialer: &replay.SocketDialer{}, Target: target, Observer: rec}, ch)
			if err != nil {
				t.Fatal(err)
			}
			for range ch {
			}
			if sum.Succeeded != int64(spec.Sessions) {
				t.Errorf("summary %+v", sum)
			}
			rep := rec.Report(sum)
			// A bulk answer is longer than the captured server data kept
			// (1 MiB by default): not comparable as a whole, but its
			// captured part must agree.
			want := &rep.Totals.Match.Identical
			if kind == "bulk" {
				want = &rep.Totals.Match.NotComparable
				for _, row := range rep.Rows() {
					if row.CapturedMatch == nil || !*row.CapturedMatch {
						t.Errorf("session %d: captured part of the answer differs", row.ID)
					}
				}
			}
			if *want != int64(spec.Sessions) {
				t.Errorf("match %+v", rep.Totals.Match)
			}
			after := s.stats()
			if got := after.Requests - before.Requests; got != spec.totalRequests() {
				t.Errorf("target answered %d requests, want %d", got, spec.totalRequests())
			}
			// What the bench checks as "every byte at the target": the
			// target counts exactly the capture's client bytes.
			if got := after.BytesIn - before.BytesIn; got != st.ClientBytes || sum.BytesSent != st.ClientBytes {
				t.Errorf("target received %d bytes, replay sent %d, capture has %d", got, sum.BytesSent, st.ClientBytes)
			}
		})
	}
}

func TestCapturedClient(t *testing.T) {
	seen := map[netip.AddrPort]bool{}
	for i := range 200000 {
		c := capturedClient(i, 65534)
		if seen[c] {
			t.Fatalf("session %d reuses client %v", i, c)
		}
		seen[c] = true
		if !netip.MustParsePrefix("10.2.0.0/16").Contains(c.Addr()) || c.Addr() == netip.MustParseAddr("10.2.0.0") {
			t.Fatalf("session %d: client %v", i, c)
		}
	}
}

// TestGenerateStreams: the upload capture is written as it is made, not
// built in memory first. A child process writes a 128 MiB upload; its peak
// RSS stays far below the capture's size (about 40 MiB here, 42 MiB for
// the full 384 MiB).
func TestGenerateStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 128 MiB capture")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The peak RSS of writing a small and a large capture: streamed, they
	// differ by little; held in memory, by the difference in size. (An
	// absolute bound would not hold under the race detector, whose shadow
	// memory inflates RSS.)
	gen := func(size int) int64 {
		path := filepath.Join(t.TempDir(), "upload.pcap")
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), envRole+"=gen-upload", envGenOut+"="+path, envGenSize+"="+strconv.Itoa(size))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("generate: %v: %s", err, out)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Size() < int64(size) {
			t.Fatalf("capture %v, %v", fi, err)
		}
		os.Remove(path)
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
		t.Logf("%d MiB capture written with a peak RSS of %d MiB", fi.Size()>>20, rss>>20)
		return rss
	}
	const small, large = 16 << 20, 144 << 20
	rs, rl := gen(small), gen(large)
	if rl-rs > (large-small)/2 {
		t.Errorf("peak RSS %d MiB for a %d MiB upload, %d MiB for %d MiB: the capture is held in memory", rl>>20, large>>20, rs>>20, small>>20)
	}
}

// Environment of the "gen-upload" role (TestMain).
const (
	envGenOut  = "TCOPY_BENCH_TEST_GEN_OUT"
	envGenSize = "TCOPY_BENCH_TEST_GEN_SIZE"
)

// genUploadRole writes an upload capture of envGenSize bytes to envGenOut.
func genUploadRole() int {
	size, err := strconv.ParseInt(os.Getenv(envGenSize), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	spec := capSpec{Kind: "upload", Sessions: 1, Requests: 1, Body: uploadReply, Upload: size, Clients: 1, Spacing: time.Millisecond}
	if _, err := generate(spec, os.Getenv(envGenOut)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
