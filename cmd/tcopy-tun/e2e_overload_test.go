package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The overload test's set-up: production nginx A on a namespace address,
// the target nginx B on loopback, ab against A as fast as it goes, and live
// copy from lo with a buffer far too small for that (--live-buffer), so the
// kernel drops packets on purpose.
const (
	overloadProdIP  = "10.9.2.1"
	overloadPort    = 8080
	overloadTarget  = 8081
	overloadBuffer  = "64KiB"
	overloadTurn    = 3 * time.Second // --turn-timeout: the exit bound is counted from it
	overloadExitMax = overloadTurn + 5*time.Second
)

// TestPrivilegedLiveOverload: live copy past what the machine carries. The
// kernel drops packets (the small buffer); the run must say so (the count in
// the summary and report), mark the sessions the drops hurt as
// capture-incomplete or with holes rather than failures of the target, fail
// nothing else, and end promptly: within the turn timeout plus a few seconds
// of the first SIGINT, and the same when --duration ends the copy.
func TestPrivilegedLiveOverload(t *testing.T) {
	requireReal(t, toolNginx, toolAb)
	for _, stop := range []string{"sigint", "duration"} {
		t.Run(stop, func(t *testing.T) { overloadRun(t, stop) })
	}
}

func overloadRun(t *testing.T, stop string) {
	x := newE2E(t)
	x.ns.AddDummy(t, "prod0", overloadProdIP+"/24")
	dir := shortTempDir(t, "ovl")
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startNginx(t, x, dir, "a", fmt.Sprintf("%s:%d", overloadProdIP, overloadPort))
	bLog := startNginx(t, x, dir, "b", fmt.Sprintf("127.0.0.1:%d", overloadTarget))
	x.snapshot()

	rep := filepath.Join(x.dir, "report.json")
	args := []string{"--live", "lo", "--live-buffer", overloadBuffer,
		"--server", fmt.Sprintf("%s:%d", overloadProdIP, overloadPort),
		"--target", fmt.Sprintf("127.0.0.1:%d", overloadTarget),
		"--turn-timeout", overloadTurn.String(), "--report", rep, "--progress", "never"}
	const duration = 4 * time.Second
	if stop == "duration" {
		args = append(args, "--duration", duration.String())
	}
	p := x.start(args...)
	x.waitTUN(p)
	began := time.Now()

	// ab as fast as it goes, bounded by count (-n) and time (-t).
	url := fmt.Sprintf("http://%s:%d/index.html", overloadProdIP, overloadPort)
	if out, err := x.ns.Output("ab", "-q", "-n", "6000", "-c", "32", "-s", "10", "-t", "8", url); err != nil && !strings.Contains(out, "Complete requests") {
		t.Fatalf("ab: %v\n%s", err, out)
	}
	var stopped time.Time
	var r e2eRun
	if stop == "sigint" {
		stopped = time.Now()
		p.signal(syscall.SIGINT)
		r = p.wait(overloadExitMax + 30*time.Second)
	} else {
		stopped = began.Add(duration)
		r = p.wait(duration + overloadExitMax + 30*time.Second)
	}
	took := time.Since(stopped)
	t.Logf("exit %v after the stop", took.Round(time.Millisecond))
	if took > overloadExitMax {
		t.Errorf("the run ended %v after the stop (%s), want at most the turn timeout %v plus 5s", took.Round(time.Millisecond), stop, overloadTurn)
	}
	if r.code != exitOK && r.code != exitFailure {
		t.Errorf("exit %d, want %d or %d (sessions not started after the stop)", r.code, exitOK, exitFailure)
	}

	var got struct {
		S map[string]json.RawMessage `json:"summary"`
		R []struct {
			Outcome string   `json:"outcome"`
			Flags   []string `json:"flags"`
			End     string   `json:"end_captured"`
			Sent    int64    `json:"chunks_sent"`
			Devs    struct {
				Turn  int `json:"turn_timeouts"`
				Early int `json:"early_close"`
				Lost  int `json:"lost_turns"`
			} `json:"deviations"`
		} `json:"sessions"`
	}
	b, err := os.ReadFile(rep)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report: %v", err)
	}
	num := func(k string) int64 {
		var n int64
		if err := json.Unmarshal(got.S[k], &n); err != nil {
			t.Fatalf("report summary %s: %v", k, err)
		}
		return n
	}
	drops, failed, incomplete := num("capture_drops"), num("sessions_failed"), num("sessions_capture_incomplete")
	succeeded, replayed := num("sessions_succeeded"), num("sessions_replayed")
	t.Logf("drops %d; replayed %d: %d ok, %d capture-incomplete, %d failed; %d not started",
		drops, replayed, succeeded, incomplete, failed, num("sessions_not_started"))
	if drops == 0 {
		t.Fatalf("no packet was dropped with a %s buffer: the test did not overload the live copy\n%s", overloadBuffer, r.stderr)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("kernel dropped %d packets", drops)) || !strings.Contains(r.stderr, "loss:") {
		t.Errorf("stderr does not report the %d dropped packets:\n%s", drops, r.stderr)
	}
	if failed != 0 {
		t.Errorf("%d sessions failed: capture loss must not be taken for the target's failure", failed)
		for i, row := range got.R {
			if row.Outcome != "ok" && row.Outcome != "capture-incomplete" {
				t.Logf("failed: %s", rowJSON(b, i))
			}
		}
	}
	if succeeded+incomplete != replayed || int64(len(got.R)) != replayed {
		t.Errorf("%d ok + %d capture-incomplete != %d replayed (%d rows)", succeeded, incomplete, replayed, len(got.R))
	}
	hurt, sentOK := 0, 0
	for i, row := range got.R {
		marked := row.Outcome == "capture-incomplete" || hasFlag(row.Flags, "holes") || hasFlag(row.Flags, "partial") || row.End == "capture-end"
		if marked {
			hurt++
		}
		if row.Devs.Turn > 0 || row.Devs.Early > 0 || row.Devs.Lost > 0 {
			// A session that departed from the capture must be one the
			// capture's loss explains.
			if row.Outcome != "capture-incomplete" {
				t.Errorf("a session departed from the capture (%+v) without being marked capture-incomplete: %+v", row.Devs, row)
			}
		}
		if hasFlag(row.Flags, "server-first") {
			t.Errorf("an HTTP session marked server-first (lost packets taken for a protocol): %s", rowJSON(b, i))
		}
		if row.Outcome == "ok" && row.Sent > 0 {
			sentOK++
		}
	}
	if hurt == 0 {
		t.Errorf("%d packets dropped but no session marked (capture-incomplete, holes, partial or capture-end)", drops)
	}
	// Every session replayed ok that sent its request reached nginx B:
	// its log has at least as many requests.
	logged := strings.Count(readFileString(t, bLog), "\n")
	if logged < sentOK {
		t.Errorf("nginx B logged %d requests, fewer than the %d sessions replayed ok with their request", logged, sentOK)
	}
	x.assertClean()
}

