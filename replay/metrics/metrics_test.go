package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// lineServer answers each line "GET x" with "ok x\n" over real loopback
// TCP (the --via socket path needs no privileges).
func lineServer(t *testing.T) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "ok %s\n", strings.TrimPrefix(strings.TrimSpace(line), "ASK "))
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// capturedSessions are n sessions of turns requests each, as a capture
// holds them; the last session's captured server had answered differently
// ("old" instead of "ok"), so its answer compares as different.
func capturedSessions(n, turns int) []capture.Packet {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var convs [][]capture.Packet
	for i := range n {
		c := replaytest.NewConv(fmt.Sprintf("10.0.0.%d:4000%d", i+1, i), "10.1.0.1:8080", t0.Add(time.Duration(i)*time.Millisecond)).Handshake()
		for j := range turns {
			word := "ok"
			if i == n-1 {
				word = "old"
			}
			c.Send(fmt.Sprintf("ASK %d-%d\n", i, j)).Reply(fmt.Sprintf("%s %d-%d\n", word, i, j))
		}
		convs = append(convs, c.CloseClient().Packets())
	}
	return replaytest.Merge(convs...)
}

// replayWith replays the packets through a Runner watched by x, over
// kernel sockets to the line server, and returns the runner.
func replayWith(t *testing.T, x *Exporter, pkts []capture.Packet, live bool) *replay.Runner {
	rec := intercept.New(intercept.Options{MaxRows: -1})
	cfg := replay.Config{
		Dialer: &replay.SocketDialer{}, Target: lineServer(t), Speed: replay.SpeedMax, Live: live,
		Observer: rec, Metrics: x, QuietTimeout: 50 * time.Millisecond, Logf: t.Logf,
	}
	r, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	x.Watch(r, rec)
	src := x.Source("test.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Stream(ctx, func(ctx context.Context, sink session.Sink) error {
		b := session.NewBuilder(session.Config{Live: live}, sink)
		for i := range pkts {
			b.Add(&pkts[i])
		}
		b.Close()
		src.Update(capture.Stats{Frames: int64(len(pkts)), TCP: int64(len(pkts)), Bytes: 100 * int64(len(pkts))})
		src.EndReading()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// scrape reads the text exposition from the registry over a real HTTP
// server, as Prometheus would.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// samples parses the text exposition into "name{labels}" → value.
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		g := sampleRE.FindStringSubmatch(line)
		if g == nil {
			t.Fatalf("unparsable sample line %q", line)
		}
		v, err := strconv.ParseFloat(g[2], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		m[g[1]] = v
	}
	return m
}

func serve(t *testing.T, x *Exporter, opts ServerOptions) *Server {
	t.Helper()
	s, err := x.Listen("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// The counters move with a replay and agree with its Summary and the
// intercept's totals; the histograms count every chunk and session start.
func TestCountersMoveWithReplay(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			x := New()
			s := serve(t, x, ServerOptions{})
			url := "http://" + s.Addr().String() + "/metrics"
			before := samples(t, scrape(t, url))
			for _, name := range []string{"tcopy_tun_sessions_started_total", "tcopy_tun_sent_bytes_total", `tcopy_tun_answers_total{match="identical"}`} {
				if v, ok := before[name]; !ok || v != 0 {
					t.Errorf("before the run: %s = %v (present %v), want 0", name, v, ok)
				}
			}
			const sessions, turns = 4, 3
			r := replayWith(t, x, capturedSessions(sessions, turns), live)
			sum := r.Summary()
			m := samples(t, scrape(t, url))
			want := map[string]float64{
				"tcopy_tun_sessions_read_total":                            sessions,
				"tcopy_tun_sessions_planned_total":                         sessions,
				"tcopy_tun_sessions_started_total":                         sessions,
				`tcopy_tun_sessions_finished_total{outcome="ok"}`:          sessions,
				`tcopy_tun_sessions_finished_total{outcome="reset"}`:       0,
				"tcopy_tun_sessions_in_flight":                             0,
				"tcopy_tun_turns_total":                                    sessions * turns,
				"tcopy_tun_sent_bytes_total":                               float64(sum.BytesSent),
				"tcopy_tun_received_bytes_total":                           float64(sum.BytesReceived),
				`tcopy_tun_answers_total{match="identical"}`:               sessions - 1,
				`tcopy_tun_answers_total{match="different"}`:               1,
				`tcopy_tun_deviations_total{kind="turn_timeout"}`:          0,
				"tcopy_tun_chunk_lateness_seconds_count":                   sessions * turns,
				"tcopy_tun_start_lateness_seconds_count":                   sessions,
				`tcopy_tun_capture_frames_total{source="test.pcap"}`:       float64(len(capturedSessions(sessions, turns))),
				`tcopy_tun_capture_kernel_drops_total{source="test.pcap"}`: 0,
				`tcopy_tun_run_passes_total`:                               1,
			}
			if live {
				want["tcopy_tun_live_lag_seconds_count"] = sessions * turns
			} else {
				want["tcopy_tun_live_lag_seconds_count"] = 0
			}
			for name, w := range want {
				if got, ok := m[name]; !ok || got != w {
					t.Errorf("%s = %v (present %v), want %v", name, got, ok, w)
				}
			}
			// The per-request comparison: one request per turn; the
			// session whose answer differs has a regression (against the
			// capture, nothing is noise).
			reqs, same, regs := m["tcopy_tun_requests_total"], m["tcopy_tun_requests_same_total"], m["tcopy_tun_requests_regressions"]
			if reqs != sessions*turns || regs < 1 || same+regs+m["tcopy_tun_requests_noise"]+m["tcopy_tun_requests_not_compared_total"] != reqs {
				t.Errorf("requests %v: same %v, regressions %v, noise %v, not compared %v; want %d requests, at least 1 regression, adding up",
					reqs, same, regs, m["tcopy_tun_requests_noise"], m["tcopy_tun_requests_not_compared_total"], sessions*turns)
			}
			if sum.BytesSent == 0 || sum.BytesReceived == 0 {
				t.Errorf("summary: %d bytes sent, %d received: the replay did not run", sum.BytesSent, sum.BytesReceived)
			}
			if m[`tcopy_tun_chunk_lateness_seconds_bucket{le="+Inf"}`] != sessions*turns {
				t.Errorf("chunk lateness +Inf bucket %v, want %d", m[`tcopy_tun_chunk_lateness_seconds_bucket{le="+Inf"}`], sessions*turns)
			}
			id := fmt.Sprintf(`tcopy_tun_run_info{run_id="%016x",speed="max"}`, sum.RunID)
			if m[id] != 1 {
				t.Errorf("%s missing or not 1", id)
			}
		})
	}
}

