package main

// Comparing two builds (issue 10): traffic captured against build A with
// tcpdump is replayed to a candidate C with --baseline B (B runs A's code)
// in the same run. The answers carry noise (random ids, timestamps, gzip
// bodies whose header holds the time): only what C really changed may be
// a regression, and the route C slowed down must show it.

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

const (
	compareHelperEnv = "TCOPY_COMPARE_HELPER"      // "server" or "client"
	compareArgsEnv   = "TCOPY_COMPARE_HELPER_ARGS" // JSON compareArgs
	compareSlow      = 250 * time.Millisecond      // what build C adds to /api/slow: far above what a loaded machine adds (--fail-slower 1.2 compares p99s of 24 requests)
	comparePortA     = 8090                        // build A (captured), B (baseline) and C (candidate)
	comparePortB     = 8091
	comparePortC     = 8092
	compareRounds    = 8 // the client's rounds over the routes
)

type compareArgs struct {
	Listen string `json:"listen"`
	Build  string `json:"build"` // A, B or C
	Addr   string `json:"addr"`  // client: the server
}

// TestCompareHelperProcess is not a test: it is the entry point of the
// helper processes of TestPrivilegedCompare... (the HTTP server in its
// three builds, and the client), which re-execute the test binary with
// compareHelperEnv set. Run directly, it skips.
func TestCompareHelperProcess(t *testing.T) {
	mode := os.Getenv(compareHelperEnv)
	if mode == "" {
		t.Skip("helper process of the TestPrivilegedCompare... tests; they run it")
	}
	var a compareArgs
	err := json.Unmarshal([]byte(os.Getenv(compareArgsEnv)), &a)
	if err == nil {
		switch mode {
		case "server":
			err = compareServerMain(a)
		case "client":
			err = compareClientMain(a)
		default:
			err = fmt.Errorf("unknown helper %q", mode)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func compareHelper(t *testing.T, ns *tuntest.Netns, mode string, a compareArgs) *realProc {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{compareHelperEnv + "=" + mode, compareArgsEnv + "=" + string(b)}
	return startProcEnv(t, ns, mode+" "+a.Build, env, os.Args[0], "-test.run=^TestCompareHelperProcess$", "-test.count=1")
}

// compareServerMain serves the three routes. Every answer carries a fresh
// request id (header and JSON) and a timestamp; /api/users/{n} is gzip
// compressed (its gzip header holds the time, so its bytes differ on
// every answer). Build C answers a different role inside the gzip body of
// /api/users/{n} and takes compareSlow longer on /api/slow.
func compareServerMain(a compareArgs) error {
	rid := func() string {
		b := make([]byte, 8)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	reply := func(w http.ResponseWriter, v map[string]any, zip bool) {
		id := rid()
		v["request_id"], v["ts"] = id, time.Now().UnixNano()
		body, _ := json.Marshal(v)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", id)
		if zip {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.ModTime = time.Now()
			zw.Write(body)
			zw.Close()
			body = b.Bytes()
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/items/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		reply(w, map[string]any{"id": n, "name": "item " + strconv.Itoa(n), "price": n * 3}, false)
	})
	mux.HandleFunc("GET /api/slow", func(w http.ResponseWriter, r *http.Request) {
		if a.Build == "C" {
			time.Sleep(compareSlow)
		}
		reply(w, map[string]any{"ok": true}, false)
	})
	mux.HandleFunc("GET /api/users/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		roles := []string{"reader", "writer"}
		if a.Build == "C" {
			roles[1] = "admin" // the change under test, inside a gzip body
		}
		reply(w, map[string]any{"user": n, "roles": roles}, true)
	})
	ln, err := net.Listen("tcp", a.Listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "serving build %s on %s\n", a.Build, a.Listen)
	return http.Serve(ln, mux)
}

// compareClientMain runs the workload: keep-alive connections, each round
// over the three routes.
func compareClientMain(a compareArgs) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	for round := range compareRounds {
		for _, p := range []string{fmt.Sprintf("/api/items/%d", round+1), "/api/slow", fmt.Sprintf("/api/users/%d", round+1)} {
			resp, err := c.Get("http://" + a.Addr + p)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: status %d", p, resp.StatusCode)
			}
		}
	}
	return nil
}

// compareReport is the part of the JSON report these tests check.
type compareReport struct {
	Summary struct {
		Requests struct {
			Against     string `json:"against"`
			Requests    int    `json:"requests"`
			Same        int    `json:"same"`
			Noise       int    `json:"noise"`
			Regressions int    `json:"regressions"`
			NotCompared int    `json:"not_compared"`
		} `json:"requests"`
	} `json:"summary"`
	Routes []struct {
		Route        string   `json:"route"`
		Requests     int      `json:"requests"`
		Regressions  int      `json:"regressions"`
		Noise        int      `json:"noise"`
		NoiseFields  []string `json:"noise_fields"`
		ResponseTime struct {
			Captured, Replayed, Baseline struct {
				Count int     `json:"count"`
				P50   float64 `json:"p50_us"`
				P99   float64 `json:"p99_us"`
			}
		} `json:"response_time"`
	} `json:"routes"`
	Sessions []struct {
		Baseline bool `json:"baseline"`
	} `json:"sessions"`
	Regressions []struct {
		Route       string `json:"route"`
		Differences []struct {
			Field     string `json:"field"`
			Reference string `json:"reference"`
			Replayed  string `json:"replayed"`
		} `json:"differences"`
	} `json:"regressions"`
}

// compareReplay runs the built tcopy-tun in the server namespace at speed
// 1 with args and its report; it fails the test unless the exit status is
// want. It returns the report and what tcopy-tun printed.
func compareReplay(t *testing.T, e *realEnv, want int, args ...string) (*compareReport, string) {
	t.Helper()
	file := filepath.Join(e.dir, fmt.Sprintf("compare-%d.json", time.Now().UnixNano()))
	args = append([]string{e.bin, "--speed", "1", "--progress", "never", "--report", file}, args...)
	p := startProc(t, e.srv, "tcopy-tun", args...)
	err := p.wait(t, realReplayTimeout)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tcopy-tun: %v\n%s", err, p.out.String())
	}
	if code != want {
		t.Fatalf("tcopy-tun %s: exit status %d, want %d\n%s", strings.Join(args[1:], " "), code, want, p.out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("report: %v\n%s", err, p.out.String())
	}
	var r compareReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report: %v", err)
	}
	return &r, p.out.String()
}

