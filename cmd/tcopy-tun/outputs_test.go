package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// Outputs that cannot be written are refused before anything else happens:
// one line, exit 2, the capture never opened, no TUN set up (the --via tun
// cases run without privileges and still get exit 2, not 4), nothing sent
// to the target. A run that fails before writing leaves an existing file as
// it was and creates none.
func TestOutputsOpenedFirst(t *testing.T) {
	capture := e2eCapture(t, []e2eSession{
		{Client: "10.0.0.1:40000", Server: "10.1.0.1:9000", Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/a"}}},
	})
	for _, tc := range []struct {
		name  string
		args  []string // DIR is the test's directory
		code  int
		msg   string // the one line on stderr
		files map[string]string
	}{
		{
			name: "report in a missing directory", args: []string{"--via", "socket", "--report", "/nonexistent/x.json"},
			code: exitUsage, msg: "tcopy-tun: --report: open /nonexistent/x.json: no such file or directory",
		},
		{
			name: "pcap in a missing directory", args: []string{"--via", "tun", "--write-pcap", "/nonexistent/x.pcapng"},
			code: exitUsage, msg: "tcopy-tun: --write-pcap: open /nonexistent/x.pcapng: no such file or directory",
		},
		{
			name: "report is a directory", args: []string{"--via", "socket", "--report", "DIR"},
			code: exitUsage, msg: "tcopy-tun: --report: open DIR: is a directory",
		},
		{
			name: "pcap and report the same file", args: []string{"--via", "tun", "--report", "DIR/out", "--write-pcap", "DIR/./out"},
			code: exitUsage, msg: `tcopy-tun: --report and --write-pcap name the same file "DIR/./out"`,
		},
		{
			name: "pcap with kernel sockets", args: []string{"--via", "socket", "--write-pcap", "DIR/x.pcapng"},
			code: exitUsage, msg: "tcopy-tun: --write-pcap needs --via tun: with --via socket the packets are the kernel's (capture them with tcpdump on the target's interface)",
		},
		{
			name: "snap length without a pcap", args: []string{"--via", "tun", "--write-pcap-snaplen", "128"},
			code: exitUsage, msg: "tcopy-tun: --write-pcap-snaplen needs --write-pcap FILE",
		},
		{
			name: "snap length too short for the headers", args: []string{"--via", "tun", "--write-pcap", "DIR/x.pcapng", "--write-pcap-snaplen", "40"},
			code: exitUsage, msg: "tcopy-tun: --write-pcap-snaplen 40: want 0 (whole packets) or at least 100 (the IP and TCP headers)",
		},
		{
			name: "both on standard output", args: []string{"--via", "tun", "--report", "-", "--write-pcap", "-"},
			code: exitUsage, msg: "tcopy-tun: --write-pcap - and --report - cannot both use standard output",
		},
		{
			name: "html in a missing directory", args: []string{"--via", "socket", "--html", "/nonexistent/x.html"},
			code: exitUsage, msg: "tcopy-tun: --html: open /nonexistent/x.html: no such file or directory",
		},
		{
			name: "html and report the same file", args: []string{"--via", "socket", "--report", "DIR/out", "--html", "DIR/out"},
			code: exitUsage, msg: `tcopy-tun: --report and --html name the same file "DIR/out"`,
		},
		{
			name: "html and report on standard output", args: []string{"--via", "socket", "--report", "-", "--html", "-"},
			code: exitUsage, msg: "tcopy-tun: --html - and --report - cannot both use standard output",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startInProcessServer(t)
			dir := t.TempDir()
			file := filepath.Join(dir, "capture.pcap")
			if err := os.WriteFile(file, capture, 0o644); err != nil {
				t.Fatal(err)
			}
			for name, content := range tc.files {
				if content != "" {
					os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
				}
			}
			opened := countOpens(t, file)
			args := []string{"--pcap", file, "--target", srv.ln.Addr().String(), "--speed", "max", "--progress", "never"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "DIR", dir))
			}
			var stdout, stderr bytes.Buffer
			code := run(env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}, args)
			t.Logf("exit %d\n%s", code, stderr.String())
			msg := strings.ReplaceAll(tc.msg, "DIR", dir)
			if code != tc.code || !strings.HasPrefix(stderr.String(), msg+"\n") {
				t.Errorf("exit %d, stderr\n%s\nwant exit %d and\n%s", code, stderr.String(), tc.code, msg)
			}
			if n := strings.Count(stderr.String(), "\n"); n > 2 || n == 2 && !strings.Contains(stderr.String(), "\nhint: ") {
				t.Errorf("stderr has %d lines, want the error and at most a hint", n)
			}
			if n := opened(); n != 0 {
				t.Errorf("the capture was opened %d times before the outputs were refused", n)
			}
			if n := srv.requests(); n != 0 {
				t.Errorf("%d requests reached the target", n)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
			// Only the capture and the files the test made are there.
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if want, ok := tc.files[e.Name()]; e.Name() != "capture.pcap" && !ok {
					t.Errorf("the failed run left %s behind", e.Name())
				} else if ok && want != "" {
					if b, _ := os.ReadFile(filepath.Join(dir, e.Name())); string(b) != want {
						t.Errorf("%s: %q, want it unchanged (%q)", e.Name(), b, want)
					}
				}
			}
		})
	}
}

// A run that fails after the outputs were opened (the capture cannot be
// read) writes none of them: an existing report is kept as it was, and a
// new one is not left behind empty.
func TestOutputsKeptOnFailure(t *testing.T) {
	srv := startInProcessServer(t)
	dir := t.TempDir()
	old := filepath.Join(dir, "old.json")
	if err := os.WriteFile(old, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, rep := range []string{old, filepath.Join(dir, "new.json")} {
		var stdout, stderr bytes.Buffer
		args := []string{"--pcap", filepath.Join(dir, "missing.pcap"), "--target", srv.ln.Addr().String(), "--via", "socket", "--report", rep}
		code := run(env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}, args)
		if code != exitInput || !strings.Contains(stderr.String(), "missing.pcap") {
			t.Errorf("exit %d, stderr %q; want %d and the capture named", code, stderr.String(), exitInput)
		}
	}
	if b, err := os.ReadFile(old); err != nil || string(b) != "old" {
		t.Errorf("the existing report: %q, %v; want it unchanged", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.json")); !os.IsNotExist(err) {
		t.Errorf("a failed run left its new report behind: %v", err)
	}
}

// A run that succeeds writes the report over an existing longer file: no
// tail of the old content remains.
func TestOutputsTruncatedWhenWritten(t *testing.T) {
	srv := startInProcessServer(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "capture.pcap")
	os.WriteFile(file, e2eCapture(t, []e2eSession{
		{Client: "10.0.0.1:40000", Server: "10.1.0.1:9000", Requests: []replaytest.DemoRequest{{Method: "GET", Path: "/a"}}},
	}), 0o644)
	rep := filepath.Join(dir, "report.json")
	os.WriteFile(rep, bytes.Repeat([]byte("stale "), 100<<10), 0o644)
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr},
		[]string{"--pcap", file, "--target", srv.ln.Addr().String(), "--via", "socket", "--speed", "max", "--progress", "never", "--report", rep})
	if code != exitOK {
		t.Fatalf("exit %d after %v\n%s", code, time.Since(start), stderr.String())
	}
	r := readReport(t, rep) // fails on trailing garbage
	if len(r.Sessions) != 1 {
		t.Errorf("report has %d sessions, want 1", len(r.Sessions))
	}
}
