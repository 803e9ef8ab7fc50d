package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// TestPrivilegedRealHTTPD: the project's own HTTP server (httpdMain) driven
// by its Go client (httpClientMain): keep-alive and one-shot connections,
// concurrent uploads up to 150 KB, downloads up to 400 KB, chunked uploads
// and a pipelined batch. The replayed server must count the same requests
// per method, path, body length and body hash, and the same number of
// connections per request count. Every answer carries a Date header, so
// every session's match must be "volatile", not "identical" and not failed.
func TestPrivilegedRealHTTPD(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark)
	bin := buildTcopyTun(t)
	runRealScenario(t, bin, realScenario{server: httpdServer{}, shape: shapeEthernet(), drive: httpdClient(realServerIP)})
}

// The helper processes: the test binary re-executed in a namespace runs
// TestRealserverHelperProcess, which becomes the server or the client named
// by realHelperEnv, configured by realHelperArgsEnv (JSON helperArgs).
const (
	realHelperEnv     = "TCOPY_REALSERVER_HELPER"
	realHelperArgsEnv = "TCOPY_REALSERVER_HELPER_ARGS"
	httpdPort         = 8080
)

type helperArgs struct {
	Listen string   `json:"listen,omitempty"` // httpd: address to listen on
	State  string   `json:"state,omitempty"`  // httpd: file the state is written to on SIGTERM
	Addrs  []string `json:"addrs,omitempty"`  // client: servers to run the workload against, in turn
	Round  int      `json:"round,omitempty"`  // client: number of the first workload (names its paths)
	// tlsd, tlsclient (realserver_tls_test.go): certificate and key
	// files, the client's key log.
	Cert   string `json:"cert,omitempty"`
	Key    string `json:"key,omitempty"`
	KeyLog string `json:"keylog,omitempty"`
}

