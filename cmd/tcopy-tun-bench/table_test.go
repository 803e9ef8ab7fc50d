package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
)

func TestMedianAndRatio(t *testing.T) {
	runs := []*runResult{
		{Via: "tun", WallSeconds: 1, SessionsPerSec: 300},
		{Via: "socket", WallSeconds: 1, SessionsPerSec: 1000},
		{Via: "tun", WallSeconds: 1, SessionsPerSec: 100},
		{Via: "tun", WallSeconds: 0, SessionsPerSec: 0}, // did not complete: left out
		{Via: "tun", WallSeconds: 1, SessionsPerSec: 200},
		{Via: "tun", WallSeconds: 1, SessionsPerSec: 900},
	}
	tun := median(runs, "tun", "sessions_per_second")
	if tun == nil || tun.SessionsPerSec != 200 {
		t.Fatalf("median of 100, 200, 300, 900 = %v, want the lower middle 200", tun)
	}
	sock := median(runs, "socket", "sessions_per_second")
	if r := ratio(tun, sock, "sessions_per_second"); r != 0.2 {
		t.Errorf("ratio %v", r)
	}
	if median(runs, "none", "x") != nil || ratio(tun, nil, "sessions_per_second") != 0 {
		t.Error("missing runs")
	}
}

func TestSelectWorkloads(t *testing.T) {
	all := workloads(false)
	ws, err := selectWorkloads(all, " bulk,short,bulk ")
	if err != nil || len(ws) != 2 || ws[0].Name != "bulk" || ws[1].Name != "short" {
		t.Errorf("selected %v, %v", ws, err)
	}
	if ws, _ := selectWorkloads(all, ""); len(ws) != len(all) || len(all) != 11 {
		t.Errorf("default selects %d workloads", len(ws))
	}
	if _, err := selectWorkloads(all, "shrot"); err == nil || !strings.Contains(err.Error(), "have short") {
		t.Errorf("unknown workload: %v", err)
	}
	// The sizes.
	byName := map[string]*workload{}
	for _, w := range all {
		byName[w.Name] = w
	}
	if c := byName["short"].Capture; c.Sessions != 10000 || c.Requests != 1 {
		t.Errorf("short %+v", c)
	}
	// live compares with the short capture (the same one, generated
	// once), runs after short in the default order so that it takes the
	// offline rate from it, and its search is bounded (about 40 s of load
	// per path at most).
	if l := byName["live"]; l.Live == nil || l.Capture.key() != byName["short"].Capture.key() ||
		time.Duration(l.Live.maxSteps())*l.Live.Trial > 40*time.Second {
		t.Errorf("live %+v", l)
	}
	if ws, _ := selectWorkloads(all, ""); indexOf(ws, "live") < indexOf(ws, "short") {
		t.Errorf("live runs before short")
	}
	if c := byName["keepalive"].Capture; c.Sessions != 200 || c.Requests != 50 {
		t.Errorf("keepalive %+v", c)
	}
	if c := byName["bulk"].Capture; c.Body != 256<<20 || c.Upload != 256<<20 {
		t.Errorf("bulk %+v", c)
	}
	if c := byName["million"].Capture; c.Sessions != 1_000_000 {
		t.Errorf("million %+v", c)
	}
	if c := byName["upload"].Capture; c.Sessions != 1 || c.Upload != 384<<20 || c.Body > 1024 {
		t.Errorf("upload %+v", c)
	}
	for _, w := range workloads(true) {
		if w.Name == "upload" && w.Capture.Upload != 32<<20 {
			t.Errorf("quick upload %+v", w.Capture)
		}
	}
}

// TestUploadGoals: the upload workload checks the tun path's peak RSS and
// that the target received every byte on both paths.
func TestUploadGoals(t *testing.T) {
	ws, _ := selectWorkloads(workloads(false), "upload")
	w := ws[0]
	all := func(rss int64) *runResult {
		return &runResult{MaxRSSBytes: rss, ClientBytesExpected: 1000, TargetBytesIn: 1000, AllBytesDelivered: true}
	}
	tun, sock := all(200<<20), all(900<<20)
	for _, g := range w.targets {
		if got, met := g.check(tun, sock); !met {
			t.Errorf("%s: %s not met", g.what, got)
		}
	}
	tun.MaxRSSBytes = 600 << 20
	sock.TargetBytesIn, sock.AllBytesDelivered = 990, false
	for _, g := range w.targets {
		if got, met := g.check(tun, sock); met {
			t.Errorf("%s: %s met", g.what, got)
		} else if strings.Contains(g.what, "byte") && got != "tun all, socket 10 B missing" {
			t.Errorf("%s: got %q", g.what, got)
		}
	}
}

func TestGoals(t *testing.T) {
	w := workloads(false)[0] // short
	tun := &runResult{SessionsPerSec: 13000, Succeeded: 10000, Expected: 10000, DeliveredPct: 100}
	sock := &runResult{SessionsPerSec: 14000}
	for _, g := range w.targets {
		if got, met := g.check(tun, sock); !met {
			t.Errorf("%s: %s not met", g.what, got)
		}
	}
	tun.Succeeded = 9999
	if _, met := w.targets[1].check(tun, sock); met {
		t.Error("99.99 % counted as 100 % delivered")
	}
}

