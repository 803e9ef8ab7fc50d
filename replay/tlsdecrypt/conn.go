package tlsdecrypt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Dir is a direction of a connection.
type Dir uint8

const (
	ClientToServer Dir = 0
	ServerToClient Dir = 1
)

func (d Dir) String() string {
	if d == ClientToServer {
		return "client"
	}
	return "server"
}

// Piece is decrypted application data of one direction.
type Piece struct {
	Dir Dir
	// Off is the plaintext offset of Data[0] in the direction's
	// application data (from 0, dense: pieces of a direction follow each
	// other without gaps).
	Off int64
	// Time is the capture time of the stream piece that carried the first
	// byte of the record.
	Time time.Time
	// RecordOff is the ciphertext stream offset (as fed) where the record
	// that carried Data began, and RecordEnd where it ended: ciphertext
	// bytes before RecordOff carried only plaintext before Off.
	RecordOff, RecordEnd int64
	// Data is owned by the receiver.
	Data []byte
}

// Status is how far a connection could be decrypted. The zero value is
// StatusUndecided.
type Status uint8

const (
	// StatusUndecided: no ServerHello seen yet.
	StatusUndecided Status = iota
	// StatusNotTLS: the client's first bytes are not a TLS ClientHello.
	StatusNotTLS
	// StatusDecrypting: keys were found and every record so far opened.
	StatusDecrypting
	// StatusNoKeys: the key log has no secrets for the client random.
	StatusNoKeys
	// StatusUnsupported: a version (SSL 3.0 to TLS 1.1), cipher suite or
	// feature (renegotiation) this package does not decrypt.
	StatusUnsupported
	// StatusHole: a direction's stream has a gap; that direction stops
	// (record boundaries and sequence numbers are lost).
	StatusHole
	// StatusFailed: a record did not decrypt (wrong key, damaged capture)
	// or a handshake message did not parse.
	StatusFailed
)

var statusNames = [...]string{"undecided", "not-tls", "decrypting", "no-keys", "unsupported", "hole", "failed"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", s)
}

// Sentinel errors of Result.Err, for errors.Is.
var (
	ErrNotTLS      = errors.New("not a TLS connection")
	ErrNoKeys      = errors.New("no keys for the session")
	ErrUnsupported = errors.New("not supported")
	ErrHole        = errors.New("gap in the stream")
	ErrFailed      = errors.New("decryption failed")
)

// Result describes a connection after (or during) decryption.
type Result struct {
	Status Status
	// Err says why Status is not Undecided or Decrypting; it wraps one of
	// the sentinel errors. The first failure is kept.
	Err error

	Version      uint16 // negotiated: 0x0303 TLS 1.2, 0x0304 TLS 1.3
	Suite        uint16
	ClientRandom []byte
	SNI          string
	ALPNOffered  []string
	ALPN         string // chosen by the server
	Resumed      bool   // session resumption (TLS 1.2 session ID or ticket, TLS 1.3 PSK)
	HelloRetry   bool
	// EncryptThenMAC: a TLS 1.2 CBC session with encrypt_then_mac (RFC
	// 7366) in both hellos.
	EncryptThenMAC bool
	// Records counts records opened per direction; Bytes the plaintext
	// application bytes; KeyUpdates the key updates followed.
	Records, Bytes, KeyUpdates [2]int64
	// EarlyDataSkipped counts client records of TLS 1.3 early data (0-RTT)
	// skipped: their key is not used.
	EarlyDataSkipped int64
	// Ended is set for a direction that sent an alert (close_notify or
	// fatal); Alert is its level and description, AlertTime when the
	// record carrying it was captured (who closed the TLS connection
	// first, which the TCP FINs may not say).
	Ended     [2]bool
	Alert     [2][2]byte
	AlertTime [2]time.Time
}

// ClosedNotify reports whether direction d ended with a close_notify alert.
func (r *Result) ClosedNotify(d Dir) bool {
	return r.Ended[d] && r.Alert[d][1] == alertCloseNotify
}

// mark is the capture time of the stream bytes from off on.
type mark struct {
	off int64
	t   time.Time
}