// startNginx runs nginx in the foreground, one process, serving dir on
// addr; it returns the access log's path.
func startNginx(t *testing.T, x *e2e, dir, name, addr string) string {
	t.Helper()
	conf := filepath.Join(dir, name+".conf")
	logf := filepath.Join(dir, name+".log")
	cfg := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/%[2]s.pid;
error_log %[1]s/%[2]s.err;
events { worker_connections 4096; }
http {
  access_log %[3]s;
  client_body_temp_path %[1]s/%[2]s-body;
  proxy_temp_path %[1]s/%[2]s-proxy;
  fastcgi_temp_path %[1]s/%[2]s-fcgi;
  uwsgi_temp_path %[1]s/%[2]s-uwsgi;
  scgi_temp_path %[1]s/%[2]s-scgi;
  server { listen %[4]s; root %[1]s; location / { } }
}
`, dir, name, logf, addr)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, x.ns, "nginx-"+name, "nginx", "-c", conf)
	p.waitListening(t, x.ns, addr)
	t.Cleanup(func() { p.stop(t, syscall.SIGQUIT) })
	return logf
}

// rowJSON is session row i of the report b, for messages.
func rowJSON(b []byte, i int) string {
	var r struct {
		Sessions []json.RawMessage `json:"sessions"`
	}
	if json.Unmarshal(b, &r) != nil || i >= len(r.Sessions) {
		return "?"
	}
	return string(r.Sessions[i])
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func readFileString(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
