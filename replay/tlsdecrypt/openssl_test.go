package tlsdecrypt

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// needTool finds a program a test runs, skipping without it (failing when
// TCOPY_TUN_PRIVILEGED_TESTS=1, as CI sets: CI installs it).
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := name + ": " + err.Error() + " (install " + pkg + ")"
		if os.Getenv("TCOPY_TUN_PRIVILEGED_TESTS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestOpenSSLKeyUpdate: OpenSSL's s_client (TLS 1.3, AES-256-GCM, its own
// key log) talks to a crypto/tls server over loopback and, between lines,
// sends KeyUpdate messages — "K" asks the server to update too, which
// crypto/tls does — so both directions change keys mid-connection. The
// bytes below the server's TLS decrypt to what each side sent.
func TestOpenSSLKeyUpdate(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys.log")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := &recorder{}
	var mu sync.Mutex
	var read, written []byte
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		tc := tls.Server(recConn{c, rec}, &tls.Config{Certificates: []tls.Certificate{testCert(t)}, MinVersion: tls.VersionTLS13})
		buf := make([]byte, 4096)
		for {
			n, err := tc.Read(buf)
			if n > 0 {
				answer := append([]byte("echo:"), buf[:n]...)
				mu.Lock()
				read = append(read, buf[:n]...)
				written = append(written, answer...)
				mu.Unlock()
				if _, err := tc.Write(answer); err != nil {
					done <- err
					return
				}
			}
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", "127.0.0.1:"+port, "-servername", "tls.test",
		"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384", "-keylogfile", keyFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// waitFor polls (bounded) until cond holds: s_client reads its
	// commands only at the start of a read from stdin, so each line is
	// written once the one before has had its effect.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s; s_client said:\n%s", what, out.String())
			}
		}
	}
	serverRead := func(s string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return bytes.HasSuffix(read, []byte(s)) }
	}
	clientBytes := func() int {
		n := 0
		for _, e := range rec.events() {
			if e.d == ClientToServer {
				n += len(e.b)
			}
		}
		return n
	}
	for _, line := range []string{"hello\n", "K\n", "world\n", "k\n", "again\n"} {
		before := clientBytes()
		if _, err := io.WriteString(stdin, line); err != nil {
			t.Fatal(err)
		}
		if len(line) == 2 {
			waitFor("the key update of "+strings.TrimSpace(line), func() bool { return clientBytes() > before })
		} else {
			waitFor("the server to read "+strings.TrimSpace(line), serverRead(line))
		}
	}
	stdin.Close()
	if err := <-done; err != nil {
		t.Fatalf("server: %v; s_client said:\n%s", err, out.String())
	}
	cmd.Wait()

	keys, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := ParseKeyLog(bytes.NewReader(keys), keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var got [2][]Piece
	c := NewConn(kl, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
	pt := feedRandom(t, c, &got, rec.events(), newRand(7), 100)
	r := c.Result()
	if r.Status != StatusDecrypting || r.Suite != tls.TLS_AES_256_GCM_SHA384 || r.SNI != "tls.test" {
		t.Fatalf("status %v (%v), suite %s, SNI %q", r.Status, r.Err, SuiteName(r.Suite), r.SNI)
	}
	mu.Lock()
	defer mu.Unlock()
	if string(pt[ClientToServer]) != "hello\nworld\nagain\n" || !bytes.Equal(pt[ClientToServer], read) || !bytes.Equal(pt[ServerToClient], written) {
		t.Fatalf("plaintext: client %q (server read %q), server %q (wrote %q)", pt[0], read, pt[1], written)
	}
	if r.KeyUpdates[ClientToServer] != 2 || r.KeyUpdates[ServerToClient] != 1 {
		t.Fatalf("key updates: client %d, server %d; want 2 and 1", r.KeyUpdates[0], r.KeyUpdates[1])
	}
}

// recordingProxy accepts one connection on a loopback port and relays it to
// target, recording both directions below TLS in the order they passed.
func recordingProxy(t *testing.T, target string) (addr string, rec *recorder, done <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &recorder{}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		var wg sync.WaitGroup
		relay := func(d Dir, dst, src net.Conn) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					rec.add(d, buf[:n])
					dst.Write(buf[:n])
				}
				if err != nil {
					dst.(*net.TCPConn).CloseWrite()
					return
				}
			}
		}
		wg.Add(2)
		go relay(ClientToServer, s, c)
		go relay(ServerToClient, c, s)
		wg.Wait()
	}()
	return ln.Addr().String(), rec, ch
}

