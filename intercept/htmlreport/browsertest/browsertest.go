package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envEnforce is tuntest.EnvPrivileged (not imported: this package needs
// nothing of the TUN's).
const envEnforce = "TCOPY_TUN_PRIVILEGED_TESTS"

// timeout bounds one Chromium run: a page of this project loads in well
// under a second; the rest is the browser's start on a loaded machine.
const timeout = 90 * time.Second

// Chromium returns the path of the chromium binary, skipping the test with
// the package to install when there is none (failing instead when
// TCOPY_TUN_PRIVILEGED_TESTS=1).
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found in PATH: install chromium (Debian: apt-get install chromium; make deps does)"
	if os.Getenv(envEnforce) == "1" {
		t.Fatalf("%s; %s=1 makes this a failure", msg, envEnforce)
	}
	t.Skip(msg)
	return ""
}

// run runs headless Chromium on the local file page with the extra args
// and returns its standard output.
func run(t testing.TB, page string, args ...string) []byte {
	t.Helper()
	bin := Chromium(t)
	file, frag, _ := strings.Cut(page, "#")
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "file", Path: abs, Fragment: frag}
	profile := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + profile,
	}, args...)
	full = append(full, u.String())
	cmd := exec.CommandContext(ctx, bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A home of its own: Chromium writes caches and crash reports there.
	cmd.Env = append(os.Environ(), "HOME="+profile)
	// Chromium starts helper processes (zygote, renderer, GPU): they run
	// in a process group of their own, killed whole at the deadline and
	// once the browser has exited, so that none outlives the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("chromium %s: %v (deadline %v)\n%s", strings.Join(args, " "), err, timeout, tail(stderr.String()))
	}
	return stdout.Bytes()
}

// DumpDOM loads page (a local file) and returns the DOM serialised after
// its scripts ran.
func DumpDOM(t testing.TB, page string) string {
	t.Helper()
	out := run(t, page, "--dump-dom")
	if !bytes.Contains(out, []byte("<html")) {
		t.Fatalf("chromium --dump-dom %s: no document in its output (%d bytes)", page, len(out))
	}
	return string(out)
}

// Screenshot loads page (a local file, fragment allowed after '#') in a
// window of width × height pixels and writes a PNG of it to png.
func Screenshot(t testing.TB, page, png string, width, height int) {
	t.Helper()
	abs, err := filepath.Abs(png)
	if err != nil {
		t.Fatal(err)
	}
	run(t, page, fmt.Sprintf("--window-size=%d,%d", width, height), "--screenshot="+abs)
	b, err := os.ReadFile(abs)
	if err != nil {
		t.Fatalf("chromium --screenshot: %v", err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("chromium --screenshot wrote %d bytes that are not a PNG", len(b))
	}
}

// tail is the end of a long stderr, where the reason usually is.
func tail(s string) string {
	const n = 4000
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