// half is one direction's state.
type half struct {
	next   int64  // next stream offset expected
	buf    []byte // bytes from bufOff not yet parsed into records
	base   []byte // buf's backing array, from its start
	bufOff int64
	marks  []mark
	stop   bool // no more input used (hole, failure, alert)

	cipher  recordCipher // nil: records are plaintext
	pending recordCipher // TLS 1.2: becomes cipher at ChangeCipherSpec
	seq     uint64
	secret  []byte // TLS 1.3: current traffic secret (KeyUpdate)
	appKeys bool   // TLS 1.3: application keys installed

	hs     []byte // handshake message bytes not yet whole
	ptOff  int64
	sawAny bool
}

// Conn decrypts one TCP connection from its two byte streams. It is not
// safe for concurrent use.
type Conn struct {
	keys Keys
	emit func(Piece)
	h    [2]half
	res  Result

	ch          *clientHello
	suite       *suite
	sec         Secrets
	earlyOK     bool // TLS 1.3 early data offered and not yet ruled out
	serverHello bool
	// early are server pieces fed before the ClientHello was whole (a
	// caller's client bytes may lag); earlyBytes bounds them.
	early      []earlyPiece
	earlyBytes int
}

type earlyPiece struct {
	off  int64
	t    time.Time
	data []byte
}

// maxEarlyServer bounds the server bytes held before the ClientHello; a
// server that sends more first is not TLS.
const maxEarlyServer = 1 << 16

// NewConn returns a decryptor that looks the connection's secrets up in
// keys and hands decrypted application data to emit, in the order it is
// decrypted (each direction in order).
func NewConn(keys Keys, emit func(Piece)) *Conn {
	return &Conn{keys: keys, emit: emit}
}

// Used is the stream offset of direction d up to which whole records have
// been handled (decrypted, or parsed in the clear); bytes beyond it were
// buffered, or dropped once the direction stopped.
func (c *Conn) Used(d Dir) int64 {
	if d > ServerToClient {
		return 0
	}
	return c.h[d].bufOff
}

// Stopped reports whether direction d takes no more input (a hole, a
// failure, an alert, or no keys): the caller may stop feeding it.
func (c *Conn) Stopped(d Dir) bool { return d > ServerToClient || c.h[d].stop }

// Result returns the connection's state so far. Its slices are shared.
func (c *Conn) Result() Result { return c.res }

// fail records the first failure and stops the directions given.
func (c *Conn) fail(st Status, err error, dirs ...Dir) {
	if c.res.Err == nil {
		c.res.Status, c.res.Err = st, err
	}
	for _, d := range dirs {
		c.h[d].stop = true
		c.h[d].buf, c.h[d].hs, c.h[d].marks = nil, nil, nil
	}
}

// decrypting marks the keys found, unless a direction has already failed
// (its failure stays the status).
func (c *Conn) decrypting() {
	if c.res.Err == nil {
		c.res.Status = StatusDecrypting
	}
}

func (c *Conn) failBoth(st Status, err error) { c.fail(st, err, ClientToServer, ServerToClient) }

// Feed hands the connection bytes of direction d at stream offset off
// (offsets from 0 at the direction's first byte), captured at t. Pieces of
// a direction come in stream order; bytes already fed are ignored (a
// retransmission), a piece beyond the next expected offset is a hole. data
// is not kept after Feed returns. The two directions may be fed with some
// lag between them: server bytes that come before the ClientHello is whole
// are held (up to 64 KiB: a server that says more first is not TLS).
func (c *Conn) Feed(d Dir, off int64, t time.Time, data []byte) {
	if d > ServerToClient {
		return
	}
	h := &c.h[d]
	if h.stop || len(data) == 0 {
		return
	}
	if off+int64(len(data)) <= h.next {
		return
	}
	if off < h.next {
		data = data[h.next-off:]
		off = h.next
	}
	if off > h.next {
		c.Hole(d, off-h.next)
		return
	}
	if d == ServerToClient && c.ch == nil {
		// Server bytes before a whole ClientHello: held until it is (the
		// client's bytes may be fed late), unless there are too many.
		c.early = append(c.early, earlyPiece{off, t, append([]byte(nil), data...)})
		h.next = off + int64(len(data))
		if c.earlyBytes += len(data); c.earlyBytes > maxEarlyServer {
			c.failBoth(StatusNotTLS, fmt.Errorf("%w: the server sent %d bytes before a client hello", ErrNotTLS, c.earlyBytes))
		}
		return
	}
	if len(h.buf) == 0 {
		h.bufOff = off
	}
	if len(h.buf)+len(data) > cap(h.buf) {
		// Reallocate from the start of the unparsed bytes.
		nb := make([]byte, len(h.buf), max(2*(len(h.buf)+len(data)), 4096))
		copy(nb, h.buf)
		h.buf, h.base = nb, nb[:0]
	}
	h.buf = append(h.buf, data...)
	if n := len(h.marks); n == 0 || !h.marks[n-1].t.Equal(t) {
		h.marks = append(h.marks, mark{off, t})
	}
	h.next = off + int64(len(data))
	c.records(d)
}

