package metrics

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestListenAddr(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "9090", want: "127.0.0.1:9090"},
		{in: ":9090", want: "127.0.0.1:9090"},
		{in: "0.0.0.0:9090", want: "0.0.0.0:9090"},
		{in: "[::1]:9090", want: "[::1]:9090"},
		{in: "localhost:0", want: "localhost:0"},
		{in: "", err: "empty address"},
		{in: "90900", err: "want PORT"},
		{in: "host:port", err: `port "port"`},
		{in: "1.2.3.4", err: "want PORT"},
	} {
		got, err := ListenAddr(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ListenAddr(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
			}
		case err != nil || got != tc.want:
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseAllow(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"nonsense", ""},
		{"10.0.0.0/33", ""},
		{"::ffff:0.0.0.0/80", ""},
	} {
		p, err := ParseAllow(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseAllow(%q) = %v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParseAllow(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

// A peer outside --metrics-allow is closed before it gets a byte, and
// counted; an allowed one is served.
func TestAllowList(t *testing.T) {
	x := New()
	denied := serve(t, x, ServerOptions{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	c, err := net.Dial("tcp", denied.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !isReset(err)) {
		t.Errorf("refused peer read %q, %v; want nothing and the connection closed", b, err)
	}

	allowed := serve(t, x, ServerOptions{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	m := samples(t, scrape(t, "http://"+allowed.Addr().String()+"/metrics"))
	if v := m["tcopy_tun_metrics_refused_connections_total"]; v != 1 {
		t.Errorf("refused connections %v, want 1", v)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// What a peer can make the server hold is bounded: a header larger than
// MaxHeaderBytes is refused, a method other than GET is refused, unknown
// paths are not found.
func TestServerBounds(t *testing.T) {
	x := New()
	s := serve(t, x, ServerOptions{})
	base := "http://" + s.Addr().String()

	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2*MaxHeaderBytes))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("large header: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("large header: %s, want 431", resp.Status)
		}
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/metrics", http.StatusMethodNotAllowed},
		{"GET", "/debug/pprof/", http.StatusNotFound},
		{"GET", "/", http.StatusOK},
		{"HEAD", "/metrics", http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %s, want %d", tc.method, tc.path, resp.Status, tc.want)
		}
	}
}

// Connections beyond MaxConns wait for a slot: a peer that opens many idle
// connections holds at most MaxConns, and the server still answers once
// those are gone.
func TestConnectionCap(t *testing.T) {
	x := New()
	s := serve(t, x, ServerOptions{})
	var idle []net.Conn
	for range MaxConns {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	extra, err := net.Dial("tcp", s.Addr().String()) // accepted by the kernel, not yet by the server
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	io.WriteString(extra, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	extra.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection %d was served while %d idle ones held every slot", MaxConns+1, MaxConns)
	}
	for _, c := range idle {
		c.Close()
	}
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(extra).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Errorf("after the idle connections closed: %q, %v; want 200", line, err)
	}
}
