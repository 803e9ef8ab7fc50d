package main

import (
	"encoding/json"
	"fmt"
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

// Metrics of a running live copy: tcopy-tun serves /metrics (on every
// address of its namespace, readable from 127.0.0.1 only) while real
// clients talk to production; curl scrapes it as Prometheus would, the
// counters follow the sessions as they finish, promtool accepts the
// scrape, a peer outside --metrics-allow gets nothing, and every line on
// stderr is a JSON log record (--log-format json), the summary last.
func TestPrivilegedE2EMetricsLive(t *testing.T) {
	requireReal(t, toolCurl, toolPromtool)
	x := newE2E(t)
	x.ns.AddDummy(t, "prod0", "10.9.0.1/24")
	prod := x.startServer("http", "10.9.0.1:8080")
	tgt := x.startServer("http", "127.0.0.1:9090")
	x.snapshot()
	rep := filepath.Join(x.dir, "report.json")
	p := x.start("--live", "lo", "--server", "10.9.0.1:8080", "--target", "127.0.0.1:9090",
		"--report", rep, "--progress", "never", "--log-format", "json",
		"--metrics", "0.0.0.0:0", "--metrics-allow", "127.0.0.1")
	x.waitTUN(p)
	port := metricsPort(t, p)
	url := "http://127.0.0.1:" + port + "/metrics"

	before := x.scrape(url)
	if v, ok := before[`tcopy_tun_sessions_started_total`]; !ok || v != 0 {
		t.Errorf("before any traffic: sessions started %v (present %v), want 0", v, ok)
	}

	// Production traffic: five one-shot requests and one keep-alive
	// connection with three requests.
	err := x.ns.Do(func() error {
		for i := range 5 {
			if err := clientSession(fmt.Sprintf("GET /m/%d HTTP/1.1\r\nHost: prod\r\nConnection: close\r\n\r\n", i), 1); err != nil {
				return err
			}
		}
		return clientSession("GET /m/ka/0 HTTP/1.1\r\nHost: prod\r\n\r\nGET /m/ka/1 HTTP/1.1\r\nHost: prod\r\n\r\nGET /m/ka/2 HTTP/1.1\r\nHost: prod\r\n\r\n", 3)
	})
	if err != nil {
		t.Fatalf("production client: %v", err)
	}
	tgt.waitRequests(8, 20*time.Second)

	// The sessions finish in the replay shortly after they closed in
	// production, and the capture counters follow within a quarter of a
	// second (meterPeriod): scrape until both show.
	var m map[string]float64
	var text string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		text = x.scrapeText(url)
		m = parseSamples(t, text)
		if (m[`tcopy_tun_sessions_finished_total{outcome="ok"}`] >= 6 && m[`tcopy_tun_capture_frames_total{source="lo"}`] > 0) || time.Now().After(deadline) {
			break
		}
	}
	want := map[string]float64{
		"tcopy_tun_sessions_read_total":                     6,
		"tcopy_tun_sessions_started_total":                  6,
		`tcopy_tun_sessions_finished_total{outcome="ok"}`:   6,
		"tcopy_tun_sessions_in_flight":                      0,
		`tcopy_tun_answers_total{match="identical"}`:        6,
		"tcopy_tun_turns_total":                             6, // the pipelined requests are one write
		"tcopy_tun_live_lag_seconds_count":                  6,
		"tcopy_tun_chunk_lateness_seconds_count":            6,
		`tcopy_tun_capture_kernel_drops_total{source="lo"}`: 0,
		"tcopy_tun_sessions_shed_total":                     0,
	}
	for name, w := range want {
		if got, ok := m[name]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, w)
		}
	}
	for _, name := range []string{"tcopy_tun_sent_bytes_total", "tcopy_tun_received_bytes_total", `tcopy_tun_capture_frames_total{source="lo"}`, `tcopy_tun_capture_segments_total{source="lo"}`, "process_resident_memory_bytes"} {
		if m[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, m[name])
		}
	}
	promtoolCheck(t, text)

	// A peer outside --metrics-allow (the namespace's 10.9.0.1 reaching
	// the same socket) is closed before it reads anything.
	out, err := x.ns.Output("curl", "-sS", "--max-time", "10", "http://10.9.0.1:"+port+"/metrics")
	if err == nil || strings.Contains(out, "tcopy_tun") {
		t.Errorf("a peer outside --metrics-allow was served (err %v):\n%.300s", err, out)
	}
	if v := x.scrape(url)["tcopy_tun_metrics_refused_connections_total"]; v != 1 {
		t.Errorf("refused connections %v, want 1", v)
	}

	p.signal(syscall.SIGINT)
	r := p.wait(20 * time.Second)
	prod.stop()
	tgt.stop()
	if r.code != exitOK {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitOK, r.stderr)
	}
	// Every line on stderr is one JSON record; the summary is the one
	// whose msg is "summary".
	var summary *struct {
		Summary struct {
			Replayed  int `json:"sessions_replayed"`
			Succeeded int `json:"sessions_succeeded"`
		} `json:"summary"`
	}
	for _, line := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time.IsZero() || rec.Level == "" || rec.Msg == "" {
			t.Errorf("stderr line is not a JSON log record with time, level and msg (%v): %s", err, line)
			continue
		}
		if rec.Msg == "summary" {
			if err := json.Unmarshal([]byte(line), &summary); err != nil {
				t.Errorf("summary record: %v", err)
			}
		}
	}
	if summary == nil {
		t.Fatalf("no summary record on stderr")
	}
	if summary.Summary.Replayed != 6 || summary.Summary.Succeeded != 6 {
		t.Errorf("summary record: %d replayed, %d succeeded; want 6, 6", summary.Summary.Replayed, summary.Summary.Succeeded)
	}
	assertAllIdentical(t, readReport(t, rep), 6)
	x.assertClean()
}

