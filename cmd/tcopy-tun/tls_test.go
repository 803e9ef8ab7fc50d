package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
)

func TestTLSFlags(t *testing.T) {
	base := []string{"--pcap", "x.pcap", "--target", "127.0.0.1:443"}
	f, err := parseReplayFlags(base, io.Discard)
	if err != nil || f.tls.target != targetTLSAuto || f.tls.keylog != "" || f.tls.insecure {
		t.Fatalf("defaults: %v, %+v", err, f.tls)
	}
	f, err = parseReplayFlags(append(base, "--tls-keylog", "k.txt", "--target-tls", "on", "--target-insecure",
		"--target-cert", "c.pem", "--target-key", "k.pem"), io.Discard)
	if err != nil || f.tls != (tlsFlags{keylog: "k.txt", target: "on", insecure: true, cert: "c.pem", key: "k.pem"}) {
		t.Fatalf("all set: %v, %+v", err, f.tls)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--target-tls", "maybe"}, `--target-tls "maybe": want auto, on or off`},
		{[]string{"--target-cert", "c.pem"}, "--target-cert and --target-key go together"},
		{[]string{"--target-key", "k.pem"}, "--target-cert and --target-key go together"},
		{[]string{"--target-insecure", "--target-ca", "ca.pem"}, "exclude each other"},
	} {
		_, err := parseReplayFlags(append(base, c.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line with %q", c.args, err, c.want)
		}
	}
}

func TestNewTLSRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Auto without keys: decryption installed (a pcapng may bring
	// secrets), not active until then.
	tr, err := newTLSRun(&tlsFlags{target: targetTLSAuto})
	if err != nil || tr == nil || tr.active.Load() {
		t.Fatalf("auto: %v, %v", tr, err)
	}
	good := write("keylog.txt", "# a comment\nCLIENT_RANDOM "+strings.Repeat("11", 32)+" "+strings.Repeat("22", 48)+"\n")
	tr, err = newTLSRun(&tlsFlags{target: targetTLSAuto, keylog: good})
	if err != nil || !tr.active.Load() || tr.keys.Len() != 1 {
		t.Fatalf("key log: %v, %+v", err, tr)
	}
	for _, c := range []struct {
		f    tlsFlags
		want string
	}{
		{tlsFlags{target: "auto", keylog: filepath.Join(dir, "none.txt")}, "--tls-keylog: open"},
		{tlsFlags{target: "auto", keylog: write("bad.txt", "CLIENT_RANDOM zz\n")}, "--tls-keylog"},
		{tlsFlags{target: "on", ca: filepath.Join(dir, "none.pem")}, "--target-ca: open"},
		{tlsFlags{target: "on", ca: write("ca.pem", "not a certificate")}, "no PEM certificate"},
		{tlsFlags{target: "on", cert: write("c.pem", "x"), key: write("k.pem", "y")}, "--target-cert"},
	} {
		_, err := newTLSRun(&c.f)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: error %v, want one line with %q", c.f, err, c.want)
		}
	}
}

// The per-session decisions go with their sessions: a long run holds only
// those of the sessions still referenced.
func TestTLSDecisionsForgotten(t *testing.T) {
	tr, err := newTLSRun(&tlsFlags{target: targetTLSAuto})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		tr.decision(&session.Head{})
	}
	kept := &session.Head{}
	d := tr.decision(kept)
	if tr.decision(kept) != d {
		t.Fatal("a second look-up of the same Head made a new decision")
	}
	n := 0
	for range 50 {
		runtime.GC()
		tr.mu.Lock()
		n = len(tr.by)
		tr.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n != 1 {
		t.Fatalf("%d decisions held after collection, want 1 (the Head still referenced)", n)
	}
	runtime.KeepAlive(kept)
}
