package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// TLS captures.
//
// A TLS workload's capture is the plaintext workload's sessions spoken
// through real crypto/tls (TLS 1.3, the Go defaults) between a client and
// a server in this process, over an in-memory pipe that records who wrote
// which bytes in which order. Those records become the captured segments
// (Conv), with the server's think time before each answer; the client's
// secrets go to a key log beside the capture (NSS format, as curl's
// SSLKEYLOGFILE). The plaintext is the bench convention, so the TLS target
// (serve -tls-cert) answers it identically and counts plaintext bytes.

// benchServerName is the captured SNI and the certificate's name: the
// replay verifies the target's certificate against it (--target-ca).
const benchServerName = "bench.tcopy-tun.test"

// keylogPath is where generate writes a TLS capture's key log.
func keylogPath(capture string) string { return capture + ".keylog" }

// benchCert returns the bench's certificate and key files in dir (the
// target's, and the CA the replay trusts), creating them on first use: a
// self-signed ECDSA P-256 certificate for benchServerName.
func benchCert(dir string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "bench-cert.pem"), filepath.Join(dir, "bench-key.pem")
	if _, err := os.Stat(keyFile); err == nil {
		return certFile, keyFile, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("bench certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: benchServerName}, DNSNames: []string{benchServerName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("bench certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("bench certificate: %w", err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", fmt.Errorf("bench certificate: %w", err)
	}
	// The key last: its presence says both files are whole.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", fmt.Errorf("bench certificate: %w", err)
	}
	return certFile, keyFile, nil
}

// wireEvent is one write on the pipe: who wrote which bytes.
type wireEvent struct {
	client bool
	b      []byte
}

// wirePipe is an in-memory, unbounded, full-duplex byte pipe that logs
// every write in order. Unlike net.Pipe a write never waits for the peer
// to read (TLS 1.3 servers write session tickets the client reads only
// with its answer), and the log order is causal: a write is logged before
// the peer can read it.
type wirePipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    [2][]byte // bytes written by side i, not yet read by the other
	closed [2]bool
	log    []wireEvent
}

func newWirePipe() *wirePipe {
	p := &wirePipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// take returns the events logged since the last take.
func (p *wirePipe) take() []wireEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.log
	p.log = nil
	return ev
}

// wireEnd is one side of a wirePipe (0 the client, 1 the server) as a
// net.Conn.
type wireEnd struct {
	p    *wirePipe
	side int
}

var errWireClosed = errors.New("wire pipe: closed")

func (e wireEnd) Write(b []byte) (int, error) {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed[e.side] {
		return 0, errWireClosed
	}
	p.buf[e.side] = append(p.buf[e.side], b...)
	p.log = append(p.log, wireEvent{client: e.side == 0, b: bytes.Clone(b)})
	p.cond.Broadcast()
	return len(b), nil
}

func (e wireEnd) Read(b []byte) (int, error) {
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	from := 1 - e.side
	for len(p.buf[from]) == 0 && !p.closed[from] && !p.closed[e.side] {
		p.cond.Wait()
	}
	if len(p.buf[from]) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf[from])
	p.buf[from] = p.buf[from][n:]
	return n, nil
}

func (e wireEnd) Close() error {
	e.p.mu.Lock()
	e.p.closed[e.side] = true
	e.p.cond.Broadcast()
	e.p.mu.Unlock()
	return nil
}

func (e wireEnd) LocalAddr() net.Addr              { return wireAddr{} }
func (e wireEnd) RemoteAddr() net.Addr             { return wireAddr{} }
func (e wireEnd) SetDeadline(time.Time) error      { return nil }
func (e wireEnd) SetReadDeadline(time.Time) error  { return nil }
func (e wireEnd) SetWriteDeadline(time.Time) error { return nil }

type wireAddr struct{}

func (wireAddr) Network() string { return "wire" }
func (wireAddr) String() string  { return "wire" }

