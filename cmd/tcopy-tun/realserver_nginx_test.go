package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

// TestPrivilegedRealNginx: nginx serving static files, driven by ab (one
// connection per request, HTTP/1.0), ab -k (keep-alive: ab sends a few more
// requests than -n on its connections, which the capture records and the
// replay must repeat), and curl (several URLs on one connection, a 404, a
// HEAD, a POST answered 405). The replayed nginx must log the same requests
// (method, URI, status, request length) and the same requests on each
// connection in the same order ($connection_requests); every answer differs
// from the capture in its Date header only, so every session must be
// "volatile".
func TestPrivilegedRealNginx(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark, toolNginx, toolAb, toolCurl)
	bin := buildTcopyTun(t)
	runRealScenario(t, bin, realScenario{server: nginxServer{}, shape: shapeEthernet(), drive: nginxClients})
}

const nginxPort = 8080

// nginxClients drives nginx with ab and curl from the client namespace.
func nginxClients(t *testing.T, e *realEnv) {
	t.Helper()
	base := fmt.Sprintf("http://%s:%d", realServerIP, nginxPort)
	for _, args := range [][]string{
		{"ab", "-n", "40", "-c", "4", base + "/f1.txt"},
		{"ab", "-k", "-n", "40", "-c", "4", base + "/f2.txt"},
	} {
		time.Sleep(200 * time.Millisecond) // think time: see httpWorkload
		out := runClient(t, e.cli, args...)
		if !strings.Contains(out, "Complete requests:      40") || !strings.Contains(out, "Failed requests:        0") {
			t.Fatalf("%s: not 40 requests without failure:\n%s", strings.Join(args, " "), out)
		}
	}
	time.Sleep(200 * time.Millisecond)
	// curl reuses one connection for the URLs of one invocation.
	codes := runClient(t, e.cli, "curl", "-sS", "-w", "%{http_code}\n",
		"-o", "/dev/null", base+"/index.html", "-o", "/dev/null", base+"/big.bin",
		"-o", "/dev/null", base+"/missing", "-o", "/dev/null", base+"/f1.txt?x=1")
	if got := strings.Fields(codes); strings.Join(got, " ") != "200 200 404 200" {
		t.Fatalf("curl: status codes %v, want 200 200 404 200", got)
	}
	if got := strings.TrimSpace(runClient(t, e.cli, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-I", base+"/f2.txt")); got != "200" {
		t.Fatalf("curl -I: status %s, want 200", got)
	}
	if got := strings.TrimSpace(runClient(t, e.cli, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-d", "a=1&b=2", base+"/index.html")); got != "405" {
		t.Fatalf("curl POST: status %s, want 405", got)
	}
}

// nginxServer runs nginx in the foreground as a single process (no master:
// the PID that is stopped is the one that serves).
type nginxServer struct{}

func (nginxServer) name() string { return "nginx" }
func (nginxServer) port() uint16 { return nginxPort }

type nginxInstance struct {
	proc *realProc
	log  string
}

// nginxLogFormat logs what identifies a request and, with $connection and
// $connection_requests, which connection carried it in which place.
const nginxLogFormat = `$connection $connection_requests $request_method "$request_uri" $status $request_length`

func (nginxServer) start(t *testing.T, e *realEnv, tag string) realInstance {
	t.Helper()
	www := filepath.Join(e.dir, "www")
	if _, err := os.Stat(www); err != nil {
		// Created once per test: every instance serves the same files with
		// the same mtimes, so ETag and Last-Modified agree.
		files := map[string][]byte{
			"index.html": []byte("<html><body>tcopy-tun</body></html>\n"),
			"f1.txt":     httpdBody(1, 3000),
			"f2.txt":     httpdBody(2, 10_000),
			"big.bin":    httpdBlob(300_000),
		}
		if err := os.MkdirAll(www, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(www, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := filepath.Join(e.dir, "nginx-"+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "access.log")
	cf := writeNginxConf(t, dir, nginxLogFormat, fmt.Sprintf(`
		listen %[1]s:%[2]d;
		listen 127.0.0.1:%[2]d;
		root %[3]s;
		access_log %[4]s suite;`, realServerIP, nginxPort, www, log))
	p := startProc(t, e.srv, "nginx "+tag, "nginx", "-e", "stderr", "-p", dir, "-c", cf)
	p.waitListening(t, e.srv, fmt.Sprintf("%s:%d", realServerIP, nginxPort))
	return &nginxInstance{proc: p, log: log}
}

// writeNginxConf writes dir/nginx.conf: one foreground process with its
// state in dir, the access log format "suite" (logFormat), and one server
// block whose directives are server. It returns the file's path.
func writeNginxConf(t *testing.T, dir, logFormat, server string) string {
	t.Helper()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	types { text/html html; text/plain txt; application/octet-stream bin; }
	log_format suite '%[2]s';
	keepalive_requests 10000;
	server {%[3]s
	}
}
`, dir, logFormat, server)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return cf
}

// state stops nginx gracefully (SIGQUIT: it finishes what it serves and
// closes its log) and turns the access log into: requests by method, URI,
// status and length; and connections by the sequence of requests they
// carried ($connection numbers differ between runs, the sequences must
// not).
func (n *nginxInstance) state(t *testing.T) []string {
	t.Helper()
	if err := n.proc.stop(t, syscall.SIGQUIT); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	type req struct {
		n   int
		key string
	}
	conns := map[string][]req{}
	requests := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, n.log)), "\n") {
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			t.Fatalf("nginx access log: bad line %q", l)
		}
		seq, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("nginx access log: bad $connection_requests in %q", l)
		}
		requests["req "+f[2]]++
		conns[f[0]] = append(conns[f[0]], req{seq, f[2]})
	}
	sequences := map[string]int{}
	for c, rs := range conns {
		sort.Slice(rs, func(i, j int) bool { return rs[i].n < rs[j].n })
		var parts []string
		for i, r := range rs {
			if r.n != i+1 {
				t.Errorf("nginx connection %s: request %d logged as number %d", c, i+1, r.n)
			}
			// Runs of the same request are written once with a count.
			if k := len(parts) - 1; k >= 0 && strings.HasPrefix(parts[k], r.key+" ×") {
				var cnt int
				fmt.Sscanf(parts[k][len(r.key)+len(" ×"):], "%d", &cnt)
				parts[k] = fmt.Sprintf("%s ×%d", r.key, cnt+1)
				continue
			}
			parts = append(parts, r.key+" ×1")
		}
		sequences["connection ["+strings.Join(parts, ", ")+"]"]++
	}
	return append(countLines(requests), countLines(sequences)...)
}

func (nginxServer) checkMatch(s *session.Session, match string) error {
	return checkHTTPMatch(s, match)
}