// flushEarly feeds the server bytes held before the ClientHello, right
// after it: where they came in the capture, relative to the client's
// later records.
func (c *Conn) flushEarly() {
	if len(c.early) == 0 {
		return
	}
	early := c.early
	c.early, c.earlyBytes = nil, 0
	c.h[ServerToClient].next = early[0].off
	for _, p := range early {
		c.Feed(ServerToClient, p.off, p.t, p.data)
	}
}

// Hole reports n bytes of direction d missing from the capture at the next
// expected offset.
func (c *Conn) Hole(d Dir, n int64) {
	if d > ServerToClient || n <= 0 || c.h[d].stop {
		return
	}
	if c.res.Status == StatusUndecided && c.ch == nil {
		c.failBoth(StatusHole, fmt.Errorf("%w: %d %s bytes missing before the handshake", ErrHole, n, d))
		return
	}
	c.fail(StatusHole, fmt.Errorf("%w: %d %s bytes missing at stream offset %d", ErrHole, n, d, c.h[d].next), d)
	c.h[d].next += n
}

// timeAt is the capture time of stream offset off (buffered).
func (h *half) timeAt(off int64) time.Time {
	t := h.marks[0].t
	for _, m := range h.marks {
		if m.off > off {
			break
		}
		t = m.t
	}
	return t
}

// records parses and handles the whole records buffered for d.
func (c *Conn) records(d Dir) {
	h := &c.h[d]
	for !h.stop && len(h.buf) >= 5 {
		typ, major := h.buf[0], h.buf[1]
		n := int(binary.BigEndian.Uint16(h.buf[3:]))
		if typ < recChangeCipherSpec || typ > recHeartbeat || major != 3 || n > maxCiphertext {
			if !h.sawAny && d == ClientToServer {
				c.failBoth(StatusNotTLS, fmt.Errorf("%w: the client's first bytes are not a TLS record", ErrNotTLS))
				return
			}
			c.fail(StatusFailed, fmt.Errorf("%w: %s stream offset %d: not a TLS record header (% x)", ErrFailed, d, h.bufOff, h.buf[:5]), d)
			return
		}
		if len(h.buf) < 5+n {
			break
		}
		rec := h.buf[:5+n]
		start := h.bufOff
		t := h.timeAt(start)
		h.buf = h.buf[5+n:]
		h.bufOff += int64(5 + n)
		c.record(d, rec, start, t)
		h.sawAny = true
	}
	if h.stop {
		return
	}
	// Forget the marks before the first buffered byte (keep the last one
	// at or before it). Both the marks and the buffer are moved to the
	// front only once at least half of them is spent, so that a stream
	// fed a byte at a time costs linear, not quadratic, time.
	i := 0
	for i+1 < len(h.marks) && h.marks[i+1].off <= h.bufOff {
		i++
	}
	if len(h.buf) == 0 {
		h.marks = h.marks[:0]
	} else if i > 0 && 2*i >= len(h.marks) {
		h.marks = append(h.marks[:0], h.marks[i:]...)
	} else if i > 0 {
		h.marks = h.marks[i:]
	}
	switch {
	case cap(h.base) > 4*maxCiphertext:
		// A buffer grown by one large piece is let go.
		h.buf = append([]byte(nil), h.buf...)
		h.base = h.buf[:0]
	case len(h.buf) == 0:
		h.buf = h.base[:0]
	case spent(h.base, h.buf) >= len(h.buf):
		// Each byte moved was paid for by a byte consumed.
		h.buf = append(h.base[:0], h.buf...)
	}
}