// Metrics of a capture streamed on standard input (tcpdump -w - | ...):
// scraped while the stream is still open, the sessions it held are
// counted as finished and the source is "stdin"; when the stream ends, the
// run ends and the endpoint with it.
func TestPrivilegedE2EMetricsStdin(t *testing.T) {
	requireReal(t, toolCurl, toolPromtool)
	x := newE2E(t)
	const target = "127.0.0.1:8080"
	srv := x.startServer("http", target)
	x.snapshot()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	c := x.ns.Command(x.bin, "--pcap", "-", "--target", target, "--speed", "max", "--progress", "never",
		"--metrics", "127.0.0.1:0")
	c.Stdin = pr
	p := x.startCmd(c)
	pr.Close() // the child holds its own copy
	port := metricsPort(t, p)
	url := "http://127.0.0.1:" + port + "/metrics"
	if _, err := pw.Write(replaytest.DemoPcap()); err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	var text string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		text = x.scrapeText(url)
		m = parseSamples(t, text)
		if m[`tcopy_tun_sessions_finished_total{outcome="ok"}`] >= 20 || time.Now().After(deadline) {
			break
		}
	}
	for name, w := range map[string]float64{
		`tcopy_tun_sessions_finished_total{outcome="ok"}`: 20,
		`tcopy_tun_answers_total{match="identical"}`:      20,
		"tcopy_tun_sessions_in_flight":                    0,
		"tcopy_tun_turns_total":                           41,
		"tcopy_tun_chunk_lateness_seconds_count":          41,
	} {
		if got, ok := m[name]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, w)
		}
	}
	if m[`tcopy_tun_capture_frames_total{source="stdin"}`] <= 0 {
		t.Errorf(`capture_frames_total{source="stdin"} = %v, want > 0`, m[`tcopy_tun_capture_frames_total{source="stdin"}`])
	}
	promtoolCheck(t, text)
	pw.Close() // the stream ends: so does the run
	r := p.wait(30 * time.Second)
	srv.stop()
	if r.code != exitOK {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitOK, r.stderr)
	}
	if out, err := x.ns.Output("curl", "-sS", "--max-time", "5", url); err == nil {
		t.Errorf("the endpoint still answers after the run ended:\n%.200s", out)
	}
	x.assertClean()
}

// metricsPort waits for the log record that says where the metrics are
// served (the kernel chose the port) and returns the port.
func metricsPort(t *testing.T, p *e2eProc) string {
	t.Helper()
	re := regexp.MustCompile(`serving metrics on http://[^ "]*:(\d+)/metrics`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if g := re.FindStringSubmatch(p.stderr.String()); g != nil {
			return g[1]
		}
		if time.Now().After(deadline) {
			p.signal(syscall.SIGKILL)
			t.Fatalf("no \"serving metrics\" record within 10s: %s", p.wait(5*time.Second).stderr)
		}
	}
}

// scrapeText fetches url with curl inside the test's namespace.
func (x *e2e) scrapeText(url string) string {
	x.t.Helper()
	out, err := x.ns.Output("curl", "-sS", "--fail", "--max-time", "10", url)
	if err != nil {
		x.t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	return out
}

func (x *e2e) scrape(url string) map[string]float64 {
	x.t.Helper()
	return parseSamples(x.t, x.scrapeText(url))
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// parseSamples reads the Prometheus text format into "name{labels}" →
// value.
func parseSamples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		g := sampleLine.FindStringSubmatch(line)
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

// toolPromtool checks the exposition format.
var toolPromtool = realTool{"promtool", "prometheus"}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus
// package; requireReal(t, toolPromtool) first) on a scrape.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