// tlsGen makes the TLS sessions of one capture.
type tlsGen struct {
	server *tls.Config
	client *tls.Config
	keylog *bufio.Writer
	file   *os.File
}

// newTLSGen loads the bench certificate from dir and opens the key log.
func newTLSGen(dir, keylog string) (*tlsGen, error) {
	certFile, keyFile, err := benchCert(dir)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("bench certificate: %w", err)
	}
	f, err := os.Create(keylog)
	if err != nil {
		return nil, fmt.Errorf("key log: %w", err)
	}
	g := &tlsGen{file: f, keylog: bufio.NewWriterSize(f, 64<<10)}
	g.server = &tls.Config{Certificates: []tls.Certificate{cert}}
	// The generator's client does not verify (the replay does, against
	// the target); it logs its secrets as curl does with SSLKEYLOGFILE.
	// No session cache: every session is a full handshake.
	g.client = &tls.Config{ServerName: benchServerName, InsecureSkipVerify: true, KeyLogWriter: g.keylog}
	return g, nil
}

func (g *tlsGen) close() error {
	err := g.keylog.Flush()
	if cerr := g.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// session speaks one session's requests and answers through TLS and lays
// the bytes on the wire out on c: think before each answer, clientThink
// between requests. close: the server closes after the last answer
// (Connection: close, with its close_notify); otherwise the client closes
// (close_notify, then its FIN).
func (g *tlsGen) session(c *replaytest.Conv, reqs, resps [][]byte, think, clientThink time.Duration, close bool) error {
	p := newWirePipe()
	cli, srv := wireEnd{p, 0}, wireEnd{p, 1}
	done := make(chan error, 1)
	go func() {
		sc := tls.Server(srv, g.server)
		defer srv.Close()
		for i, r := range reqs {
			if _, err := io.ReadFull(sc, make([]byte, len(r))); err != nil {
				done <- fmt.Errorf("server, request %d: %w", i, err)
				return
			}
			if _, err := sc.Write(resps[i]); err != nil {
				done <- fmt.Errorf("server, answer %d: %w", i, err)
				return
			}
		}
		if close {
			done <- sc.Close() // close_notify
			return
		}
		_, err := io.Copy(io.Discard, sc) // until the client's close_notify
		done <- err
	}()
	tc := tls.Client(cli, g.client)
	fail := func(err error) error {
		cli.Close()
		srv.Close()
		<-done
		return err
	}
	if err := tc.Handshake(); err != nil {
		return fail(fmt.Errorf("handshake: %w", err))
	}
	lay(c, p.take(), 0)
	for i, r := range reqs {
		if i > 0 {
			c.Wait(clientThink)
		}
		if _, err := tc.Write(r); err != nil {
			return fail(fmt.Errorf("request %d: %w", i, err))
		}
		if _, err := io.ReadFull(tc, make([]byte, len(resps[i]))); err != nil {
			return fail(fmt.Errorf("answer %d: %w", i, err))
		}
		lay(c, p.take(), think)
	}
	if close {
		if _, err := io.Copy(io.Discard, tc); err != nil { // the server's close_notify
			return fail(fmt.Errorf("close: %w", err))
		}
	} else if err := tc.Close(); err != nil {
		return fail(fmt.Errorf("close: %w", err))
	}
	cli.Close()
	if err := <-done; err != nil {
		return fmt.Errorf("server: %w", err)
	}
	lay(c, p.take(), 0)
	return nil
}

// lay writes logged events onto the conversation, waiting think before
// the first server write that follows a client write (the server's think
// time before an answer).
func lay(c *replaytest.Conv, ev []wireEvent, think time.Duration) {
	afterClient := false
	for _, e := range ev {
		if e.client {
			c.SendBytes(e.b)
			afterClient = true
			continue
		}
		if afterClient && think > 0 {
			c.Wait(think)
			think = 0
		}
		afterClient = false
		c.ReplyBytes(e.b)
	}
}