// spent is how many bytes of base's array lie before buf, a tail of it.
func spent(base, buf []byte) int { return cap(base) - cap(buf) }

// record handles one whole record rec (header and fragment) of direction
// d that began at stream offset start.
func (c *Conn) record(d Dir, rec []byte, start int64, t time.Time) {
	h := &c.h[d]
	hdr, frag := rec[:5], rec[5:]
	typ := hdr[0]
	if !h.sawAny && d == ClientToServer && typ != recHandshake {
		c.failBoth(StatusNotTLS, fmt.Errorf("%w: the client's first record is of type %d, not a handshake", ErrNotTLS, typ))
		return
	}
	if typ == recChangeCipherSpec {
		// TLS 1.2: the direction's records are encrypted from here on.
		// TLS 1.3: a middlebox-compatibility record, ignored.
		if h.pending != nil {
			h.cipher, h.pending, h.seq = h.pending, nil, 0
		}
		return
	}
	if h.cipher == nil {
		switch typ {
		case recHandshake:
			c.handshake(d, frag, false)
		case recAlert:
			c.alert(d, frag, t)
		case recApplicationData:
			if d == ClientToServer && c.ch != nil && c.ch.earlyData && !c.serverHello {
				c.res.EarlyDataSkipped++
				return
			}
			if c.res.Status == StatusDecrypting || c.res.Status == StatusUndecided {
				c.fail(StatusFailed, fmt.Errorf("%w: %s stream offset %d: application data before the keys are known", ErrFailed, d, start), d)
			}
			h.stop = true
		}
		return
	}
	frag = append([]byte(nil), frag...) // opened in place; rec is the stream buffer
	ptype, pt, err := h.cipher.open(h.seq, hdr, frag)
	if err != nil {
		if d == ClientToServer && c.earlyOK && !h.appKeys && errors.Is(err, errDecrypt) {
			// 0-RTT data (or EndOfEarlyData) under the early traffic
			// secret, which is not used: skip it.
			c.res.EarlyDataSkipped++
			return
		}
		c.fail(StatusFailed, fmt.Errorf("%w: %s record at stream offset %d (sequence %d): %v", ErrFailed, d, start, h.seq, err), d)
		return
	}
	if d == ClientToServer && !h.appKeys {
		c.earlyOK = false // the client is past its early data
	}
	h.seq++
	c.res.Records[d]++
	switch ptype {
	case recApplicationData:
		if c.suite.tls13 && !h.appKeys {
			c.fail(StatusFailed, fmt.Errorf("%w: %s record at stream offset %d: application data under handshake keys", ErrFailed, d, start), d)
			return
		}
		if len(pt) == 0 {
			return
		}
		p := Piece{Dir: d, Off: h.ptOff, Time: t, RecordOff: start, RecordEnd: start + int64(len(rec)), Data: pt}
		h.ptOff += int64(len(pt))
		c.res.Bytes[d] += int64(len(pt))
		if c.emit != nil {
			c.emit(p)
		}
	case recHandshake:
		c.handshake(d, pt, true)
	case recAlert:
		c.alert(d, pt, t)
	case recChangeCipherSpec, recHeartbeat:
	default:
		c.fail(StatusFailed, fmt.Errorf("%w: %s record at stream offset %d: content type %d", ErrFailed, d, start, ptype), d)
	}
}

func (c *Conn) alert(d Dir, b []byte, t time.Time) {
	h := &c.h[d]
	if len(b) >= 2 {
		c.res.Alert[d] = [2]byte{b[0], b[1]}
	}
	c.res.Ended[d] = true
	c.res.AlertTime[d] = t
	h.stop = true
	h.buf, h.hs, h.marks = nil, nil, nil
}

// maxHandshake bounds a handshake message kept whole. Larger ones
// (certificate chains) are only needed to be skipped, but for simplicity
// they are reassembled up to this size.
const maxHandshake = 1 << 18

