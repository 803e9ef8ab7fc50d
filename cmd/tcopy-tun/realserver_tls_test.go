package main

// TLS end to end (README "TLS"): curl with SSLKEYLOGFILE against nginx over
// HTTPS (TLS 1.2 and 1.3, keep-alive), captured with tcpdump, replayed with
// the key log — from --tls-keylog, and from the capture itself once
// editcap has put the secrets into a pcapng — into a fresh nginx over
// HTTPS, which must log the same requests; and a plaintext capture replayed
// to the HTTPS listener with --target-tls on.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	tlsNginxPort  = 8443
	tlsNginxPlain = 8080
	tlsServerName = "tls.test"
)

var toolEditcap = realTool{"editcap", "wireshark-common"}

// tlsTestCert writes a self-signed certificate for tlsServerName and the
// server's address, and its key, as PEM files in dir.
func tlsTestCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: tlsServerName},
		DNSNames:              []string{tlsServerName},
		IPAddresses:           []net.IP{net.ParseIP(realServerIP)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startTLSNginx starts nginx in e.srv with HTTPS on tlsNginxPort and plain
// HTTP on tlsNginxPlain; it returns the process and its access log.
func startTLSNginx(t *testing.T, e *realEnv, tag, cert, key string) (*realProc, string) {
	t.Helper()
	www := filepath.Join(e.dir, "www-tls")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"a.txt": httpdBody(1, 3000), "b.txt": httpdBody(2, 20_000), "index.html": []byte("<html>tls</html>\n")} {
		if err := os.WriteFile(filepath.Join(www, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(e.dir, "nginx-tls-"+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "access.log")
	cf := writeNginxConf(t, dir, `$request_method "$request_uri" $status $ssl_protocol $ssl_server_name`, fmt.Sprintf(`
		listen %[1]s:%[2]d ssl;
		listen %[1]s:%[3]d;
		ssl_certificate %[4]s;
		ssl_certificate_key %[5]s;
		ssl_protocols TLSv1.2 TLSv1.3;
		root %[6]s;
		access_log %[7]s suite;`, realServerIP, tlsNginxPort, tlsNginxPlain, cert, key, www, log))
	p := startProc(t, e.srv, "nginx "+tag, "nginx", "-e", "stderr", "-p", dir, "-c", cf)
	p.waitListening(t, e.srv, fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort))
	return p, log
}

// nginxRequests stops nginx and returns its logged requests, sorted
// (method, URI, status; with protoOnly false also the TLS version and SNI).
func nginxRequests(t *testing.T, p *realProc, log string, protoToo bool) []string {
	t.Helper()
	if err := p.stop(t, syscall.SIGQUIT); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(readFile(t, log)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if !protoToo && len(f) > 3 {
			f = f[:3]
		}
		out = append(out, strings.Join(f, " "))
	}
	sort.Strings(out)
	return out
}

func TestPrivilegedRealTLSNginx(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolNginx, toolCurl, toolEditcap)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	cert, key := tlsTestCert(t, e.dir)
	keylog := filepath.Join(e.dir, "keylog.txt")

	// The capture: keep-alive connections of TLS 1.2 and TLS 1.3.
	ng, log := startTLSNginx(t, e, "capture", cert, key)
	capt := startCapture(t, e, shapeEthernet(), tlsNginxPort)
	base := fmt.Sprintf("https://%s:%d", tlsServerName, tlsNginxPort)
	resolve := fmt.Sprintf("%s:%d:%s", tlsServerName, tlsNginxPort, realServerIP)
	env := []string{"SSLKEYLOGFILE=" + keylog}
	for _, v := range [][]string{{"--tlsv1.2", "--tls-max", "1.2"}, {"--tlsv1.3"}} {
		args := append([]string{"curl", "-sS", "--http1.1", "--cacert", cert, "--resolve", resolve}, v...)
		args = append(args, "-o", "/dev/null", base+"/a.txt", "-o", "/dev/null", base+"/b.txt?v="+v[0],
			"-o", "/dev/null", base+"/missing", "-o", "/dev/null", base+"/index.html")
		p := startProcEnv(t, e.cli, "curl", env, args...)
		if err := p.wait(t, realClientTimeout); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, p.out.String())
		}
		time.Sleep(300 * time.Millisecond) // the last segments, before the next client
	}
	time.Sleep(realBlockTimeout) // and written, before the capture stops (see TestPrivilegedRealTLSGo)
	if n := capt.stop(t); n == 0 {
		t.Fatal("the capture holds no packet")
	}
	want := nginxRequests(t, ng, log, true)
	if len(want) != 8 {
		t.Fatalf("the captured nginx logged %d requests, want 8:\n%s", len(want), strings.Join(want, "\n"))
	}
	for _, w := range want {
		if !strings.Contains(w, tlsServerName) {
			t.Fatalf("captured request without SNI %s: %q", tlsServerName, w)
		}
	}
	if !strings.Contains(strings.Join(want, "\n"), "TLSv1.2") || !strings.Contains(strings.Join(want, "\n"), "TLSv1.3") {
		t.Fatalf("want both TLS 1.2 and 1.3 in the capture:\n%s", strings.Join(want, "\n"))
	}
	target := netip.MustParseAddrPort(fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort))

	// Replays with the key log, at speed 1 and max, and with the secrets
	// inside a pcapng (no --tls-keylog).
	withSecrets := filepath.Join(e.dir, "with-secrets.pcapng")
	if out, err := e.srv.Output("editcap", "--inject-secrets", "tls,"+keylog, capt.file, withSecrets); err != nil {
		t.Fatalf("editcap --inject-secrets: %v\n%s", err, out)
	}
	// inspect: per server, the TLS sessions with keys.
	empty := filepath.Join(e.dir, "empty-keylog.txt")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-keylog", keylog, capt.file}, "2/2"},
		{[]string{"--tls-keylog", empty, capt.file}, "0/2"},
		{[]string{withSecrets}, "2/2"},
	} {
		out, err := exec.Command(bin, append([]string{"inspect"}, c.args...)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "TLS KEYED") || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(target.String())+`\s.*\s`+c.want+`$`).Match(out) {
			t.Fatalf("inspect %v: %v, want %s TLS sessions keyed for %s:\n%s", c.args, err, c.want, target, out)
		}
	}
	for _, c := range []struct {
		name, file, speed string
		extra             []string
	}{
		{"keylog speed 1", capt.file, "1", []string{"--tls-keylog", keylog, "--target-ca", cert}},
		{"keylog speed max", capt.file, "max", []string{"--tls-keylog", keylog, "--target-insecure"}},
		{"pcapng secrets", withSecrets, "max", []string{"--target-ca", cert}},
	} {
		ng, log := startTLSNginx(t, e, strings.ReplaceAll(c.name, " ", "-"), cert, key)
		run := e.replay(t, e.srv, c.file, target, c.speed, c.extra...)
		got := nginxRequests(t, ng, log, true)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s: the replayed nginx logged\n%s\nwant\n%s\n%s", c.name, strings.Join(got, "\n"), strings.Join(want, "\n"), run.stderr)
		}
		if !strings.Contains(run.stderr, "tls:         2 TLS sessions captured: 2 decrypted") ||
			!strings.Contains(run.stderr, "tls target:  2 handshakes (0 failed)") {
			t.Fatalf("%s: summary without the TLS lines:\n%s", c.name, run.stderr)
		}
		if run.report.Summary.Succeeded != 2 {
			t.Fatalf("%s: %d sessions succeeded, want 2\n%s", c.name, run.report.Summary.Succeeded, run.stderr)
		}
		// Closed as captured: curl's close_notify and FIN, nginx's close.
		if d := nonZero(run.report.Summary.Deviations); len(d) != 0 {
			var rows []string
			for _, r := range run.report.Sessions {
				rows = append(rows, fmt.Sprintf("session %d: captured end %s, replayed end %s, deviations %v", r.ID, r.EndCaptured, r.EndReplayed, nonZero(r.Deviations)))
			}
			t.Errorf("%s: deviations %v, want none\n%s\n%s", c.name, d, strings.Join(rows, "\n"), run.stderr)
		}
	}

	// Without keys: the TLS sessions are not replayed, and said so.
	ng2, log2 := startTLSNginx(t, e, "nokeys", cert, key)
	run, code := e.replayAnyExit(t, e.srv, capt.file, target, "max", "--target-insecure", "--target-tls", "on")
	if got := nginxRequests(t, ng2, log2, false); len(got) != 0 {
		t.Fatalf("without keys nginx logged %d requests: %v", len(got), got)
	}
	if code == 0 || !strings.Contains(run.stderr, "2 without keys") || !strings.Contains(run.stderr, "2 not replayed") {
		t.Fatalf("without keys: exit status %d, summary:\n%s", code, run.stderr)
	}
	// Nor without any key source and --target-tls auto: no ciphertext
	// reaches the target (the sessions are empty plaintext, or refused).
	ng3, log3 := startTLSNginx(t, e, "nokeys-auto", cert, key)
	run, _ = e.replayAnyExit(t, e.srv, capt.file, target, "max", "--target-insecure")
	if got := nginxRequests(t, ng3, log3, false); len(got) != 0 {
		t.Fatalf("without keys (auto) nginx logged %d requests: %v", len(got), got)
	}
	if !strings.Contains(run.stderr, "2 without keys") {
		t.Fatalf("without keys (auto): summary:\n%s", run.stderr)
	}
	t.Logf("without keys, --target-tls auto:\n%s", run.stderr)
}

