package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
	"github.com/tcopy-tun/tcopy-tun/replay/tlssession"
)

// tlsFlags are the TLS options of replay (README "TLS").
type tlsFlags struct {
	keylog   string // --tls-keylog: NSS key log
	target   string // --target-tls: auto, on, off
	ca       string // --target-ca: PEM roots for the target's certificate
	insecure bool   // --target-insecure
	cert     string // --target-cert / --target-key: client certificate
	key      string
}

const (
	targetTLSAuto = "auto"
	targetTLSOn   = "on"
	targetTLSOff  = "off"
)

// tlsRun decrypts captured TLS sessions (tlssession) and speaks TLS to the
// target (replay.Config.WrapConn). One per replay command.
type tlsRun struct {
	mode string
	keys *tlsdecrypt.KeyLog
	base *tls.Config // the target side: roots, client certificate
	warn func(format string, args ...any)

	// active: keys were given (--tls-keylog or a pcapng decryption
	// secrets block) or --target-tls on. Before that, in auto mode, a
	// session is dialed as it always was, without waiting to know whether
	// it is TLS.
	active atomic.Bool

	mu sync.Mutex
	// by holds what each session turned out to be, by its Head (the
	// runner sees the same Head the builder made), held weakly: an entry
	// goes when its Head is collected (the session is done with), so a
	// run of millions of sessions holds only those in flight.
	by    map[weak.Pointer[session.Head]]*tlsDecision
	sinks []*tlssession.Sink

	handshakes, handshakeFailed atomic.Int64
	handshakeNs, handshakeMax   atomic.Int64
	notReplayed                 atomic.Int64 // TLS sessions without keys, or unsupported
}

type tlsDecision struct {
	done chan struct{}
	r    tlsdecrypt.Result
}

// errTLSNoKeys fails a TLS session that cannot be decrypted: its captured
// records are useless to a new handshake, and a plaintext target would
// get garbage.
var errTLSNoKeys = errors.New("not replayed")

// newTLSRun reads the key log and the target's TLS material. Decryption is
// always in the replay's path: a pcapng may bring its own secrets, and a
// TLS session without keys must not be sent as opaque records.
func newTLSRun(f *tlsFlags) (*tlsRun, error) {
	t := &tlsRun{mode: f.target, keys: tlsdecrypt.NewKeyLog(), by: make(map[weak.Pointer[session.Head]]*tlsDecision)}
	if f.keylog != "" {
		fh, err := os.Open(f.keylog)
		if err != nil {
			return nil, fmt.Errorf("--tls-keylog: %w", err)
		}
		err = t.keys.Read(fh, f.keylog)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("--tls-keylog: %w", err)
		}
		t.active.Store(true)
	}
	if f.target == targetTLSOn {
		t.active.Store(true)
	}
	t.base = &tls.Config{InsecureSkipVerify: f.insecure} //nolint:gosec // the user asked for it (--target-insecure): test targets have self-made certificates
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--target-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--target-ca %s: no PEM certificate in it", f.ca)
		}
		t.base.RootCAs = pool
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--target-cert %s / --target-key %s: %w", f.cert, f.key, err)
		}
		t.base.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// watchSecrets feeds a pcapng's decryption secrets blocks to the key log.
func (t *tlsRun) watchSecrets(src capture.Source) {
	sh, ok := src.(capture.SecretsHandler)
	if !ok {
		return
	}
	sh.OnSecrets(func(s capture.Secrets) {
		if s.Type != capture.SecretsTLSKeyLog {
			return
		}
		if err := t.keys.Read(bytes.NewReader(s.Data), "pcapng decryption secrets block"); err != nil {
			t.warn("%v", err)
		}
		t.active.Store(true)
	})
}

func (t *tlsRun) decision(h *session.Head) *tlsDecision {
	k := weak.Make(h)
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.by[k]
	if d == nil {
		d = &tlsDecision{done: make(chan struct{})}
		t.by[k] = d
		runtime.AddCleanup(h, t.forget, k)
	}
	return d
}