// handshake handles handshake bytes of direction d (decrypted or not).
func (c *Conn) handshake(d Dir, b []byte, encrypted bool) {
	h := &c.h[d]
	if len(h.hs) > 0 {
		h.hs = append(h.hs, b...)
		b = h.hs
	}
	for !h.stop {
		if len(b) < 4 {
			break
		}
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if n > maxHandshake {
			c.fail(StatusFailed, fmt.Errorf("%w: %s handshake message of type %d claims %d bytes (limit %d)", ErrFailed, d, b[0], n, maxHandshake), d)
			return
		}
		if len(b) < 4+n {
			break
		}
		c.message(d, b[0], b[4:4+n], encrypted)
		b = b[4+n:]
	}
	if h.stop {
		return
	}
	h.hs = append(h.hs[:0:0], b...)
}

// message handles one whole handshake message.
func (c *Conn) message(d Dir, typ byte, body []byte, encrypted bool) {
	h := &c.h[d]
	if typ == hsClientHello || typ == hsServerHello {
		// The parsed hello keeps slices of its body, which may be the
		// stream buffer.
		body = append([]byte(nil), body...)
	}
	switch {
	case d == ClientToServer && typ == hsClientHello && !encrypted:
		ch, err := parseClientHello(body)
		if err != nil {
			if c.ch == nil {
				c.failBoth(StatusNotTLS, fmt.Errorf("%w: %v", ErrNotTLS, err))
			} else {
				c.failBoth(StatusFailed, fmt.Errorf("%w: second %v", ErrFailed, err))
			}
			return
		}
		if c.ch == nil {
			c.res.ClientRandom = ch.random
			c.res.SNI = ch.sni
			c.res.ALPNOffered = ch.alpn
		}
		c.ch = ch // a second hello (after HelloRetryRequest) replaces the first
		c.earlyOK = ch.earlyData
		c.flushEarly()
	case d == ClientToServer && c.ch == nil:
		c.failBoth(StatusNotTLS, fmt.Errorf("%w: the client's first handshake message is of type %d", ErrNotTLS, typ))
	case d == ServerToClient && typ == hsServerHello && !encrypted:
		c.serverHelloMsg(body)
	case typ == hsClientHello || typ == hsServerHello:
		c.failBoth(StatusUnsupported, fmt.Errorf("%w: renegotiation (an encrypted %s hello)", ErrUnsupported, d))
	case !encrypted:
		// TLS 1.2 plaintext handshake: Certificate, key exchange,
		// ServerHelloDone: nothing needed. A NewSessionTicket's master
		// secret is remembered for the sessions that resume with it.
		if typ == hsNewSessionTicket && d == ServerToClient && len(c.sec.Master) > 0 {
			if sk, ok := c.keys.(sessionKeys); ok {
				if t := parseTicket12(body); len(t) > 0 {
					sk.rememberSession("t"+string(t), c.sec.Master)
				}
			}
		}
	case c.suite == nil || !c.suite.tls13:
		// TLS 1.2 encrypted handshake: Finished, HelloRequest.
	case typ == hsEncryptedExtensions && d == ServerToClient:
		alpn, early, err := parseEncryptedExtensions(body)
		if err != nil {
			c.fail(StatusFailed, fmt.Errorf("%w: %v", ErrFailed, err), d)
			return
		}
		c.res.ALPN = alpn
		if !early {
			c.earlyOK = false
		}
	case typ == hsFinished && !h.appKeys:
		var secret []byte
		if d == ClientToServer {
			secret = c.sec.ClientTraffic0
		} else {
			secret = c.sec.ServerTraffic0
		}
		c.install13(d, secret, true)
	case typ == hsKeyUpdate && h.appKeys:
		c.res.KeyUpdates[d]++
		c.install13(d, nextSecret13(c.suite, h.secret), true)
	}
}

