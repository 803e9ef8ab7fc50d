package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envRole makes the test binary play a part in the harness's tests: the
// target ("serve" as first argument, as the harness starts it) or a fake
// tcopy-tun.
const envRole = "TCOPY_BENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(runServe(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	switch os.Getenv(envRole) {
	case "hang":
		// A replay stuck at exit: it ignores SIGINT and never returns.
		signal.Ignore(os.Interrupt, syscall.SIGTERM)
		select {}
	case "gen-upload":
		// A capture writer whose peak RSS TestGenerateStreams measures.
		os.Exit(genUploadRole())
	case "":
		os.Exit(m.Run())
	}
}

// TestHungReplayIsDumpedAndKilled: a replay that outlives its timeout is
// interrupted, then made to print its goroutines, and the bench goes on
// with a recorded error instead of waiting forever.
func TestHungReplayIsDumpedAndKilled(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tgt, err := startTarget(ctx, nil, self, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.stop()
	dir := t.TempDir()
	o := replayOpts{tcopy: self, target: tgt, tmp: t.TempDir(), env: []string{envRole + "=hang"},
		timeout: 500 * time.Millisecond, quitAfter: 500 * time.Millisecond, dumpDir: dir,
		logf: t.Logf, capture: "unused.pcap", expected: 1}
	wl := &workload{Name: "short", Metric: "sessions_per_second"}
	start := time.Now()
	res, err := runReplay(ctx, o, wl, "tun")
	if err == nil || res == nil || !strings.Contains(res.Error, "no exit within 500ms") {
		t.Fatalf("result %+v, error %v", res, err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the hung replay held the bench for %v", el)
	}
	dump, err := os.ReadFile(filepath.Join(dir, "bench-hang-short-tun.txt"))
	if err != nil || !strings.Contains(string(dump), "goroutine ") || !strings.Contains(string(dump), "SIGQUIT") {
		t.Errorf("goroutine dump: %v\n%.300s", err, dump)
	}
	// The target still serves the next replay.
	if _, err := tgt.stats(); err != nil {
		t.Error(err)
	}
}

func TestTargetReportsItsAddress(t *testing.T) {
	self, _ := os.Executable()
	tgt, err := startTarget(context.Background(), nil, self, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.stop()
	if !strings.HasPrefix(tgt.addr, "127.0.0.1:") || tgt.addr == "127.0.0.1:0" {
		t.Errorf("target address %q", tgt.addr)
	}
	if tgt.cpuSeconds() < 0 {
		t.Error("cpu")
	}
	tgt.stop()
	tgt.stop() // idempotent
	if _, err := tgt.stats(); err == nil {
		t.Error("stats of a stopped target")
	}
}
