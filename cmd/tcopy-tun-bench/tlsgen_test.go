package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
	"github.com/tcopy-tun/tcopy-tun/replay/tlssession"
)

// TestGeneratedTLSCaptures: a TLS workload's capture is TLS on the wire
// (none of the plaintext is visible), and with its key log it decrypts,
// through tcopy-tun's own reader, builder and TLS sink, into exactly the
// plaintext workload's requests and answers: every session decrypted, the
// plaintext byte counts the generator reported, the closes as the plain
// capture's (the server's after Connection: close, the client's on
// keep-alive).
func TestGeneratedTLSCaptures(t *testing.T) {
	for _, w := range workloads(true) {
		if !w.Capture.TLS {
			continue
		}
		t.Run(w.Name, func(t *testing.T) {
			spec := w.Capture
			spec.Sessions, spec.Clients = min(spec.Sessions, 40), min(spec.Clients, 9)
			spec.Requests = min(spec.Requests, 7)
			dir := t.TempDir()
			path := filepath.Join(dir, "tls.pcap")
			st, err := generate(spec, path)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(raw, []byte("HTTP/1.1")) || bytes.Contains(raw, []byte("/bytes/")) {
				t.Fatal("plaintext HTTP in the TLS capture")
			}
			kf, err := os.Open(keylogPath(path))
			if err != nil {
				t.Fatal(err)
			}
			keys, err := tlsdecrypt.ParseKeyLog(kf, keylogPath(path))
			kf.Close()
			if err != nil {
				t.Fatal(err)
			}

			var ss []*session.Session
			sink := tlssession.New(session.Collect(func(s *session.Session) { ss = append(ss, s) }), keys)
			var firstErr error
			sink.OnResult = func(_ *session.Head, r tlsdecrypt.Result) {
				if r.Err != nil && firstErr == nil {
					firstErr = r.Err
				}
			}
			// The server stream is kept whole: the sink decrypts it.
			b := session.NewBuilder(session.Config{ServerDataLimit: 1 << 30}, sink)
			src, err := capture.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if err := b.ReadFrom(capture.NewReader(src, path)); err != nil {
				t.Fatal(err)
			}
			b.Close()
			if ts := sink.Stats(); ts.TLS != int64(spec.Sessions) || ts.Decrypted != int64(spec.Sessions) {
				t.Fatalf("TLS stats %+v, want all %d sessions TLS and decrypted; first error: %v", ts, spec.Sessions, firstErr)
			}
			plain, _ := readSessions(t, mustGenerate(t, spec.plain(), filepath.Join(dir, "plain.pcap")))
			if len(ss) != len(plain) {
				t.Fatalf("%d TLS sessions, %d plain", len(ss), len(plain))
			}
			var cb, sb int64
			for i, s := range ss {
				var client []byte
				for _, c := range s.Chunks {
					client = append(client, c.Data...)
				}
				p := plain[i]
				var pc []byte
				for _, c := range p.Chunks {
					pc = append(pc, c.Data...)
				}
				// (readSessions keeps no server data: its byte count.)
				if s.Client != p.Client || !bytes.Equal(client, pc) || int64(len(s.ServerData)) != p.ServerBytes || len(s.Holes) != 0 {
					t.Fatalf("session %d (%s): %d client and %d server plaintext bytes, %d holes; the plain capture's session (%s) has %d and %d",
						i, s.Client, len(client), len(s.ServerData), len(s.Holes), p.Client, len(pc), p.ServerBytes)
				}
				if s.End != p.End {
					t.Fatalf("session %d ends %s, the plain capture's %s", i, s.End, p.End)
				}
				cb += int64(len(client))
				sb += int64(len(s.ServerData))
			}
			if cb != st.ClientBytes || sb != st.ServerBytes {
				t.Fatalf("plaintext %d client, %d server bytes; the generator counted %d and %d", cb, sb, st.ClientBytes, st.ServerBytes)
			}
		})
	}
}

func mustGenerate(t *testing.T, spec capSpec, path string) string {
	t.Helper()
	if _, err := generate(spec, path); err != nil {
		t.Fatal(err)
	}
	return path
}
