package tlssession_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
	"github.com/tcopy-tun/tcopy-tun/replay/tlssession"
)

// event is bytes of one direction below TLS, as the server saw them.
type event struct {
	client bool
	t      time.Time
	b      []byte
}

type recConn struct {
	net.Conn
	mu *sync.Mutex
	ev *[]event
}

func (c recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		*c.ev = append(*c.ev, event{true, time.Now(), append([]byte(nil), b[:n]...)})
		c.mu.Unlock()
	}
	return n, err
}

func (c recConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	*c.ev = append(*c.ev, event{false, time.Now(), append([]byte(nil), b...)})
	c.mu.Unlock()
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

// tlsRun is a real TLS connection: what went below TLS, and the
// plaintext of each request and answer.
type tlsRun struct {
	events    []event
	req, resp [][]byte
	keylog    []byte
}

// runTLS runs a crypto/tls client and server over loopback TCP: the client
// sends each request once it has the whole previous answer.
func runTLS(t *testing.T, version uint16, sizes [][2]int) tlsRun {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tls.test"}, DNSNames: []string{"tls.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keylog := &lockedBuffer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var run tlsRun
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := tls.Server(recConn{c, &mu, &run.events}, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: version, MaxVersion: version})
		for i, sz := range sizes {
			if _, err := io.ReadFull(tc, make([]byte, sz[0])); err != nil {
				done <- err
				return
			}
			if _, err := tc.Write(bytes.Repeat([]byte{byte('A' + i)}, sz[1])); err != nil {
				done <- err
				return
			}
		}
		_, err = io.Copy(io.Discard, tc)
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: "tls.test", InsecureSkipVerify: true, MinVersion: version, MaxVersion: version, KeyLogWriter: keylog})
	for i, sz := range sizes {
		req := bytes.Repeat([]byte{byte('a' + i)}, sz[0])
		if _, err := tc.Write(req); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, sz[1])
		if _, err := io.ReadFull(tc, resp); err != nil {
			t.Fatal(err)
		}
		run.req, run.resp = append(run.req, req), append(run.resp, resp)
	}
	tc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	run.keylog = keylog.b.Bytes()
	return run
}

// packets turns a run into the TCP segments of a capture (MSS 1000: TLS
// records span segments) between client and server.
func (r tlsRun) packets(client, server string) []capture.Packet {
	return r.conv(client, server).CloseClient().Packets()
}

// conv is packets before the close.
func (r tlsRun) conv(client, server string) *rt.Conv {
	c := rt.NewConv(client, server, r.events[0].t.Add(-time.Millisecond))
	c.MSS = 1000
	c.Handshake()
	for _, e := range r.events {
		// Segments of one event are a Step apart: keep time from going
		// back (Merge orders by time).
		if e.t.After(c.Now()) {
			c.At(e.t)
		}
		if e.client {
			c.SendBytes(e.b)
		} else {
			c.ReplyBytes(e.b)
		}
	}
	return c
}

