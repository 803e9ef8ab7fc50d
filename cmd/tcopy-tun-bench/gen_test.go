package main

import (
	"context"
	"io"
	"net/netip"
	"path/filepath"
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
		switch s.Kind {
		case "short":
			s.Sessions, s.Clients = 300, 7 // clients reuse their address
		case "keepalive", "pipelined":
			s.Sessions, s.Requests = 12, 23 // 23 = two full batches of 10 and a short one
		case "bulk":
			s.Sessions, s.Body, s.Upload = 3, 1<<20+3, 2<<20+1
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
	b := session.NewBuilder(session.Config{ServerDataLimit: -1}, func(s *session.Session) { ss = append(ss, s) })
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
				if kind != "bulk" {
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
			if _, err := generate(spec, path); err != nil {
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
			if got := s.stats().Requests - before.Requests; got != spec.totalRequests() {
				t.Errorf("target answered %d requests, want %d", got, spec.totalRequests())
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