// known returns h's decision if one was made or is awaited, else nil.
func (t *tlsRun) known(h *session.Head) *tlsDecision {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.by[weak.Make(h)]
}

// forget drops the entry of a Head that was collected.
func (t *tlsRun) forget(k weak.Pointer[session.Head]) {
	t.mu.Lock()
	delete(t.by, k)
	t.mu.Unlock()
}

// wrapSink puts the decryption between the session builder and the runner.
func (t *tlsRun) wrapSink(next session.Sink) session.Sink {
	s := tlssession.New(next, t.keys)
	s.OnDecided = func(h *session.Head, r tlsdecrypt.Result) {
		if r.Status == tlsdecrypt.StatusNotTLS && !t.active.Load() {
			// Nobody waits for a plain session's decision when no TLS
			// is asked for: plaintext replays keep no entry.
			return
		}
		d := t.decision(h)
		d.r = r
		close(d.done)
	}
	t.mu.Lock()
	t.sinks = append(t.sinks, s)
	t.mu.Unlock()
	return s
}

// wrapConn is replay.Config.WrapConn: it waits until the capture showed
// whether the session is TLS, then shakes hands with the target as the
// captured client did (its SNI and ALPN) or passes the conn on.
func (t *tlsRun) wrapConn(ctx context.Context, info *replay.SessionInfo, c net.Conn) (net.Conn, error) {
	var d *tlsDecision
	if !t.active.Load() {
		// No keys and no TLS asked for: a session is dialed at once, as
		// without TLS support; one already known to be TLS is not
		// replayed (its plaintext is unknown), and counted.
		if d = t.known(info.Head); d == nil {
			return c, nil
		}
		select {
		case <-d.done:
		default:
			return c, nil
		}
	} else {
		d = t.decision(info.Head)
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("TLS: the capture had not shown whether the session is TLS by the dial timeout: %w", context.Cause(ctx))
		}
	}
	r := d.r
	isTLS := r.Status != tlsdecrypt.StatusNotTLS && r.Status != tlsdecrypt.StatusUndecided
	switch {
	case t.mode == targetTLSOff:
		if isTLS && !canReplay(r) {
			t.notReplayed.Add(1)
			return nil, fmt.Errorf("TLS session (client random %x): %w: %v", r.ClientRandom, errTLSNoKeys, r.Err)
		}
		return c, nil
	case !isTLS && t.mode != targetTLSOn:
		return c, nil
	case isTLS && !canReplay(r):
		t.notReplayed.Add(1)
		return nil, fmt.Errorf("TLS session (client random %x): %w: %v", r.ClientRandom, errTLSNoKeys, r.Err)
	}
	cfg := t.base.Clone()
	cfg.ServerName = r.SNI
	if cfg.ServerName == "" {
		cfg.ServerName = info.Target.Addr().String()
	}
	if r.ALPN != "" {
		cfg.NextProtos = []string{r.ALPN}
	} else {
		cfg.NextProtos = r.ALPNOffered
	}
	if isTLS && r.Version >= tls.VersionTLS12 {
		// As captured: a TLS 1.2 session stays TLS 1.2 (a target that
		// no longer speaks it fails the handshake, and says so).
		cfg.MinVersion, cfg.MaxVersion = r.Version, r.Version
	}
	tc := tls.Client(c, cfg)
	start := time.Now()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.handshakeFailed.Add(1)
		return nil, fmt.Errorf("TLS handshake with %s (SNI %q): %w", info.Target, cfg.ServerName, err)
	}
	ns := time.Since(start).Nanoseconds()
	t.handshakes.Add(1)
	t.handshakeNs.Add(ns)
	for {
		m := t.handshakeMax.Load()
		if ns <= m || t.handshakeMax.CompareAndSwap(m, ns) {
			break
		}
	}
	return &tlsConn{tc, c}, nil
}

// tlsConn is the replay's TLS conn: the engine half-closes and aborts
// through it.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

// CloseWrite sends close_notify and then the FIN, as the captured client
// did (tls.Conn.CloseWrite sends only the alert: a server waiting for the
// FIN would wait out the replay's close timeout).
func (c *tlsConn) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		if e := cw.CloseWrite(); err == nil {
			err = e
		}
	}
	return err
}