// A plaintext capture (taken behind a TLS terminator) replayed to an HTTPS
// target with --target-tls on.
func TestPrivilegedRealTLSTargetOn(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolNginx, toolCurl)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	cert, key := tlsTestCert(t, e.dir)
	ng, log := startTLSNginx(t, e, "capture", cert, key)
	capt := startCapture(t, e, shapeEthernet(), tlsNginxPlain)
	base := fmt.Sprintf("http://%s:%d", realServerIP, tlsNginxPlain)
	runClient(t, e.cli, "curl", "-sS", "-o", "/dev/null", base+"/a.txt", "-o", "/dev/null", base+"/b.txt", "-o", "/dev/null", base+"/missing")
	time.Sleep(realBlockTimeout) // the last segments written, before the capture stops (see TestPrivilegedRealTLSGo)
	if n := capt.stop(t); n == 0 {
		t.Fatal("the capture holds no packet")
	}
	want := nginxRequests(t, ng, log, false)
	if len(want) != 3 {
		t.Fatalf("captured %d requests, want 3: %v", len(want), want)
	}
	ng, log = startTLSNginx(t, e, "replay", cert, key)
	target := netip.MustParseAddrPort(fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort))
	run := e.replay(t, e.srv, capt.file, target, "max", "--target-tls", "on", "--target-ca", cert)
	got := nginxRequests(t, ng, log, true)
	if len(got) != len(want) {
		t.Fatalf("replayed nginx logged %v, want %v\n%s", got, want, run.stderr)
	}
	for i, g := range got {
		// Over TLS (the protocol is logged), same request.
		if !strings.HasPrefix(g, want[i]+" TLSv1.3") {
			t.Fatalf("replayed request %q, want %q over TLS 1.3\n%s", g, want[i], run.stderr)
		}
	}
	if !strings.Contains(run.stderr, "tls target:  1 handshakes (0 failed)") {
		t.Fatalf("summary without the target's handshake:\n%s", run.stderr)
	}
}

