package tlsdecrypt

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
