package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/intercept/htmlreport/browsertest"
)

// demoCandidate is a changed build of the demo server: /api/items/{n}
// answers more than the capture did, and /search answers demoSlow later.
func demoCandidate(method, target, body string) (string, time.Duration) {
	switch {
	case strings.HasPrefix(target, "/api/items/"):
		return strings.TrimSuffix(body, "\n") + " (out of stock)\n", 0
	case strings.HasPrefix(target, "/search"):
		return body, demoSlow
	}
	return body, 0
}

const demoSlow = 40 * time.Millisecond

// TestHTMLReportOfReplay replays the bundled demo capture through kernel
// sockets (no privileges) to a changed build of the demo server, with the
// demo server itself as --baseline, and writes --html and --report. The
// page is checked as written, then in headless Chromium: what it shows
// once its script ran (the verdict, the routes and their regressions, the
// plots, the answers side by side). TCOPY_TUN_HTML_SCREENSHOT=FILE.png
// also writes a screenshot (make screenshot: docs/report.png).
func TestHTMLReportOfReplay(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	base := newDemoServer(listen())
	cand := newTweakedDemoServer(listen(), demoCandidate)
	defer base.close()
	defer cand.close()

	dir := t.TempDir()
	page, jsonFile := filepath.Join(dir, "report.html"), filepath.Join(dir, "report.json")
	code, _, stderr := runCmd(t, nil, "--pcap", filepath.Join("..", "..", demoCapture), "--server", "10.1.0.1:8080",
		"--target", cand.ln.Addr().String(), "--baseline", base.ln.Addr().String(), "--via", "socket",
		"--speed", "max", "--progress", "never", "--report", jsonFile, "--html", page)
	t.Logf("tcopy-tun:\n%s", stderr)
	if code != exitFailure || !strings.Contains(stderr, "8 requests regressed") {
		t.Fatalf("exit %d; want %d and 8 requests regressed (GET /api/items/1..7, 7 twice)", code, exitFailure)
	}
	var rep struct {
		Summary struct {
			Requests struct{ Requests, Regressions int64 } `json:"requests"`
		} `json:"summary"`
	}
	b, err := os.ReadFile(jsonFile)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	// The page says what the JSON report says.
	verdict := regexp.MustCompile(`(\d+) of (\d+) requests regressed`).FindSubmatch(html)
	if verdict == nil || string(verdict[1]) != "8" || string(verdict[2]) != itoa64(rep.Summary.Requests.Requests) {
		t.Fatalf("page verdict %q; want 8 of the report's %d requests", verdict, rep.Summary.Requests.Requests)
	}
	for _, bad := range []string{"http://", "https://", "src=", "@import", "url("} {
		if bytes.Contains(html, []byte(bad)) {
			t.Errorf("the page refers to something outside itself: %q", bad)
		}
	}

	t.Run("chromium", func(t *testing.T) {
		dom := browsertest.DumpDOM(t, page)
		for _, want := range []string{
			"8 of " + itoa64(rep.Summary.Requests.Requests) + " requests regressed",
			`<tr class="route regressed" data-route="GET /api/items/{n}">`,
			`data-route="GET /search"`, `data-route="POST /api/login"`,
			`<td class="bad"><a href="#reg-0">8</a></td>`,
			`<polyline class="cdf target"`, `<polyline class="cdf baseline"`, `<polyline class="cdf captured"`,
			`<div class="answer baseline">`, `<div class="answer target">`, `<div class="answer captured">`,
			`<mark class="key"> (out of stock)</mark>`,
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("the DOM lacks %q", want)
			}
		}
		// The slowed route is the slowest against the baseline: first after
		// the regressed one, its p50 ratio marked.
		routes := regexp.MustCompile(`data-route="([^"]+)"`).FindAllStringSubmatch(dom, 3)
		if len(routes) < 2 || routes[0][1] != "GET /api/items/{n}" || routes[1][1] != "GET /search" {
			t.Errorf("routes in order %q; want GET /api/items/{n}, then GET /search", routes)
		}
		if !strings.Contains(dom, `data-plot="route-plot-0">plot</button>`) {
			t.Error("the route plot buttons are still hidden: the page's script did not run")
		}
		if shot := os.Getenv("TCOPY_TUN_HTML_SCREENSHOT"); shot != "" {
			browsertest.Screenshot(t, page, shot, 1440, 1700)
			t.Logf("wrote %s", shot)
		}
	})
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// TestHTMLWrittenWhenInterrupted: the page is written when the run is
// interrupted (SIGINT to the built binary mid-replay), as the JSON report
// is, and says what was compared until then.
func TestHTMLWrittenWhenInterrupted(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newDemoServer(ln)
	defer srv.close()
	bin := buildTcopyTun(t)
	page := filepath.Join(t.TempDir(), "report.html")
	// At speed 0.05 the 2.3 s capture takes 45 s: the signal comes long
	// before its end.
	cmd := exec.Command(bin, "--pcap", filepath.Join("..", "..", demoCapture), "--server", "10.1.0.1:8080",
		"--target", ln.Addr().String(), "--via", "socket", "--speed", "0.05", "--progress", "never", "--html", page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, reqs, _ := srv.stats(); reqs > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("no request reached the server in 30 s\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Created before the first packet: it is there while the replay runs.
	if _, err := os.Stat(page); err != nil {
		t.Errorf("--html file not created while the replay runs: %v", err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	var code int
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("tcopy-tun still running 30 s after SIGINT\n%s", stderr.String())
	}
	t.Logf("tcopy-tun:\n%s", stderr.String())
	if code != exitSignaled {
		t.Errorf("exit %d, want %d (interrupted)", code, exitSignaled)
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(html, []byte("<title>tcopy-tun report</title>")) || !bytes.Contains(html, []byte("sessions replayed")) || !bytes.Contains(html, []byte("</html>")) {
		t.Errorf("the page written after the interrupt is not whole (%d bytes)", len(html))
	}
	if !bytes.Contains(html, []byte("canceled")) {
		t.Error("the page does not show the canceled sessions in its summary")
	}
}

// checkCompareHTML checks the --html page of TestPrivilegedCompareHTTP in
// headless Chromium: the route whose gzip bodies C changed regressed in
// every round, the slowed one comes next, the three sides are plotted,
// and the changed role is marked in both answers (decompressed).
func checkCompareHTML(t *testing.T, page string) {
	t.Helper()
	dom := browsertest.DumpDOM(t, page)
	n := strconv.Itoa(compareRounds)
	for _, want := range []string{
		n + " of " + strconv.Itoa(3*compareRounds) + " requests regressed",
		`<tr class="route regressed" data-route="GET /api/users/{n}">`,
		`<td class="bad"><a href="#reg-0">` + n + `</a></td>`,
		`<polyline class="cdf target"`, `<polyline class="cdf baseline"`, `<polyline class="cdf captured"`,
		`<div class="answer baseline">`, `<div class="answer target">`, `<div class="answer captured">`,
		"body $.roles[1]",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("--html page in Chromium lacks %q", want)
		}
	}
	routes := regexp.MustCompile(`<tr class="route[^"]*" data-route="([^"]+)"`).FindAllStringSubmatch(dom, -1)
	if len(routes) != 3 || routes[1][1] != "GET /api/slow" {
		t.Errorf("routes in order %q; want GET /api/users/{n}, then the slowed GET /api/slow", routes)
	}
	// Each regressed request shown marks the role on both sides: the
	// baseline's "writer", the target's "admin".
	regs := strings.Count(dom, `<article class="reg"`)
	if w, a := strings.Count(dom, `<mark class="key">writer</mark>`), strings.Count(dom, `<mark class="key">admin</mark>`); regs == 0 || w != regs || a != regs {
		t.Errorf("%d regressed requests shown, %d marked \"writer\" and %d \"admin\"; want each marked once on each side", regs, w, a)
	}
}
