package tlsdecrypt

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// event is bytes of one direction as the server's side of a real
// connection saw them, below TLS.
type event struct {
	d Dir
	t time.Time
	b []byte
}

type recorder struct {
	mu sync.Mutex
	ev []event
}

func (r *recorder) add(d Dir, b []byte) {
	r.mu.Lock()
	r.ev = append(r.ev, event{d, time.Now(), append([]byte(nil), b...)})
	r.mu.Unlock()
}

func (r *recorder) events() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.ev...)
}

// recConn records what the server reads (client bytes) and writes (server
// bytes). A write is recorded before it is sent, a read after it is
// received, so each direction's bytes are in order and a server answer
// never precedes what caused it.
type recConn struct {
	net.Conn
	r *recorder
}

func (c recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.r.add(ClientToServer, b[:n])
	}
	return n, err
}

func (c recConn) Write(b []byte) (int, error) {
	c.r.add(ServerToClient, b)
	return c.Conn.Write(b)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testCert(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tls.test"},
		DNSNames:     []string{"tls.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// exchange is one request and its answer.
type exchange struct{ req, resp int }

// payload is n bytes that say where they are, so that a misplaced piece
// shows.
func payload(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s%d;", tag, i)
	}
	return b.Bytes()[:n]
}

// session is one recorded connection: the events and the plaintext each
// side sent.
type session struct {
	events []event
	sent   [2][]byte
	state  tls.ConnectionState
}

// runTLS runs one real TLS connection over loopback TCP: the client sends
// each request, the server answers it, then the client closes (a
// close_notify). It returns what the server's side saw below TLS.
func runTLS(t *testing.T, cc, sc *tls.Config, xs []exchange) session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := &recorder{}
	var s session
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Server(recConn{c, rec}, sc)
		for i, x := range xs {
			buf := make([]byte, x.req)
			if _, err := io.ReadFull(tc, buf); err != nil {
				done <- fmt.Errorf("server: request %d: %w", i, err)
				return
			}
			if _, err := tc.Write(payload(fmt.Sprintf("s%d.", i), x.resp)); err != nil {
				done <- fmt.Errorf("server: answer %d: %w", i, err)
				return
			}
		}
		// Read to the client's close_notify.
		_, err = io.Copy(io.Discard, tc)
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(c, cc)
	for i, x := range xs {
		req := payload(fmt.Sprintf("c%d.", i), x.req)
		if _, err := tc.Write(req); err != nil {
			t.Fatalf("client: request %d: %v", i, err)
		}
		s.sent[ClientToServer] = append(s.sent[ClientToServer], req...)
		buf := make([]byte, x.resp)
		if _, err := io.ReadFull(tc, buf); err != nil {
			t.Fatalf("client: answer %d: %v", i, err)
		}
		s.sent[ServerToClient] = append(s.sent[ServerToClient], buf...)
	}
	s.state = tc.ConnectionState()
	tc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.events = rec.events()
	return s
}

// feedRandom feeds a session's events to a Conn in random pieces of 1 to
// max bytes and returns the plaintext of each direction.
func feedRandom(t *testing.T, c *Conn, got *[2][]Piece, evs []event, rng *mrand.Rand, max int) [2][]byte {
	t.Helper()
	var off [2]int64
	for _, e := range evs {
		b := e.b
		for len(b) > 0 {
			n := 1 + rng.IntN(max)
			n = min(n, len(b))
			c.Feed(e.d, off[e.d], e.t, b[:n])
			off[e.d] += int64(n)
			b = b[n:]
		}
	}
	var pt [2][]byte
	for d := range got {
		var next int64
		for _, p := range got[d] {
			if p.Off != next {
				t.Fatalf("%v piece at plaintext offset %d, want %d", Dir(d), p.Off, next)
			}
			if p.RecordOff < 0 || p.RecordEnd <= p.RecordOff || p.RecordEnd > off[d] {
				t.Fatalf("%v piece from record [%d,%d) of a %d-byte stream", Dir(d), p.RecordOff, p.RecordEnd, off[d])
			}
			next += int64(len(p.Data))
			pt[d] = append(pt[d], p.Data...)
		}
	}
	return pt
}

var roundTrips = []exchange{{10, 5}, {2000, 70000}, {40000, 3}, {1, 16384}, {16385, 1}}

// TestRoundTrip runs real crypto/tls connections over loopback for each
// version and suite, records the bytes below TLS and the key log, and
// decrypts them fed in small random pieces: the plaintext must be what
// each side sent, both ways.
func TestRoundTrip(t *testing.T) {
	cert := testCert(t)
	for _, tc := range []struct {
		name    string
		version uint16
		suite   uint16
		hrr     bool
	}{
		{"TLS1.3/AES-128-GCM", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, false},
		// AES-256-GCM: crypto/tls never prefers it; TestOpenSSLKeyUpdate
		// has it.
		{"TLS1.3/ChaCha20-Poly1305", tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, false},
		{"TLS1.3/HelloRetryRequest", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, true},
		{"TLS1.2/ECDHE-AES-128-GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false},
		{"TLS1.2/ECDHE-AES-256-GCM-SHA384", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, false},
		{"TLS1.2/ECDHE-ChaCha20-Poly1305", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, false},
		{"TLS1.2/ECDHE-AES-128-CBC-SHA", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{"TLS1.2/ECDHE-AES-128-CBC-SHA256", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.suite == tls.TLS_CHACHA20_POLY1305_SHA256 && tc.version == tls.VersionTLS13 && os.Getenv(envNoAES) == "" {
				// crypto/tls picks ChaCha20 for TLS 1.3 only without AES
				// hardware: run this case again in a process that
				// hides it.
				rerunWithoutAES(t)
				return
			}
			keylog := &lockedBuffer{}
			cache := tls.NewLRUClientSessionCache(4)
			cc := &tls.Config{
				ServerName: "tls.test", InsecureSkipVerify: true,
				MinVersion: tc.version, MaxVersion: tc.version,
				NextProtos: []string{"h2", "http/1.1"}, KeyLogWriter: keylog,
				ClientSessionCache: cache,
			}
			sc := &tls.Config{
				Certificates: []tls.Certificate{cert},
				MinVersion:   tc.version, MaxVersion: tc.version,
				NextProtos: []string{"http/1.1"}, KeyLogWriter: keylog,
			}
			if tc.version == tls.VersionTLS12 {
				cc.CipherSuites = []uint16{tc.suite}
				sc.CipherSuites = []uint16{tc.suite}
			} else {
				// crypto/tls does not let TLS 1.3 suites be chosen; the
				// server's preference is steered by AES hardware
				// support, so the suite is checked below, and the
				// other suites are reached by a hand-made vector.
				cc.CipherSuites = nil
			}
			if tc.hrr {
				cc.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
				sc.CurvePreferences = []tls.CurveID{tls.CurveP256}
			}
			rng := mrand.New(mrand.NewPCG(1, uint64(len(tc.name))))
			// One key log for both connections, as for a capture: the
			// resumed TLS 1.2 session is found by the ticket of the first
			// (crypto/tls logs no line for a resumed TLS 1.2 session).
			kl := NewKeyLog()
			for _, resumed := range []bool{false, true} {
				s := runTLS(t, cc, sc, roundTrips)
				if s.state.DidResume != resumed {
					t.Fatalf("resumed %v, want %v", s.state.DidResume, resumed)
				}
				if err := kl.Read(strings.NewReader(keylog.String()), "keylog"); err != nil {
					t.Fatal(err)
				}
				var got [2][]Piece
				c := NewConn(kl, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
				pt := feedRandom(t, c, &got, s.events, rng, 300)
				r := c.Result()
				if r.Status != StatusDecrypting || r.Err != nil {
					t.Fatalf("resumed %v: status %v: %v", resumed, r.Status, r.Err)
				}
				if r.Version != tc.version || r.Suite != s.state.CipherSuite || r.SNI != "tls.test" || r.ALPN != "http/1.1" || r.Resumed != resumed || r.HelloRetry != tc.hrr {
					t.Fatalf("resumed %v: result %+v (connection: suite %#x, ALPN %q)", resumed, r, s.state.CipherSuite, s.state.NegotiatedProtocol)
				}
				if (tc.version == tls.VersionTLS12 || os.Getenv(envNoAES) != "") && r.Suite != tc.suite {
					t.Fatalf("suite %s, want %s", SuiteName(r.Suite), SuiteName(tc.suite))
				}
				for d := range pt {
					if !bytes.Equal(pt[d], s.sent[d]) {
						t.Fatalf("resumed %v: %v plaintext: %d bytes, want the %d sent (first difference at %d)", resumed, Dir(d), len(pt[d]), len(s.sent[d]), firstDiff(pt[d], s.sent[d]))
					}
				}
				if !r.Ended[ClientToServer] || r.Alert[ClientToServer] != [2]byte{1, 0} {
					t.Fatalf("resumed %v: client's close_notify not seen: %+v", resumed, r)
				}
			}
		})
	}
}

// envNoAES marks the process rerunWithoutAES starts.
const envNoAES = "TLSDECRYPT_TEST_NO_AES"

// rerunWithoutAES runs the current test in a child process of the test
// binary with AES hardware support hidden (GODEBUG=cpu.aes=off), so that
// crypto/tls negotiates TLS_CHACHA20_POLY1305_SHA256.
func rerunWithoutAES(t *testing.T) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+strings.ReplaceAll(regexp.QuoteMeta(t.Name()), "/", "$/^")+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.aes=off", envNoAES+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("rerun without AES hardware: %v\n%s", err, out)
	}
}

func newRand(seed uint64) *mrand.Rand { return mrand.New(mrand.NewPCG(seed, seed)) }

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestMissingAndWrongKeys: a connection whose key log lacks its client
// random is StatusNoKeys; one with a wrong secret is StatusFailed; neither
// emits anything. A capture cut inside a record emits what came before it,
// and a gap stops its direction with StatusHole.
func TestMissingAndWrongKeys(t *testing.T) {
	cert := testCert(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("%#x", version), func(t *testing.T) {
			keylog := &lockedBuffer{}
			cc := &tls.Config{ServerName: "tls.test", InsecureSkipVerify: true, MinVersion: version, MaxVersion: version, KeyLogWriter: keylog}
			sc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: version, MaxVersion: version}
			s := runTLS(t, cc, sc, []exchange{{100, 200}, {300, 400}})
			rng := mrand.New(mrand.NewPCG(2, 3))

			// No keys.
			var got [2][]Piece
			c := NewConn(NewKeyLog(), func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
			feedRandom(t, c, &got, s.events, rng, 50)
			if r := c.Result(); r.Status != StatusNoKeys || !errors.Is(r.Err, ErrNoKeys) || len(got[0])+len(got[1]) != 0 {
				t.Fatalf("empty key log: status %v, %v, %d+%d pieces", r.Status, r.Err, len(got[0]), len(got[1]))
			}

			// A wrong secret: one hex digit of each changed.
			var wrong strings.Builder
			for _, line := range strings.Split(strings.TrimSpace(keylog.String()), "\n") {
				last := line[len(line)-1]
				wrong.WriteString(line[:len(line)-1] + map[bool]string{true: "1", false: "0"}[last == '0'] + "\n")
			}
			kl, err := ParseKeyLog(strings.NewReader(wrong.String()), "wrong")
			if err != nil {
				t.Fatal(err)
			}
			got = [2][]Piece{}
			c = NewConn(kl, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
			feedRandom(t, c, &got, s.events, rng, 50)
			if r := c.Result(); r.Status != StatusFailed || !errors.Is(r.Err, ErrFailed) || len(got[0])+len(got[1]) != 0 {
				t.Fatalf("wrong key: status %v, %v, %d+%d pieces", r.Status, r.Err, len(got[0]), len(got[1]))
			}

			good, err := ParseKeyLog(strings.NewReader(keylog.String()), "good")
			if err != nil {
				t.Fatal(err)
			}
			// Truncated: the client's stream ends 10 bytes into its last
			// data record (before the close_notify): the first request
			// comes out whole, the second not at all.
			var client []byte
			for _, e := range s.events {
				if e.d == ClientToServer {
					client = append(client, e.b...)
				}
			}
			recs := splitRecords(client)
			cut := 0
			for _, r := range recs[:len(recs)-2] {
				cut += len(r)
			}
			got = [2][]Piece{}
			c = NewConn(good, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
			feedCut(c, s.events, int64(cut+10), int64(len(client)))
			if r := c.Result(); r.Status != StatusDecrypting || pieceBytes(got[0]) != 100 || pieceBytes(got[1]) != 600 {
				t.Fatalf("truncated: status %v (%v), %d client and %d server bytes, want 100 and 600", r.Status, r.Err, pieceBytes(got[0]), pieceBytes(got[1]))
			}

			// A hole: the client's stream lacks its last data record.
			got = [2][]Piece{}
			c = NewConn(good, func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
			feedCut(c, s.events, int64(cut), int64(cut+len(recs[len(recs)-2])))
			if r := c.Result(); r.Status != StatusHole || !errors.Is(r.Err, ErrHole) || pieceBytes(got[0]) != 100 || pieceBytes(got[1]) != 600 {
				t.Fatalf("hole: status %v (%v), %d client and %d server bytes", r.Status, r.Err, pieceBytes(got[0]), pieceBytes(got[1]))
			}
		})
	}
}

// feedCut feeds events whole, in order, without the client bytes from
// stream offset from to to.
func feedCut(c *Conn, evs []event, from, to int64) {
	var off [2]int64
	for _, e := range evs {
		o := off[e.d]
		off[e.d] += int64(len(e.b))
		if e.d == ServerToClient {
			c.Feed(e.d, o, e.t, e.b)
			continue
		}
		for i, b := range e.b {
			if x := o + int64(i); x < from || x >= to {
				c.Feed(e.d, x, e.t, []byte{b})
			}
		}
	}
}

func pieceBytes(ps []Piece) int {
	n := 0
	for _, p := range ps {
		n += len(p.Data)
	}
	return n
}

// splitRecords cuts a stream into whole records.
func splitRecords(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 5 {
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if n > len(b) {
			break
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}
