package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// buildBinaries builds tcopy-tun and the harness into a temporary
// directory, side by side as make bench puts them.
func buildBinaries(t *testing.T) (bench, tcopy string) {
	t.Helper()
	dir := t.TempDir()
	bench, tcopy = filepath.Join(dir, "tcopy-tun-bench"), filepath.Join(dir, "tcopy-tun")
	for pkg, out := range map[string]string{".": bench, "../tcopy-tun": tcopy} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	return bench, tcopy
}

func netnsExists(name string) bool {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// deadPid returns the pid of a process that has exited.
func deadPid(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestPrivilegedBenchQuick runs the harness end to end on small captures:
// both paths replay every session, the JSON holds the table's numbers, and
// nothing is left behind: not its namespace, not its captures, not a
// namespace a killed earlier run left.
func TestPrivilegedBenchQuick(t *testing.T) {
	tuntest.Privileged(t)
	bench, tcopy := buildBinaries(t)
	stale := fmt.Sprintf("%s%d", netnsPrefix, deadPid(t))
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", stale, err, out)
	}
	t.Cleanup(func() {
		if netnsExists(stale) {
			exec.Command("ip", "netns", "del", stale).Run()
		}
	})
	tmp := t.TempDir()
	js := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command(bench, "-tcopy-tun", tcopy, "-quick", "-workloads", "short,pipelined,bulk,upload,tls-short", "-json", js, "-tmp", tmp, "-run-timeout", "2m")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if netnsExists(stale) {
		t.Errorf("stale namespace %s was not swept", stale)
	}
	if netnsExists(fmt.Sprintf("%s%d", netnsPrefix, cmd.Process.Pid)) {
		t.Errorf("the bench's namespace is left behind")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in the capture directory: %v", left)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Workloads) != 5 || rep.Machine.CPUs == 0 {
		t.Fatalf("report %s", b)
	}
	for _, w := range rep.Workloads {
		for _, r := range []*runResult{w.Tun, w.Socket} {
			if r == nil {
				t.Fatalf("%s: a path has no completed run", w.Name)
			}
			if r.Succeeded != r.Expected || r.Requests != w.Capture.totalRequests() || r.MaxRSSBytes == 0 || r.UserSeconds+r.SysSeconds == 0 {
				t.Errorf("%s via %s: %+v", w.Name, r.Via, r)
			}
			if !r.AllBytesDelivered || r.TargetBytesIn != w.CaptureStats.ClientBytes {
				t.Errorf("%s via %s: the target received %d of the capture's %d client bytes", w.Name, r.Via, r.TargetBytesIn, w.CaptureStats.ClientBytes)
			}
			if r.Match["identical"]+r.Match["not_comparable"] != r.Expected {
				t.Errorf("%s via %s: answers %v", w.Name, r.Via, r.Match)
			}
		}
		if w.Ratio <= 0 {
			t.Errorf("%s: ratio %v", w.Name, w.Ratio)
		}
		// The TLS workload: costed against its plaintext twin and its
		// decryption alone, each replay complete.
		if c := w.TLSCost; w.Capture.TLS {
			if c == nil || c.Plain == nil || c.Decrypted == nil {
				t.Fatalf("%s: no TLS cost: %+v", w.Name, c)
			}
			for _, r := range []*runResult{c.Plain, c.Decrypted} {
				if r.Succeeded != r.Expected || !r.AllBytesDelivered || r.Match["identical"] != r.Expected {
					t.Errorf("%s cost run: %+v", w.Name, r)
				}
			}
			if c.PlainMS <= 0 || c.DecryptedMS <= 0 || c.TLSMS <= 0 {
				t.Errorf("%s: cost per session %+v", w.Name, c)
			}
		} else if c != nil {
			t.Errorf("%s: a TLS cost for a plaintext workload", w.Name)
		}
	}
	for _, want := range []string{"short", "pipelined", "bulk", "upload", "tun/socket", "bytes at target", "targets:",
		"tls-short: tcopy-tun CPU per session", "decrypting is", "decrypting < 50 %"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

// TestPrivilegedBenchInterrupt: SIGINT in the middle of a replay stops it,
// still prints the table and writes the JSON, and removes the namespace and
// the captures; the exit code says interrupted.
func TestPrivilegedBenchInterrupt(t *testing.T) {
	tuntest.Privileged(t)
	bench, tcopy := buildBinaries(t)
	tmp := t.TempDir()
	js := filepath.Join(t.TempDir(), "bench.json")
	// Many runs of the short workload through the socket path: long
	// enough to be interrupted in flight.
	cmd := exec.Command(bench, "-tcopy-tun", tcopy, "-workloads", "short", "-via", "socket", "-runs", "20", "-json", js, "-tmp", tmp)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	ns := fmt.Sprintf("%s%d", netnsPrefix, cmd.Process.Pid)
	done := make(chan error, 1)
	var log strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Interrupt once the first replay is done: the second is under way.
	deadline := time.After(3 * time.Minute)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("bench ended before the replay started:\n%s", log.String())
			}
			log.WriteString(l + "\n")
			if strings.Contains(l, " sessions/s") {
				break wait
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("no replay done after 3 minutes:\n%s", log.String())
		}
	}
	time.Sleep(200 * time.Millisecond)
	if !netnsExists(ns) {
		t.Errorf("namespace %s not there during the run", ns)
	}
	cmd.Process.Signal(os.Interrupt)
	go func() {
		for l := range lines {
			log.WriteString(l + "\n")
		}
		done <- cmd.Wait()
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("bench still running 60 s after SIGINT:\n%s", log.String())
	}
	t.Logf("stderr:\n%s", log.String())
	if cmd.ProcessState.ExitCode() != exitSignaled {
		t.Errorf("exit %v, want %d", err, exitSignaled)
	}
	if netnsExists(ns) {
		t.Errorf("namespace %s left behind", ns)
		exec.Command("ip", "netns", "del", ns).Run()
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("left in the capture directory: %v", left)
	}
	b, err := os.ReadFile(js)
	if err != nil || !bytes.Contains(b, []byte(`"interrupted": true`)) {
		t.Errorf("JSON after interrupt: %v\n%s", err, b)
	}
}

// TestPrivilegedBenchLive runs the live workload, quick, with the short
// one: each path's search ran its steps within the bound, found a rate
// that live copy followed (at the quick steps' lowest rate, 250/s, any
// machine does), that step's copy replayed every session the load made
// with no kernel drop, and the ratio is taken against the short
// workload's offline rate of the same run.
func TestPrivilegedBenchLive(t *testing.T) {
	tuntest.Privileged(t)
	bench, tcopy := buildBinaries(t)
	tmp := t.TempDir()
	js := filepath.Join(t.TempDir(), "bench.json")
	cmd := exec.Command(bench, "-tcopy-tun", tcopy, "-quick", "-workloads", "short,live", "-runs", "1", "-json", js, "-tmp", tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	t.Logf("stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Workloads) != 2 || rep.Workloads[1].Name != "live" {
		t.Fatalf("workloads in the report: %s", b)
	}
	short, live := rep.Workloads[0], rep.Workloads[1]
	var spec *liveSpec
	for _, w := range workloads(true) {
		if w.Name == "live" {
			spec = w.Live
		}
	}
	if len(live.Live) != 2 {
		t.Fatalf("live searches %d, want one per path", len(live.Live))
	}
	for _, ls := range live.Live {
		if n := len(ls.Steps); n == 0 || n > spec.maxSteps() {
			t.Errorf("via %s: %d steps, want 1 to %d", ls.Via, n, spec.maxSteps())
		}
		best := ls.best()
		if best == nil || ls.MaxFollowed != best.RateAsked || ls.Error != "" {
			t.Errorf("via %s: no rate followed (%v): %+v", ls.Via, ls.Error, ls.Steps)
			continue
		}
		if best.CaptureDrops != 0 || best.LoadOK == 0 || best.Replayed != best.LoadOK || best.Succeeded != best.LoadOK ||
			best.TargetRequests < best.LoadOK || best.Lag.Count == 0 || best.CPU == 0 {
			t.Errorf("via %s: the step that followed: %+v", ls.Via, best)
		}
		off := short.Tun
		if ls.Via == "socket" {
			off = short.Socket
		}
		if off == nil || ls.Offline != off.SessionsPerSec || ls.Ratio <= 0 {
			t.Errorf("via %s: offline %v (%s), ratio %v; the short workload's run: %+v", ls.Via, ls.Offline, ls.OfflineFrom, ls.Ratio, off)
		}
	}
	for _, want := range []string{"live copy with 0 drops", "followed (asked)", "steps:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if netnsExists(fmt.Sprintf("%s%d", netnsPrefix, cmd.Process.Pid)) {
		t.Errorf("the bench's namespace is left behind")
	}
}