// TestRealserverHelperProcess is not a test: it is the entry point of the
// helper processes of the TestPrivilegedReal... tests (the project's HTTP
// server and its Go client), which re-execute the test binary with
// realHelperEnv set. Run directly, it skips.
func TestRealserverHelperProcess(t *testing.T) {
	mode := os.Getenv(realHelperEnv)
	if mode == "" {
		t.Skip("helper process of the TestPrivilegedReal... tests; they run it")
	}
	var a helperArgs
	err := json.Unmarshal([]byte(os.Getenv(realHelperArgsEnv)), &a)
	if err == nil {
		switch mode {
		case "httpd":
			err = httpdMain(a)
		case "client":
			err = httpClientMain(a)
		case "tlsd":
			err = tlsdMain(a)
		case "tlsclient":
			err = tlsClientMain(a)
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

// helperArgv returns the arguments and environment that run helper mode
// with a in the test binary.
func helperArgv(t *testing.T, mode string, a helperArgs) (argv []string, env []string) {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return []string{os.Args[0], "-test.run=^TestRealserverHelperProcess$", "-test.count=1"},
		[]string{realHelperEnv + "=" + mode, realHelperArgsEnv + "=" + string(b)}
}

// ---- the server ----

// httpdServer is the project's HTTP server as a realServer.
type httpdServer struct{}

func (httpdServer) name() string { return "httpd" }
func (httpdServer) port() uint16 { return httpdPort }

type httpdInstance struct {
	proc      *realProc
	stateFile string
}

func (httpdServer) start(t *testing.T, e *realEnv, tag string) realInstance {
	t.Helper()
	st := filepath.Join(e.dir, "httpd-"+tag+".state")
	// All addresses of the namespace: the multi-interface capture also
	// drives it over loopback.
	argv, env := helperArgv(t, "httpd", helperArgs{Listen: fmt.Sprintf(":%d", httpdPort), State: st})
	p := startProcEnv(t, e.srv, "httpd "+tag, env, argv...)
	p.waitListening(t, e.srv, fmt.Sprintf("%s:%d", realServerIP, httpdPort))
	return &httpdInstance{proc: p, stateFile: st}
}

// state stops the server with SIGTERM, on which it finishes its requests
// and writes what it counted.
func (h *httpdInstance) state(t *testing.T) []string {
	t.Helper()
	if err := h.proc.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("httpd: %v\n%s", err, h.proc.out.String())
	}
	return sortedLines(readFile(t, h.stateFile))
}

func (httpdServer) checkMatch(s *session.Session, match string) error {
	return checkHTTPMatch(s, match)
}

// checkHTTPMatch: every captured HTTP answer of the suite carries a Date
// header, and the replay runs at least two seconds after the capture
// (runRealScenario), so the answer differs from the capture in Date only:
// the report must say "volatile".
func checkHTTPMatch(s *session.Session, match string) error {
	if s.ClientBytes == 0 && s.ServerBytes == 0 {
		// A connection that carried nothing (ab -k opens one more than
		// it ends up using): nothing to differ.
		if match != "identical" {
			return fmt.Errorf("match %s for a session without data, want identical", match)
		}
		return nil
	}
	if !bytes.Contains(s.ServerData, []byte("\r\nDate: ")) {
		return fmt.Errorf("captured answer without a Date header: %.60q", s.ServerData)
	}
	if match != "volatile" {
		return fmt.Errorf("match %s, want volatile (the answers differ in their Date headers only)", match)
	}
	return nil
}

// httpdMain is the project's HTTP server: it counts requests per method,
// path, body length and body hash, and connections per number of requests
// they carried; it answers deterministically (GET /blob/N: N bytes of a
// fixed pattern; anything else: one line naming the request and the hash of
// its body). On SIGTERM it shuts down gracefully and writes the counts to
// a.State, one line each.
func httpdMain(a helperArgs) error {
	ln, err := net.Listen("tcp4", a.Listen)
	if err != nil {
		return err
	}
	type connKey struct{}
	var (
		mu       sync.Mutex
		requests = map[string]int{}
		perConn  = map[*int]bool{}
		bodyIn   int64
	)
	srv := &http.Server{
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			n := new(int)
			mu.Lock()
			perConn[n] = true
			mu.Unlock()
			return context.WithValue(ctx, connKey{}, n)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			sum := fmt.Sprintf("%x", h.Sum(nil)[:8])
			mu.Lock()
			requests[fmt.Sprintf("req %s %s len=%d sha=%s", r.Method, r.URL.RequestURI(), n, sum)]++
			*r.Context().Value(connKey{}).(*int)++
			bodyIn += n
			mu.Unlock()
			body := httpdAnswer(r.Method, r.URL.RequestURI(), n, sum)
			if size, ok := strings.CutPrefix(r.URL.Path, "/blob/"); ok {
				if v, err := strconv.Atoi(size); err == nil && v >= 0 && v <= 1<<22 {
					body = httpdBlob(v)
				}
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body)
		}),
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-sig:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	conns := map[string]int{}
	for n := range perConn {
		// Connections without a request are the start-up probes: not
		// part of the state.
		if *n > 0 {
			conns[fmt.Sprintf("connections with %d requests", *n)]++
		}
	}
	lines := append(countLines(requests), countLines(conns)...)
	lines = append(lines, fmt.Sprintf("request body bytes %d", bodyIn))
	return os.WriteFile(a.State, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// httpdAnswer is the answer to any request but /blob/N.
func httpdAnswer(method, uri string, n int64, sum string) []byte {
	return []byte(fmt.Sprintf("%s %s len=%d sha=%s\n", method, uri, n, sum))
}

// httpdBlob returns n bytes of a fixed pattern that does not repeat within
// 64 KiB, so a misplaced segment would show.
func httpdBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ byte(i>>8) ^ byte(i>>16)*31
	}
	return b
}

// httpdBody returns the deterministic request body number i of size n.
func httpdBody(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = 'a' + byte((i*7+j*13+j>>9)%26)
	}
	return b
}

// ---- the client ----

// httpdClient returns a drive function running the Go client in the
// client namespace against addr:httpdPort.
func httpdClient(addr string) func(t *testing.T, e *realEnv) {
	return func(t *testing.T, e *realEnv) {
		t.Helper()
		p := startHTTPClient(t, e.cli, 0, addr)
		if err := p.wait(t, realClientTimeout); err != nil {
			t.Fatalf("go http client: %v\n%s", err, p.out.String())
		}
	}
}

// startHTTPClient starts the Go client helper in ns; it runs the workload
// against each of addrs in turn, numbering the workloads from round.
func startHTTPClient(t *testing.T, ns *tuntest.Netns, round int, addrs ...string) *realProc {
	t.Helper()
	var targets []string
	for _, a := range addrs {
		targets = append(targets, net.JoinHostPort(a, strconv.Itoa(httpdPort)))
	}
	argv, env := helperArgv(t, "client", helperArgs{Addrs: targets, Round: round})
	return startProcEnv(t, ns, "go http client", env, argv...)
}