// TestOpenSSLCBC: OpenSSL on both ends (s_client, and s_server echoing
// lines reversed) over TLS 1.2 with CBC suites, with and without
// encrypt_then_mac (which crypto/tls never negotiates), through a proxy
// that records the bytes: they decrypt to the lines sent and their echo.
func TestOpenSSLCBC(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	dir := t.TempDir()
	cert := testCert(t)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	for _, tc := range []struct {
		cipher string
		suite  uint16
		etm    bool
	}{
		{"ECDHE-ECDSA-AES128-SHA", 0xc009, true},
		{"ECDHE-ECDSA-AES128-SHA", 0xc009, false},
		{"ECDHE-ECDSA-AES256-SHA384", 0xc024, true},
	} {
		t.Run(fmt.Sprintf("%s/etm=%v", tc.cipher, tc.etm), func(t *testing.T) {
			// A free port for s_server (it cannot be told to pick one).
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
			l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv := exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-naccept", "1", "-rev",
				"-cert", certFile, "-key", keyFile, "-tls1_2", "-cipher", tc.cipher)
			var srvOut lockedBuffer
			srv.Stdout, srv.Stderr = &srvOut, &srvOut
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer srv.Process.Kill()
			for deadline := time.Now().Add(15 * time.Second); !strings.Contains(srvOut.String(), "ACCEPT"); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("s_server did not start: %s", srvOut.String())
				}
			}
			addr, rec, proxyDone := recordingProxy(t, "127.0.0.1:"+port)
			keys := filepath.Join(dir, "keys-"+port)
			args := []string{"s_client", "-connect", addr, "-tls1_2", "-cipher", tc.cipher, "-keylogfile", keys}
			if !tc.etm {
				args = append(args, "-no_etm")
			}
			cl := exec.CommandContext(ctx, openssl, args...)
			stdin, _ := cl.StdinPipe()
			var clOut lockedBuffer
			cl.Stdout, cl.Stderr = &clOut, &clOut
			if err := cl.Start(); err != nil {
				t.Fatal(err)
			}
			defer cl.Process.Kill()
			for _, line := range []string{"hello\n", "world\n"} {
				io.WriteString(stdin, line)
				rev := []byte(strings.TrimSpace(line))
				slices.Reverse(rev)
				for deadline := time.Now().Add(15 * time.Second); !strings.Contains(clOut.String(), string(rev)); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("no echo of %q; s_client said:\n%s", line, clOut.String())
					}
				}
			}
			stdin.Close()
			cl.Wait()
			<-proxyDone
			kb, err := os.ReadFile(keys)
			if err != nil {
				t.Fatal(err)
			}
			kl, err := ParseKeyLog(bytes.NewReader(kb), keys)
			if err != nil {
				t.Fatal(err)
			}
			var got [2][]Piece
			c := NewConn(kl, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
			pt := feedRandom(t, c, &got, rec.events(), newRand(11), 64)
			r := c.Result()
			if r.Status != StatusDecrypting || r.Suite != tc.suite || r.EncryptThenMAC != tc.etm {
				t.Fatalf("status %v (%v), suite %s, encrypt_then_mac %v", r.Status, r.Err, SuiteName(r.Suite), r.EncryptThenMAC)
			}
			if string(pt[ClientToServer]) != "hello\nworld\n" || !strings.Contains(string(pt[ServerToClient]), "olleh") || !strings.Contains(string(pt[ServerToClient]), "dlrow") {
				t.Fatalf("plaintext: client %q, server %q", pt[0], pt[1])
			}
		})
	}
}

// TestOpenSSLEarlyData: OpenSSL resumes a TLS 1.3 session with 0-RTT early
// data, which the server accepts. Early data is under a secret this
// package does not use: its records are skipped and counted, and the
// rest of the connection — PSK resumption, the handshake, the data after
// it — decrypts.
func TestOpenSSLEarlyData(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	dir := t.TempDir()
	cert := testCert(t)
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	early := filepath.Join(dir, "early.txt")
	os.WriteFile(early, []byte("early!\n"), 0o600)
	sess := filepath.Join(dir, "sess.pem")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	srv := exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-naccept", "2",
		"-cert", certFile, "-key", keyFile, "-tls1_3", "-early_data")
	var srvOut lockedBuffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	// s_server ends the connection at the end of its standard input:
	// keep it open.
	srvIn, _ := srv.StdinPipe()
	defer srvIn.Close()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	waitOut := func(b *lockedBuffer, s string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !strings.Contains(b.String(), s); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %q; server said:\n%s", s, srvOut.String())
			}
		}
	}
	waitOut(&srvOut, "ACCEPT")

	// connect runs one s_client through a recording proxy, sends line and
	// waits for the server to print it.
	connect := func(line string, args ...string) (*recorder, []byte) {
		addr, rec, proxyDone := recordingProxy(t, "127.0.0.1:"+port)
		keys := filepath.Join(dir, "keys-"+strings.TrimSpace(line))
		cl := exec.CommandContext(ctx, openssl, append([]string{"s_client", "-connect", addr, "-tls1_3", "-keylogfile", keys}, args...)...)
		stdin, _ := cl.StdinPipe()
		var clOut lockedBuffer
		cl.Stdout, cl.Stderr = &clOut, &clOut
		if err := cl.Start(); err != nil {
			t.Fatal(err)
		}
		defer cl.Process.Kill()
		io.WriteString(stdin, line)
		waitOut(&srvOut, strings.TrimSpace(line))
		if slices.Contains(args, "-sess_out") {
			// The ticket comes after the handshake: keep the connection
			// until s_client has written it.
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if fi, err := os.Stat(sess); err == nil && fi.Size() > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no session written; s_client said:\n%s", clOut.String())
				}
			}
		}
		stdin.Close()
		cl.Wait()
		<-proxyDone
		kb, err := os.ReadFile(keys)
		if err != nil {
			t.Fatal(err)
		}
		return rec, kb
	}
	connect("first\n", "-sess_out", sess)
	rec, kb := connect("late\n", "-sess_in", sess, "-early_data", early)
	waitOut(&srvOut, "early!")

	kl, err := ParseKeyLog(bytes.NewReader(kb), "keys")
	if err != nil {
		t.Fatal(err)
	}
	var got [2][]Piece
	c := NewConn(kl, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
	pt := feedRandom(t, c, &got, rec.events(), newRand(13), 64)
	r := c.Result()
	if r.Status != StatusDecrypting || !r.Resumed || r.EarlyDataSkipped == 0 {
		t.Fatalf("status %v (%v), resumed %v, early records skipped %d", r.Status, r.Err, r.Resumed, r.EarlyDataSkipped)
	}
	if string(pt[ClientToServer]) != "late\n" {
		t.Fatalf("client plaintext %q, want the data after the handshake", pt[ClientToServer])
	}
}