// tlsdMain is the Go TLS server helper: net/http over TLS (HTTP/2 and
// HTTP/1.1 by ALPN) on a.Listen; each request is printed as a line "req
// METHOD URI PROTO SNI".
func tlsdMain(a helperArgs) error {
	cert, err := tls.LoadX509KeyPair(a.Cert, a.Key)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	srv := &http.Server{
		Addr: a.Listen,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			fmt.Printf("req %s %s %s %s\n", r.Method, r.URL.RequestURI(), r.Proto, r.TLS.ServerName)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %s\n%s", r.Method, r.URL.Path, httpdBody(3, 2000))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	fmt.Println("tlsd listening")
	if err := srv.ListenAndServeTLS("", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// tlsClientMain is the Go client helper: with a key log (KeyLogWriter),
// HTTP/2 by ALPN, GETs a few paths over one connection from a.Addrs[0].
func tlsClientMain(a helperArgs) error {
	pemb, err := os.ReadFile(a.Cert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemb)
	kl, err := os.Create(a.KeyLog)
	if err != nil {
		return err
	}
	defer kl.Close()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: tlsServerName, KeyLogWriter: kl},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for _, p := range []string{"/go/1", "/go/2?x=y", "/go/3"} {
		resp, err := c.Get("https://" + a.Addrs[0] + p)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s %s, want HTTP/2 200", p, resp.Proto, resp.Status)
		}
	}
	return nil
}

// goRequests stops the Go TLS server and returns the requests it printed.
func goRequests(t *testing.T, p *realProc) []string {
	t.Helper()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("tlsd: %v\n%s", err, p.out.String())
	}
	var out []string
	for _, l := range strings.Split(p.out.String(), "\n") {
		if strings.HasPrefix(l, "req ") {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func TestPrivilegedRealTLSGo(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	cert, key := tlsTestCert(t, e.dir)
	keylog := filepath.Join(e.dir, "go-keylog.txt")
	start := func(tag string) *realProc {
		argv, env := helperArgv(t, "tlsd", helperArgs{Listen: fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort), Cert: cert, Key: key})
		p := startProcEnv(t, e.srv, "tlsd "+tag, env, argv...)
		p.waitListening(t, e.srv, fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort))
		return p
	}
	srv := start("capture")
	capt := startCapture(t, e, shapeEthernet(), tlsNginxPort)
	argv, env := helperArgv(t, "tlsclient", helperArgs{Addrs: []string{fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort)}, Cert: cert, KeyLog: keylog})
	cl := startProcEnv(t, e.cli, "tlsclient", env, argv...)
	if err := cl.wait(t, realClientTimeout); err != nil {
		t.Fatalf("Go TLS client: %v\n%s", err, cl.out.String())
	}
	// The connection's last segments (the client's exit closes it) are
	// on the wire, and tcpdump (starved on a loaded machine: the suite
	// lost one segment of 54 under load) has written them, before the
	// capture stops.
	time.Sleep(realBlockTimeout)
	if n := capt.stop(t); n == 0 {
		t.Fatal("the capture holds no packet")
	}
	want := goRequests(t, srv)
	if len(want) != 3 || !strings.Contains(want[0], "HTTP/2.0 "+tlsServerName) {
		t.Fatalf("the captured server saw %q, want 3 HTTP/2 requests with SNI %s", want, tlsServerName)
	}
	srv = start("replay")
	target := netip.MustParseAddrPort(fmt.Sprintf("%s:%d", realServerIP, tlsNginxPort))
	// Run here (not e.replay) to read the report's "tls" member.
	rep := filepath.Join(e.dir, "go-report.json")
	p := startProc(t, e.srv, "tcopy-tun", bin, "--pcap", capt.file, "--target", target.String(), "--speed", "max",
		"--progress", "never", "--report", rep, "--tls-keylog", keylog, "--target-ca", cert)
	if err := p.wait(t, realReplayTimeout); err != nil {
		t.Fatalf("tcopy-tun: %v\n%s", err, p.out.String())
	}
	if got := goRequests(t, srv); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the replayed server saw\n%s\nwant\n%s\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), p.out.String())
	}
	if !strings.Contains(p.out.String(), "1 TLS sessions captured: 1 decrypted") {
		t.Fatalf("summary:\n%s", p.out.String())
	}
	var r struct {
		TLS *tlsSummary `json:"tls"`
	}
	if err := json.Unmarshal([]byte(readFile(t, rep)), &r); err != nil {
		t.Fatal(err)
	}
	if r.TLS == nil || r.TLS.Sessions != 1 || r.TLS.Decrypted != 1 || r.TLS.Handshakes != 1 || r.TLS.HandshakeMeanSecs <= 0 ||
		r.TLS.HandshakeMaxSecs < r.TLS.HandshakeMeanSecs || r.TLS.NotReplayed != 0 {
		t.Fatalf("report's tls member: %+v", r.TLS)
	}
}