// A second run watched after the first keeps counting from the first's
// totals: counters never go backwards.
func TestCountersSurviveNewRun(t *testing.T) {
	x := New()
	s := serve(t, x, ServerOptions{})
	url := "http://" + s.Addr().String() + "/metrics"
	pkts := capturedSessions(2, 2)
	replayWith(t, x, pkts, false)
	first := samples(t, scrape(t, url))
	replayWith(t, x, pkts, false)
	second := samples(t, scrape(t, url))
	for _, name := range []string{"tcopy_tun_run_passes_total", "tcopy_tun_sessions_started_total", "tcopy_tun_turns_total", "tcopy_tun_sent_bytes_total", `tcopy_tun_answers_total{match="identical"}`, `tcopy_tun_capture_frames_total{source="test.pcap"}`} {
		if first[name] == 0 || second[name] != 2*first[name] {
			t.Errorf("%s: %v after one run, %v after two; want twice as many", name, first[name], second[name])
		}
	}
}

// Kernel drops of a live source are read at each scrape, and kept when the
// reading ends.
func TestSourceDrops(t *testing.T) {
	x := New()
	dc := &fakeDrops{n: 3}
	src := x.Source("eth0")
	src.SetDropCounter(dc)
	if x.Source("eth0") != src {
		t.Fatal("Source: a second call made a new source")
	}
	s := serve(t, x, ServerOptions{})
	url := "http://" + s.Addr().String() + "/metrics"
	const name = `tcopy_tun_capture_kernel_drops_total{source="eth0"}`
	if v := samples(t, scrape(t, url))[name]; v != 3 {
		t.Errorf("%s = %v, want 3", name, v)
	}
	dc.set(7)
	src.EndReading()
	dc.set(100) // no longer read: the reading ended at 7
	if v := samples(t, scrape(t, url))[name]; v != 7 {
		t.Errorf("after the reading ended: %s = %v, want 7", name, v)
	}
}

type fakeDrops struct {
	mu sync.Mutex
	n  uint64
}

func (f *fakeDrops) set(n uint64) { f.mu.Lock(); f.n = n; f.mu.Unlock() }
func (f *fakeDrops) Drops() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, nil
}

// The label values are replay's and intercept's own names.
func TestLabelsMatchPackages(t *testing.T) {
	for i, l := range outcomeLabels {
		if got := replay.Outcome(i).String(); got != l {
			t.Errorf("outcome %d is %q, labelled %q", i, got, l)
		}
	}
	if got := replay.Outcome(len(outcomeLabels)).String(); got != "other" {
		t.Errorf("outcome %d (%q) has no label", len(outcomeLabels), got)
	}
	for i, l := range matchLabels {
		if got := intercept.Match(i).String(); got != l {
			t.Errorf("match class %d is %q, labelled %q", i, got, l)
		}
	}
	if got := intercept.Match(len(matchLabels)).String(); got != "unknown" {
		t.Errorf("match class %d (%q) has no label", len(matchLabels), got)
	}
}

// promtool, Prometheus's own checker, accepts what the endpoint serves
// (after a replay, so that every metric has values).
func TestPromtoolAcceptsScrape(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("TCOPY_TUN_PRIVILEGED_TESTS") == "1" {
			t.Fatal("promtool not found (TCOPY_TUN_PRIVILEGED_TESTS=1): apt-get install prometheus, or make deps")
		}
		t.Skip("promtool not found: apt-get install prometheus (make deps does) to check the exposition format")
	}
	x := New()
	s := serve(t, x, ServerOptions{})
	x.Source("eth0").SetDropCounter(&fakeDrops{n: 1})
	replayWith(t, x, capturedSessions(3, 2), true)
	text := scrape(t, "http://"+s.Addr().String()+"/metrics")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if !strings.Contains(text, "tcopy_tun_live_lag_seconds_bucket") || !strings.Contains(text, "go_goroutines") {
		t.Errorf("the scrape lacks the histograms or the runtime metrics:\n%s", text)
	}
}