// TestSinkThroughBuilder: a pcapng holding a decryption secrets block and
// three sessions — a TLS one whose keys are in the block, a TLS one
// without keys, a plain HTTP one — read by the real capture reader and
// session Builder through the Sink: the first comes out as its plaintext,
// with ServerBytesBefore in plaintext server bytes; the second as holes;
// the third unchanged.
func TestSinkThroughBuilder(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(fmt.Sprintf("%#x", version), func(t *testing.T) {
			sizes := [][2]int{{300, 5000}, {20000, 10}, {7, 40000}}
			keyed, unkeyed := runTLS(t, version, sizes), runTLS(t, version, sizes[:1])
			plain := rt.NewConv("10.0.0.3:40003", "10.0.0.9:80", keyed.events[0].t).Handshake().
				Send("GET / HTTP/1.1\r\n\r\n").Reply("HTTP/1.1 204 No Content\r\n\r\n").CloseClient().Packets()
			pkts := rt.Merge(keyed.packets("10.0.0.1:40001", "10.0.0.9:443"), unkeyed.packets("10.0.0.2:40002", "10.0.0.9:443"), plain)
			frames, err := rt.Frames(rt.LinkEthernet, pkts)
			if err != nil {
				t.Fatal(err)
			}
			var file bytes.Buffer
			nw, _ := rt.NewPcapngWriter(&file, false)
			id, _ := nw.AddInterface(rt.LinkEthernet, 0, 9)
			nw.WriteSecrets(capture.SecretsTLSKeyLog, keyed.keylog)
			for _, f := range frames {
				nw.WriteFrame(id, f)
			}

			// OnDecided: once per session, what it is.
			decided := map[netip.AddrPort][]tlsdecrypt.Status{}
			build := func(wrap bool) (map[netip.AddrPort]*session.Session, *tlssession.Sink) {
				src, err := capture.NewSource(bytes.NewReader(file.Bytes()), "tls.pcapng")
				if err != nil {
					t.Fatal(err)
				}
				kl := tlsdecrypt.NewKeyLog()
				src.(capture.SecretsHandler).OnSecrets(func(s capture.Secrets) {
					if s.Type == capture.SecretsTLSKeyLog {
						if err := kl.Read(bytes.NewReader(s.Data), "tls.pcapng"); err != nil {
							t.Errorf("secrets block: %v", err)
						}
					}
				})
				got := map[netip.AddrPort]*session.Session{}
				var sink session.Sink = session.Collect(func(s *session.Session) { got[s.Client] = s })
				var ts *tlssession.Sink
				if wrap {
					ts = tlssession.New(sink, kl)
					ts.OnDecided = func(h *session.Head, r tlsdecrypt.Result) {
						decided[h.Client] = append(decided[h.Client], r.Status)
					}
					sink = ts
				}
				b := session.NewBuilder(session.Config{ServerDataLimit: 1 << 30}, sink)
				if err := b.ReadFrom(capture.NewReader(src, "tls.pcapng")); err != nil {
					t.Fatal(err)
				}
				b.Close()
				return got, ts
			}
			got, ts := build(true)
			raw, _ := build(false)
			for client, want := range map[string]tlsdecrypt.Status{
				"10.0.0.1:40001": tlsdecrypt.StatusDecrypting,
				"10.0.0.2:40002": tlsdecrypt.StatusNoKeys,
				"10.0.0.3:40003": tlsdecrypt.StatusNotTLS,
			} {
				if d := decided[netip.MustParseAddrPort(client)]; len(d) != 1 || d[0] != want {
					t.Errorf("OnDecided for %s: %v, want once %v", client, d, want)
				}
			}

			// The keyed TLS session: its plaintext, chunk by chunk.
			s := got[netip.MustParseAddrPort("10.0.0.1:40001")]
			var client []byte
			for i, c := range s.Chunks {
				if c.StreamOffset != int64(len(client)) {
					t.Fatalf("chunk %d at plaintext offset %d, want %d", i, c.StreamOffset, len(client))
				}
				// The request a chunk belongs to was sent after the whole
				// answer before it: ServerBytesBefore counts those
				// answers, in plaintext.
				var want, reqEnd int64
				for j := range sizes {
					reqEnd += int64(sizes[j][0])
					if c.StreamOffset < reqEnd {
						break
					}
					want += int64(sizes[j][1])
				}
				if c.ServerBytesBefore != want {
					t.Errorf("chunk %d (plaintext offset %d): ServerBytesBefore %d, want %d", i, c.StreamOffset, c.ServerBytesBefore, want)
				}
				client = append(client, c.Data...)
			}
			if !bytes.Equal(client, bytes.Join(keyed.req, nil)) || !bytes.Equal(s.ServerData, bytes.Join(keyed.resp, nil)) {
				t.Fatalf("keyed session: %d client and %d server plaintext bytes, want %d and %d", len(client), len(s.ServerData), len(bytes.Join(keyed.req, nil)), len(bytes.Join(keyed.resp, nil)))
			}
			if s.ClientBytes != int64(len(client)) || s.ServerBytes != int64(len(s.ServerData)) || len(s.Holes) != 0 {
				t.Fatalf("keyed session: ClientBytes %d ServerBytes %d holes %v", s.ClientBytes, s.ServerBytes, s.Holes)
			}

			// The session without keys: nothing but holes.
			u := got[netip.MustParseAddrPort("10.0.0.2:40002")]
			if len(u.Chunks) != 0 || len(u.ServerData) != 0 || len(u.Holes) != 2 || u.Holes[0].Offset != 0 || u.Holes[1].Offset != 0 {
				t.Fatalf("unkeyed session: %d chunks, %d server bytes, holes %+v", len(u.Chunks), len(u.ServerData), u.Holes)
			}

			// The plain session: unchanged.
			p, rp := got[netip.MustParseAddrPort("10.0.0.3:40003")], raw[netip.MustParseAddrPort("10.0.0.3:40003")]
			if fmt.Sprintf("%+v", p) != fmt.Sprintf("%+v", rp) {
				t.Fatalf("plain session changed:\n%+v\nwant\n%+v", p, rp)
			}

			st := ts.Stats()
			if st.Sessions != 3 || st.TLS != 2 || st.Decrypted != 1 || st.NoKeys != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestSinkHole: a client segment missing from the capture stops the
// client's decryption there (its records and their sequence numbers are
// lost): the plaintext before it comes out, the rest of the client stream
// is one hole at the end of that plaintext, and the server's plaintext is
// whole.
func TestSinkHole(t *testing.T) {
	run := runTLS(t, tls.VersionTLS13, [][2]int{{300, 5000}, {20000, 10}, {7, 400}})
	pkts := run.packets("10.0.0.1:40001", "10.0.0.9:443")
	// Drop the tenth client segment with data: inside the 20000-byte
	// request.
	n := 0
	for i, p := range pkts {
		if p.Src.Port() == 40001 && len(p.Payload) > 0 {
			if n++; n == 10 {
				pkts = append(pkts[:i:i], pkts[i+1:]...)
				break
			}
		}
	}
	frames, err := rt.Frames(rt.LinkEthernet, pkts)
	if err != nil {
		t.Fatal(err)
	}
	kl, err := tlsdecrypt.ParseKeyLog(bytes.NewReader(run.keylog), "keys")
	if err != nil {
		t.Fatal(err)
	}
	var s *session.Session
	var res tlsdecrypt.Result
	ts := tlssession.New(session.Collect(func(x *session.Session) { s = x }), kl)
	ts.OnResult = func(_ *session.Head, r tlsdecrypt.Result) { res = r }
	b := session.NewBuilder(session.Config{ServerDataLimit: 1 << 30}, ts)
	src, err := capture.NewSource(bytes.NewReader(rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, frames)), "hole.pcap")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ReadFrom(capture.NewReader(src, "hole.pcap")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if res.Status != tlsdecrypt.StatusHole || ts.Stats().Holes != 1 {
		t.Fatalf("status %v (%v), stats %+v", res.Status, res.Err, ts.Stats())
	}
	var client []byte
	for _, c := range s.Chunks {
		client = append(client, c.Data...)
	}
	sent := bytes.Join(run.req, nil)
	if len(client) == 0 || len(client) >= len(sent) || !bytes.Equal(client, sent[:len(client)]) {
		t.Fatalf("client plaintext: %d bytes, want a proper prefix of the %d sent", len(client), len(sent))
	}
	if !bytes.Equal(s.ServerData, bytes.Join(run.resp, nil)) {
		t.Fatalf("server plaintext: %d bytes, want %d", len(s.ServerData), len(bytes.Join(run.resp, nil)))
	}
	if len(s.Holes) != 1 || s.Holes[0].Server || s.Holes[0].Offset != int64(len(client)) || s.Holes[0].Len <= 0 {
		t.Fatalf("holes %+v, want one client hole at plaintext offset %d", s.Holes, len(client))
	}
	if s.ClientBytes != int64(len(client))+s.Holes[0].Len {
		t.Fatalf("ClientBytes %d, want the plaintext and the hole", s.ClientBytes)
	}
}

// TestSinkClientCloseNotify: a client that sent close_notify (crypto/tls's
// Close) closed the session first, even where the server's FIN is
// captured before the client's; without its close_notify, or where the
// server's close_notify came first, the server did.
func TestSinkClientCloseNotify(t *testing.T) {
	run := runTLS(t, tls.VersionTLS13, [][2]int{{300, 5000}})
	kl, err := tlsdecrypt.ParseKeyLog(bytes.NewReader(run.keylog), "keys")
	if err != nil {
		t.Fatal(err)
	}
	// The client's close_notify is its last record, after the last answer.
	lastServer := 0
	for i, e := range run.events {
		if !e.client {
			lastServer = i
		}
	}
	if lastServer == len(run.events)-1 {
		t.Fatal("the run has no client record after the last answer (close_notify)")
	}
	without := run
	without.events = run.events[:lastServer+1]
	build := func(r tlsRun, serverFirst, decrypt bool) session.End {
		t.Helper()
		c := r.conv("10.0.0.1:40001", "10.0.0.9:443")
		if serverFirst {
			c.CloseServer()
		} else {
			c.CloseClient()
		}
		frames, err := rt.Frames(rt.LinkEthernet, c.Packets())
		if err != nil {
			t.Fatal(err)
		}
		var s *session.Session
		var sink session.Sink = session.Collect(func(x *session.Session) { s = x })
		if decrypt {
			sink = tlssession.New(sink, kl)
		}
		b := session.NewBuilder(session.Config{ServerDataLimit: 1 << 30}, sink)
		src, err := capture.NewSource(bytes.NewReader(rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, frames)), "close.pcap")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ReadFrom(capture.NewReader(src, "close.pcap")); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if s == nil {
			t.Fatal("no session")
		}
		return s.End
	}
	for _, c := range []struct {
		name                 string
		run                  tlsRun
		serverFirst, decrypt bool
		want                 session.End
	}{
		{"close_notify, then the server's FIN first", run, true, true, session.EndClientFIN},
		{"the same as TCP says it", run, true, false, session.EndServerFIN},
		{"close_notify, the client's FIN first", run, false, true, session.EndClientFIN},
		{"no close_notify, the server's FIN first", without, true, true, session.EndServerFIN},
	} {
		if got := build(c.run, c.serverFirst, c.decrypt); got != c.want {
			t.Errorf("%s: end %s, want %s", c.name, got, c.want)
		}
	}
}

// TestSinkResponseLimit: with the Builder keeping the whole server stream
// and session.LimitServer after the sink (as cmd/tcopy-tun composes them),
// the plaintext answer is cut at the limit but every request still waits
// for the whole plaintext answer before it (ServerBytesBefore as without
// a limit). The Builder's own limit before the sink would lose the records
// past it, and with them what the later requests waited for.
func TestSinkResponseLimit(t *testing.T) {
	sizes := [][2]int{{300, 5000}, {20000, 10}, {7, 40000}, {9, 3}}
	run := runTLS(t, tls.VersionTLS13, sizes)
	frames, err := rt.Frames(rt.LinkEthernet, run.packets("10.0.0.1:40001", "10.0.0.9:443"))
	if err != nil {
		t.Fatal(err)
	}
	kl, err := tlsdecrypt.ParseKeyLog(bytes.NewReader(run.keylog), "keys")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 1000
	build := func(builderLimit int64, after bool) *session.Session {
		var s *session.Session
		var next session.Sink = session.Collect(func(x *session.Session) { s = x })
		if after {
			next = session.LimitServer(next, limit)
		}
		b := session.NewBuilder(session.Config{ServerDataLimit: builderLimit}, tlssession.New(next, kl))
		src, err := capture.NewSource(bytes.NewReader(rt.Pcap(rt.PcapOptions{LinkType: rt.LinkEthernet}, frames)), "limit.pcap")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ReadFrom(capture.NewReader(src, "limit.pcap")); err != nil {
			t.Fatal(err)
		}
		b.Close()
		return s
	}
	// What each request waited for: the plaintext answers before it.
	sbbs := func(s *session.Session) []int64 {
		var out []int64
		for _, c := range s.Chunks {
			if n := len(out); n == 0 || out[n-1] != c.ServerBytesBefore {
				out = append(out, c.ServerBytesBefore)
			}
		}
		return out
	}
	want := []int64{0, 5000, 5010, 45010}
	s := build(1<<30, true)
	if got := sbbs(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("limit after the sink: the requests waited for %v plaintext bytes, want %v", got, want)
	}
	if len(s.ServerData) != limit || s.Flags&session.ServerCut == 0 || s.ServerBytes != 45013 {
		t.Errorf("limit after the sink: %d server bytes kept (flags %s) of %d, want %d kept, cut", len(s.ServerData), s.Flags, s.ServerBytes, limit)
	}
	if got := sbbs(build(limit, false)); fmt.Sprint(got) == fmt.Sprint(want) {
		t.Errorf("the Builder's limit before the sink kept what the requests waited for (%v): the test shows nothing", got)
	}
}