// TestReadReportHead reads a real report as tcopy-tun writes it, and stops
// before its rows.
func TestReadReportHead(t *testing.T) {
	rec := intercept.New(intercept.Options{})
	sum := &replay.Summary{Passes: 1, Wall: 2 * time.Second, Planned: 10, Replayed: 10, Succeeded: 9,
		Failed: replay.Failures{Refused: 1}, BytesSent: 100, BytesReceived: 2000}
	path := filepath.Join(t.TempDir(), "r.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Report(sum).WriteJSON(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	h, err := readReportHead(path)
	if err != nil {
		t.Fatal(err)
	}
	s := h.Summary
	if s.WallSeconds != 2 || s.Succeeded != 9 || s.FailedTotal != 1 || s.Failed["refused"] != 1 || s.BytesReceived != 2000 {
		t.Errorf("summary %+v", s)
	}
	if h.Totals.Match == nil {
		t.Error("no totals")
	}
	os.WriteFile(path, []byte(`{"version":1,"sessions":[]}`), 0o644)
	if _, err := readReportHead(path); err == nil {
		t.Error("a report without summary was accepted")
	}
}

func TestWriteTable(t *testing.T) {
	tun := &runResult{Via: "tun", Expected: 10000, Succeeded: 10000, WallSeconds: 1, SessionsPerSec: 9000,
		RequestsPerSec: 9000, MBPerSec: 4.2, CPUPer1k: 0.15, MaxRSSBytes: 80 << 20, DeliveredPct: 100}
	sock := &runResult{Via: "socket", Expected: 10000, Succeeded: 10000, WallSeconds: 1, SessionsPerSec: 10000, DeliveredPct: 100,
		ClientBytesExpected: 5000, TargetBytesIn: 5000, AllBytesDelivered: true}
	tun.ClientBytesExpected, tun.TargetBytesIn = 5000, 4000
	w := workloads(false)[0]
	wr := &workloadResult{Name: w.Name, Metric: w.Metric, Capture: w.Capture, Runs: []*runResult{tun, sock}, Tun: tun, Socket: sock, Ratio: 0.9,
		Targets: []goalResult{{What: "≥ 12,000 sessions/s via tun", Got: "9000/s", Met: false}}}
	rep := &benchReport{Machine: machineInfo{CPUs: 2, CPUModel: "Test CPU"}, LoadBefore: "1.00 1.00 1.00", Workloads: []*workloadResult{wr}}
	var b strings.Builder
	writeTable(&b, rep)
	out := b.String()
	for _, want := range []string{"2 × Test CPU", "sessions/s", "9000", "0.90 (sessions/s)", "100.00 %", "80", "MISSED",
		"bytes at target", "1000 B missing", " all "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-workloads", "short,bulk", "-via", "tun", "-args", "--mtu 1500  --link fdbased", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.workloads) != 2 || o.workloads[0].Capture.Sessions != 1000 || len(o.vias) != 1 ||
		strings.Join(o.extra, " ") != "--mtu 1500 --link fdbased" {
		t.Errorf("options %+v", o)
	}
	if o, err := parseFlags([]string{"-env", "GOGC=400 GODEBUG=gctrace=1"}, io.Discard); err != nil || len(o.env) != 2 {
		t.Errorf("-env: %v %v", o, err)
	}
	for _, bad := range [][]string{{"-env", "GOGC"}, {"-via", "udp"}, {"-runs", "-1"}, {"-workloads", "x"}, {"extra"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestSummarizePerf reads perf report output as the bench asks for it.
func TestSummarizePerf(t *testing.T) {
	report := `# Samples: 4K of event 'cpu-clock:ppp'
#
# Overhead  Shared Object      Symbol
# ........  .................  ......
#
    18.42%  [kernel.kallsyms]  [k] _copy_to_iter
    14.36%  tcopy-tun          [.] runtime.mapaccess2
     4.38%  tcopy-tun          [.] runtime.scanObject
     3.53%  tcopy-tun          [.] github.com/tcopy-tun/tcopy-tun/replay/session.(*Builder).finish
     3.23%  tcopy-tun          [.] aeshashbody
     2.00%  tcopy-tun          [.] gvisor.dev/gvisor/pkg/tcpip/stack.(*PacketBuffer).Clone
     1.00%  tcopy-tun          [.] github.com/tcopy-tun/tcopy-tun/netstack.packetIovecs
     0.50%  [vdso]             [.] __vdso_clock_gettime
     0.25%  tcopy-tun          [.] sync.(*Pool).Get
`
	got := summarizePerf(report, 3)
	for _, want := range []string{"kernel 18.4%", "Go runtime 22.0%", "tcopy-tun/replay/session 3.5%", "gVisor 2.0%",
		"tcopy-tun/netstack 1.0%", "vdso 0.5%", "Go library/other 0.2%", " 18.42%  _copy_to_iter", "4.38%  runtime.scanObject"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "aeshashbody") {
		t.Errorf("more than the top 3 symbols:\n%s", got)
	}
	if summarizePerf("# nothing\n", 3) != "" {
		t.Error("empty report summarized")
	}
}

func TestLatenessSection(t *testing.T) {
	if !paced([]string{"--speed", "1"}) || paced([]string{"--speed", "max"}) || paced(nil) {
		t.Error("paced")
	}
	tun := &runResult{Via: "tun", WallSeconds: 1, ChunkLateness: lateness{Count: 2000, P50us: 42, P99us: 610, Maxus: 2400}}
	wr := &workloadResult{Name: "timing", Args: []string{"--speed", "1"}, Runs: []*runResult{tun}, Tun: tun}
	var b strings.Builder
	writeTable(&b, &benchReport{Workloads: []*workloadResult{wr}})
	if !strings.Contains(b.String(), "tun    2000 chunks: 42 µs / 610 µs / 2400 µs") {
		t.Errorf("no lateness line:\n%s", b.String())
	}
}

func indexOf(ws []*workload, name string) int {
	for i, w := range ws {
		if w.Name == name {
			return i
		}
	}
	return -1
}