// Abort resets the connection underneath, where it can.
func (c *tlsConn) Abort() error {
	if ab, ok := c.raw.(interface{ Abort() error }); ok {
		return ab.Abort()
	}
	return c.raw.Close()
}

// canReplay: some application data could be decrypted (keys found, the
// suite known); a session cut later is replayed up to its hole.
func canReplay(r tlsdecrypt.Result) bool {
	switch r.Status {
	case tlsdecrypt.StatusNoKeys, tlsdecrypt.StatusUnsupported:
		return false
	case tlsdecrypt.StatusFailed, tlsdecrypt.StatusHole:
		return r.Records[0]+r.Records[1] > 0
	}
	return true
}

// tlsSummary is the report's "tls" member and the summary's tls line.
type tlsSummary struct {
	Sessions          int64   `json:"sessions"`  // TLS sessions in the capture
	Decrypted         int64   `json:"decrypted"` // every record opened
	NoKeys            int64   `json:"no_keys"`
	Unsupported       int64   `json:"unsupported"`
	Holes             int64   `json:"holes"`
	Failed            int64   `json:"failed"`
	Resumed           int64   `json:"resumed"`
	NotReplayed       int64   `json:"not_replayed"` // sessions failed before their first turn: no keys or unsupported
	Handshakes        int64   `json:"target_handshakes"`
	HandshakeFailed   int64   `json:"target_handshakes_failed"`
	HandshakeMeanSecs float64 `json:"target_handshake_mean_seconds"`
	HandshakeMaxSecs  float64 `json:"target_handshake_max_seconds"`
}

func (t *tlsRun) summary() tlsSummary {
	var s tlsSummary
	t.mu.Lock()
	for _, k := range t.sinks {
		st := k.Stats()
		s.Sessions += st.TLS
		s.Decrypted += st.Decrypted
		s.NoKeys += st.NoKeys
		s.Unsupported += st.Unsupported
		s.Holes += st.Holes
		s.Failed += st.Failed
		s.Resumed += st.Resumed
	}
	t.mu.Unlock()
	s.NotReplayed = t.notReplayed.Load()
	s.Handshakes = t.handshakes.Load()
	s.HandshakeFailed = t.handshakeFailed.Load()
	if s.Handshakes > 0 {
		s.HandshakeMeanSecs = time.Duration(t.handshakeNs.Load() / s.Handshakes).Seconds()
	}
	s.HandshakeMaxSecs = time.Duration(t.handshakeMax.Load()).Seconds()
	return s
}

func (s tlsSummary) writeText(w io.Writer) {
	if s.Sessions == 0 && s.Handshakes == 0 && s.HandshakeFailed == 0 {
		return
	}
	fmt.Fprintf(w, "tls:         %d TLS sessions captured: %d decrypted, %d without keys, %d unsupported, %d cut (hole), %d failed to decrypt, %d resumed; %d not replayed (no keys or unsupported)\n",
		s.Sessions, s.Decrypted, s.NoKeys, s.Unsupported, s.Holes, s.Failed, s.Resumed, s.NotReplayed)
	if s.Handshakes+s.HandshakeFailed > 0 {
		fmt.Fprintf(w, "tls target:  %d handshakes (%d failed), mean %v, max %v (not in the turns' times)\n",
			s.Handshakes, s.HandshakeFailed,
			time.Duration(s.HandshakeMeanSecs*1e9).Round(time.Microsecond), time.Duration(s.HandshakeMaxSecs*1e9).Round(time.Microsecond))
	}
}

// validTargetTLS checks --target-tls and its companions.
func (f *tlsFlags) validate() error {
	switch f.target {
	case targetTLSAuto, targetTLSOn, targetTLSOff:
	default:
		return fmt.Errorf("--target-tls %q: want auto, on or off", f.target)
	}
	if (f.cert == "") != (f.key == "") {
		return errors.New("--target-cert and --target-key go together")
	}
	if f.insecure && f.ca != "" {
		return errors.New("--target-insecure and --target-ca exclude each other")
	}
	return nil
}