// install13 makes secret the current TLS 1.3 traffic secret of d.
func (c *Conn) install13(d Dir, secret []byte, app bool) {
	h := &c.h[d]
	if len(secret) != c.suite.hash().Size() {
		c.fail(StatusNoKeys, fmt.Errorf("%w: key log has no usable %s traffic secret for client random %x", ErrNoKeys, d, c.res.ClientRandom), d)
		return
	}
	ci, err := newAEAD13(c.suite, secret)
	if err != nil {
		c.fail(StatusFailed, fmt.Errorf("%w: %s key: %v", ErrFailed, d, err), d)
		return
	}
	h.cipher, h.seq, h.secret, h.appKeys = ci, 0, secret, app
}

func (c *Conn) serverHelloMsg(body []byte) {
	sh, err := parseServerHello(body)
	if err != nil {
		c.failBoth(StatusFailed, fmt.Errorf("%w: %v", ErrFailed, err))
		return
	}
	if sh.retry {
		// HelloRetryRequest: the client sends a second ClientHello (same
		// random), and the server a real ServerHello.
		c.res.HelloRetry = true
		return
	}
	c.serverHello = true
	c.res.Version, c.res.Suite = sh.version, sh.suite
	if sh.alpn != "" {
		c.res.ALPN = sh.alpn
	}
	switch sh.version {
	case 0x0303, 0x0304:
	default:
		c.failBoth(StatusUnsupported, fmt.Errorf("%w: protocol version %#04x", ErrUnsupported, sh.version))
		return
	}
	s := suites[sh.suite]
	if s == nil || s.tls13 != (sh.version == 0x0304) {
		c.failBoth(StatusUnsupported, fmt.Errorf("%w: cipher suite %s", ErrUnsupported, SuiteName(sh.suite)))
		return
	}
	c.suite = s
	if sh.version == 0x0304 {
		c.res.Resumed = sh.psk
	} else {
		c.res.Resumed = len(sh.sessionID) > 0 && string(sh.sessionID) == string(c.ch.sessionID)
	}
	var sec Secrets
	var ok bool
	if c.keys != nil {
		sec, ok = c.keys.Lookup(c.ch.random)
	}
	resumed := ""
	if c.res.Resumed {
		resumed = " (a resumed session)"
	}
	if s.tls13 {
		if !ok || len(sec.ClientHandshake) == 0 || len(sec.ServerHandshake) == 0 || len(sec.ClientTraffic0) == 0 || len(sec.ServerTraffic0) == 0 {
			c.failBoth(StatusNoKeys, fmt.Errorf("%w: no TLS 1.3 traffic secrets (all four needed) for client random %x%s", ErrNoKeys, c.ch.random, resumed))
			return
		}
		c.sec = sec
		c.decrypting()
		c.install13(ServerToClient, sec.ServerHandshake, false)
		c.install13(ClientToServer, sec.ClientHandshake, false)
		return
	}
	sk, _ := c.keys.(sessionKeys)
	if (!ok || len(sec.Master) == 0) && c.res.Resumed && sk != nil {
		// A resumed session without its own key log line: the master
		// secret of the session it resumes, by ticket or session ID.
		m, found := []byte(nil), false
		if len(c.ch.ticket) > 0 {
			m, found = sk.lookupSession("t" + string(c.ch.ticket))
		}
		if !found {
			m, found = sk.lookupSession("i" + string(sh.sessionID))
		}
		if found {
			sec, ok = Secrets{Master: m}, true
		}
	}
	if !ok || len(sec.Master) == 0 {
		c.failBoth(StatusNoKeys, fmt.Errorf("%w: no CLIENT_RANDOM master secret for client random %x%s", ErrNoKeys, c.ch.random, resumed))
		return
	}
	c.sec = sec
	if sk != nil && len(sh.sessionID) > 0 {
		sk.rememberSession("i"+string(sh.sessionID), sec.Master)
	}
	c.res.EncryptThenMAC = c.ch.etm && sh.etm && s.kind >= cbcSHA1
	cl, sv, err := keys12(s, sec.Master, c.ch.random, sh.random, c.res.EncryptThenMAC)
	if err != nil {
		c.failBoth(StatusFailed, fmt.Errorf("%w: %v", ErrFailed, err))
		return
	}
	c.decrypting()
	c.h[ClientToServer].pending, c.h[ServerToClient].pending = cl, sv
}