// httpClientMain runs the client workload against each address in turn and
// checks every answer. Contents are deterministic; how requests spread over
// the pooled connections is not, which is what the capture records.
func httpClientMain(a helperArgs) error {
	for i, addr := range a.Addrs {
		if err := httpWorkload(addr, a.Round+i); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
	}
	return nil
}

func httpWorkload(addr string, round int) error {
	base := "http://" + addr
	client := func(conns int, keepAlive bool) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxConnsPerHost: conns, MaxIdleConnsPerHost: conns, DisableKeepAlives: !keepAlive,
			DisableCompression: true,
		}}
	}
	do := func(c *http.Client, method, path string, body io.Reader, want []byte) error {
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if resp.StatusCode != 200 || !bytes.Equal(got, want) {
			return fmt.Errorf("%s %s: %s, %d bytes %.40q; want 200 and %.40q", method, path, resp.Status, len(got), got, want)
		}
		return nil
	}
	answer := func(method, path string, body []byte) []byte {
		sum := sha256.Sum256(body)
		return httpdAnswer(method, path, int64(len(body)), fmt.Sprintf("%x", sum[:8]))
	}

	// Think time between the phases and inside the keep-alive one: the
	// capture then lasts about a second, so --speed 1 has timing to keep
	// (idle keep-alive connections included) and --speed max something to
	// skip.
	think := func() { time.Sleep(120 * time.Millisecond) }

	// Keep-alive: sequential GETs on one connection, and two downloads.
	ka := client(1, true)
	for i := 0; i < 12; i++ {
		if i%4 == 3 {
			think()
		}
		p := fmt.Sprintf("/kv/%d/%d?x=%d", round, i, i*i)
		if err := do(ka, "GET", p, nil, answer("GET", p, nil)); err != nil {
			return err
		}
	}
	for _, n := range []int{100_000, 400_000} {
		if err := do(ka, "GET", fmt.Sprintf("/blob/%d", n), nil, httpdBlob(n)); err != nil {
			return err
		}
	}
	ka.CloseIdleConnections()

	think()
	// Concurrent uploads over a pool of three connections.
	up := client(3, true)
	sizes := []int{1, 1000, 30_000, 150_000}
	errs := make(chan error, 3*len(sizes))
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, n := range sizes {
				body := httpdBody(w*10+i, n)
				p := fmt.Sprintf("/upload/%d/%d-%d", round, w, i)
				errs <- do(up, "POST", p, bytes.NewReader(body), answer("POST", p, body))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	up.CloseIdleConnections()

	think()
	// One connection per request (Connection: close).
	once := client(1, false)
	for i := 0; i < 8; i++ {
		p := fmt.Sprintf("/once/%d/%d", round, i)
		if err := do(once, "GET", p, nil, answer("GET", p, nil)); err != nil {
			return err
		}
	}

	think()
	// Chunked uploads: a body of unknown length.
	for i := 0; i < 2; i++ {
		body := httpdBody(100+i, 20_000+i)
		p := fmt.Sprintf("/chunked/%d/%d", round, i)
		r := io.MultiReader(bytes.NewReader(body[:7000]), bytes.NewReader(body[7000:]))
		if err := do(ka, "PUT", p, r, answer("PUT", p, body)); err != nil {
			return err
		}
	}
	ka.CloseIdleConnections()

	think()
	// A pipelined batch: six requests in one write, the last closing.
	return httpPipelined(addr, round, 6, answer)
}

// httpPipelined writes n requests at once on one connection, then reads the
// n answers in order.
func httpPipelined(addr string, round, n int, answer func(method, path string, body []byte) []byte) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var batch bytes.Buffer
	var paths []string
	for i := 0; i < n; i++ {
		p := fmt.Sprintf("/pipe/%d/%d", round, i)
		paths = append(paths, p)
		conn := ""
		if i == n-1 {
			conn = "Connection: close\r\n"
		}
		fmt.Fprintf(&batch, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tcopy-tun-test\r\n%s\r\n", p, addr, conn)
	}
	if _, err := c.Write(batch.Bytes()); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	for _, p := range paths {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("pipelined %s: %w", p, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, answer("GET", p, nil)) {
			return fmt.Errorf("pipelined %s: %s %q %v", p, resp.Status, got, err)
		}
	}
	return nil
}