// TestPrivilegedCompareHTTP: capture against A, replay to C with
// --baseline B: only the route whose JSON field C changed (inside gzip
// bodies) regresses — the ids and timestamps are noise, and the gzip
// bytes that differ on every answer are compared decompressed — and the
// route C slowed down is told apart by its p50 in the same run.
func TestPrivilegedCompareHTTP(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	addr := func(port int) string { return fmt.Sprintf("%s:%d", realServerIP, port) }

	srvA := compareHelper(t, e.srv, "server", compareArgs{Listen: addr(comparePortA), Build: "A"})
	srvA.waitListening(t, e.srv, addr(comparePortA))
	cp := startCapture(t, e, shapeEthernet(), comparePortA)
	cl := compareHelper(t, e.cli, "client", compareArgs{Addr: addr(comparePortA), Build: "client"})
	if err := cl.wait(t, realClientTimeout); err != nil {
		t.Fatalf("client: %v\n%s", err, cl.out.String())
	}
	if n := cp.stop(t); n == 0 {
		t.Fatal("nothing captured")
	}
	srvB := compareHelper(t, e.srv, "server", compareArgs{Listen: addr(comparePortB), Build: "B"})
	srvC := compareHelper(t, e.srv, "server", compareArgs{Listen: addr(comparePortC), Build: "C"})
	srvB.waitListening(t, e.srv, addr(comparePortB))
	srvC.waitListening(t, e.srv, addr(comparePortC))

	// Exit 1: requests regressed. The quiet timeout is well above C's
	// delay: C's answers are not always as long as the captured ones (a
	// price with one more digit), and a target that has sent more than
	// the capture's bytes and then waits is otherwise taken to have
	// answered short after --quiet-timeout, and the next request goes
	// out while the slow answer is still to come (it would then wait
	// behind it on the connection, and count its wait).
	replayPcap := filepath.Join(e.dir, "replayed.pcapng")
	page := filepath.Join(e.dir, "compare.html")
	r, stderr := compareReplay(t, e, 1, "--pcap", cp.file, "--server", addr(comparePortA),
		"--target", addr(comparePortC), "--baseline", addr(comparePortB), "--quiet-timeout", "2s",
		"--write-pcap", replayPcap, "--html", page)
	t.Logf("tcopy-tun:\n%s", stderr)

	// The replay's own pcapng: tshark reads one conversation per replayed
	// session and target (candidate and baseline), both directions, each
	// named on its first packet.
	perTarget := map[string]int{}
	for _, c := range tsharkConns(t, replayPcap) {
		perTarget[c.server]++
		if c.out == 0 || c.in == 0 || !commentRE.MatchString(c.firstComment) {
			t.Errorf("replayed pcapng: conversation %s → %s: %d packets sent, %d received, comment %q; want both directions and a session comment",
				c.client, c.server, c.out, c.in, c.firstComment)
		}
	}
	sessions := 0
	for _, rw := range r.Sessions {
		if !rw.Baseline {
			sessions++
		}
	}
	for _, tgt := range []string{addr(comparePortC), addr(comparePortB)} {
		if perTarget[tgt] != sessions {
			t.Errorf("replayed pcapng: %d conversations with %s, want one per replayed session (%d); all: %v", perTarget[tgt], tgt, sessions, perTarget)
		}
	}

	q := r.Summary.Requests
	if q.Against != "baseline" || q.Requests != 3*compareRounds || q.Regressions != compareRounds || q.NotCompared != 0 {
		t.Errorf("requests %+v; want %d compared with the baseline, %d regressed", q, 3*compareRounds, compareRounds)
	}
	routes := map[string]int{}
	for i, rt := range r.Routes {
		routes[rt.Route] = i
	}
	items, okI := routes["GET /api/items/{n}"]
	slow, okS := routes["GET /api/slow"]
	users, okU := routes["GET /api/users/{n}"]
	if !okI || !okS || !okU || len(r.Routes) != 3 {
		t.Fatalf("routes %+v", r.Routes)
	}
	if rt := r.Routes[users]; rt.Requests != compareRounds || rt.Regressions != compareRounds {
		t.Errorf("route %s: %d requests, %d regressed; want %d, all", rt.Route, rt.Requests, rt.Regressions, compareRounds)
	}
	for _, i := range []int{slow, items} {
		if rt := r.Routes[i]; rt.Requests != compareRounds || rt.Regressions != 0 || rt.Noise != compareRounds {
			t.Errorf("route %s: %d requests, %d regressed, %d noise (fields %v); want %d, none, all noise", rt.Route, rt.Requests, rt.Regressions, rt.Noise, rt.NoiseFields, compareRounds)
		}
	}
	for _, rt := range r.Routes {
		if got := strings.Join(rt.NoiseFields, ","); !strings.Contains(got, "body $.request_id") || !strings.Contains(got, "body $.ts") || !strings.Contains(got, "header x-request-id") {
			t.Errorf("route %s: noise fields %s; want the request id (body and header) and the timestamp among them", rt.Route, got)
		}
	}
	// The slow route: C's p50 includes the sleep it added, B's does not.
	st := r.Routes[slow].ResponseTime
	slowUS := float64(compareSlow / time.Microsecond)
	if st.Replayed.Count != compareRounds || st.Baseline.Count != compareRounds || st.Captured.Count != compareRounds {
		t.Errorf("slow route counts: replayed %d, baseline %d, captured %d", st.Replayed.Count, st.Baseline.Count, st.Captured.Count)
	}
	if st.Replayed.P50 < slowUS || st.Baseline.P50 >= slowUS {
		t.Errorf("slow route p50: target %.0f µs, baseline %.0f µs; want the target's at least %.0f µs above... the baseline's below", st.Replayed.P50, st.Baseline.P50, slowUS)
	}
	for _, i := range []int{items, users} {
		if rt := r.Routes[i]; rt.ResponseTime.Replayed.P50 >= slowUS {
			t.Errorf("route %s: p50 %.0f µs, but the target slowed down only GET /api/slow", rt.Route, rt.ResponseTime.Replayed.P50)
		}
	}
	if len(r.Regressions) == 0 {
		t.Fatal("no regressed request in the report")
	}
	for _, g := range r.Regressions {
		if d := g.Differences; g.Route != "GET /api/users/{n}" || len(d) != 1 || d[0].Field != "body $.roles[1]" || d[0].Reference != `"writer"` || d[0].Replayed != `"admin"` {
			t.Errorf("regression %+v: want only body $.roles[1] of GET /api/users/{n}, \"writer\" → \"admin\"", g)
		}
	}
	if !strings.Contains(stderr, "requests regressed") {
		t.Errorf("stderr does not say that requests regressed:\n%s", stderr)
	}
	checkCompareHTML(t, page)

	// A rule for the changed field: no regression left, exit 0 ...
	rules := filepath.Join(e.dir, "ignore.yaml")
	if err := os.WriteFile(rules, []byte("routes:\n  - route: \"GET /api/users/*\"\n    json: [\"$.roles[*]\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--pcap", cp.file, "--server", addr(comparePortA), "--target", addr(comparePortC),
		"--baseline", addr(comparePortB), "--quiet-timeout", "2s", "--ignore", rules}
	r, stderr = compareReplay(t, e, 0, args...)
	if q := r.Summary.Requests; q.Requests != 3*compareRounds || q.Regressions != 0 {
		t.Errorf("with --ignore: requests %+v; want none regressed\n%s", q, stderr)
	}
	// ... unless the target may be at most 1.2 times slower at p99: the
	// slowed route is a third of the requests, so the target's p99 is at
	// least its delay, the baseline's far below.
	_, stderr = compareReplay(t, e, 1, append(args, "--fail-slower", "1.2")...)
	if !strings.Contains(stderr, "slower than --fail-slower 1.2 allows") {
		t.Errorf("--fail-slower: stderr does not say why the run failed:\n%s", stderr)
	}
}

// TestPrivilegedCompareRedis: redis-cli commands captured against redis A;
// replayed to a candidate redis C holding another value for one key the
// traffic only reads, with --baseline B (A's data): only GET of that key
// regresses.
func TestPrivilegedCompareRedis(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolRedisServer, toolRedisCli)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	const pA, pB, pC = 6390, 6391, 6392
	start := func(name string, port int, color string) {
		_, sock := startRedisServer(t, e.srv, name, port, []string{realServerIP})
		// Over the Unix socket: not captured, not replayed.
		e.srv.Run(t, "redis-cli", "-s", sock, "SET", "color", color)
	}
	start("redis A", pA, "blue")
	cp := startCapture(t, e, shapeEthernet(), pA)
	cmds := [][]string{{"GET", "color"}, {"SET", "k1", "v1"}, {"GET", "k1"}, {"INCR", "n"}, {"PING"}, {"HSET", "h", "f", "1"}, {"HGETALL", "h"}, {"GET", "missing"}}
	for _, c := range cmds {
		runClient(t, e.cli, append([]string{"redis-cli", "-h", realServerIP, "-p", strconv.Itoa(pA)}, c...)...)
	}
	if n := cp.stop(t); n == 0 {
		t.Fatal("nothing captured")
	}
	start("redis B", pB, "blue")
	start("redis C", pC, "red")

	addr := func(port int) string { return fmt.Sprintf("%s:%d", realServerIP, port) }
	r, stderr := compareReplay(t, e, 1, "--pcap", cp.file, "--server", addr(pA), "--target", addr(pC), "--baseline", addr(pB))
	t.Logf("tcopy-tun:\n%s", stderr)
	if q := r.Summary.Requests; q.Regressions != 1 || q.NotCompared != 0 || q.Requests < len(cmds) {
		t.Errorf("requests %+v; want at least %d compared, 1 regressed", q, len(cmds))
	}
	if len(r.Regressions) != 1 {
		t.Fatalf("regressions %+v", r.Regressions)
	}
	g := r.Regressions[0]
	if g.Route != "GET" || len(g.Differences) != 1 || g.Differences[0].Reference != `"blue"` || g.Differences[0].Replayed != `"red"` {
		t.Errorf("regression %+v: want GET answering \"blue\" on the baseline and \"red\" on the target", g)
	}
	for _, rt := range r.Routes {
		if rt.Route != "GET" && rt.Regressions != 0 {
			t.Errorf("route %s regressed", rt.Route)
		}
	}
}
