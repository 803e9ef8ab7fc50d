package tlsdecrypt

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Limits of a key log. A line of the NSS format is a label (at most 31
// characters), a 64-digit client random and a secret of at most 48 bytes
// (96 digits): 512 bytes leave room for a longer hash without letting one
// line hold the reader. MaxKeyLogEntries bounds the memory a key log can
// claim (about 200 bytes an entry).
const (
	MaxKeyLogLine    = 512
	MaxKeyLogEntries = 1 << 20
)

// ErrKeyLog is wrapped by every error about the content of a key log, so
// that errors.Is(err, ErrKeyLog) tells a bad file from a failed read.
var ErrKeyLog = errors.New("bad key log")

// Secrets are the secrets a key log holds for one client random. A TLS 1.2
// session needs Master; a TLS 1.3 session the four traffic secrets (the
// handshake ones to find where the handshake ends).
type Secrets struct {
	Master                           []byte // CLIENT_RANDOM (48 bytes)
	ClientHandshake, ServerHandshake []byte // CLIENT_/SERVER_HANDSHAKE_TRAFFIC_SECRET
	ClientTraffic0, ServerTraffic0   []byte // CLIENT_/SERVER_TRAFFIC_SECRET_0
}

// Keys finds the secrets of a session by its client random. KeyLog
// implements it; the decryptor looks a session up once, when its
// ServerHello has been read, so a key log may still grow (pcapng
// decryption secrets blocks arrive with the capture) until then.
type Keys interface {
	// Lookup returns the secrets known for clientRandom (32 bytes) and
	// whether any are. It may be called concurrently.
	Lookup(clientRandom []byte) (Secrets, bool)
}

// KeyLog holds the secrets of an NSS key log (the SSLKEYLOGFILE format),
// by client random. Its methods may be called concurrently.
type KeyLog struct {
	mu sync.RWMutex
	m  map[[32]byte]*Secrets
	n  int // lines with a secret kept (entries, counting repeats)
	// limit is the most client randoms kept (MaxKeyLogEntries when 0;
	// tests lower it).
	limit int
	// sessions are TLS 1.2 master secrets learnt from decrypted full
	// handshakes, by session ID ("i"+id) and ticket ("t"+ticket): a
	// resumed TLS 1.2 session reuses its master secret, and not every
	// endpoint logs it again (crypto/tls does not).
	sessions map[string][]byte
}

// sessionKeys is implemented by Keys that remember TLS 1.2 master secrets
// by session ID and ticket (KeyLog does), for resumed sessions.
type sessionKeys interface {
	rememberSession(key string, master []byte)
	lookupSession(key string) ([]byte, bool)
}

// maxSessions bounds the master secrets remembered for resumption; when
// full, an arbitrary one gives way.
const maxSessions = 1 << 16

func (kl *KeyLog) rememberSession(key string, master []byte) {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	if kl.sessions == nil {
		kl.sessions = make(map[string][]byte)
	}
	if _, ok := kl.sessions[key]; !ok && len(kl.sessions) >= maxSessions {
		for k := range kl.sessions {
			delete(kl.sessions, k)
			break
		}
	}
	kl.sessions[key] = master
}

func (kl *KeyLog) lookupSession(key string) ([]byte, bool) {
	kl.mu.RLock()
	defer kl.mu.RUnlock()
	m, ok := kl.sessions[key]
	return m, ok
}

var _ Keys = (*KeyLog)(nil)

// NewKeyLog returns an empty KeyLog.
func NewKeyLog() *KeyLog { return &KeyLog{m: make(map[[32]byte]*Secrets)} }

// ParseKeyLog reads a whole key log from r; name is used in errors.
func ParseKeyLog(r io.Reader, name string) (*KeyLog, error) {
	kl := NewKeyLog()
	if err := kl.Read(r, name); err != nil {
		return nil, err
	}
	return kl, nil
}

// Len is the number of client randoms with at least one secret.
func (kl *KeyLog) Len() int {
	kl.mu.RLock()
	defer kl.mu.RUnlock()
	return len(kl.m)
}

// Lookup implements Keys. The slices returned are shared: do not modify.
func (kl *KeyLog) Lookup(clientRandom []byte) (Secrets, bool) {
	if len(clientRandom) != 32 {
		return Secrets{}, false
	}
	kl.mu.RLock()
	defer kl.mu.RUnlock()
	s, ok := kl.m[[32]byte(clientRandom)]
	if !ok {
		return Secrets{}, false
	}
	return *s, true
}

// Read adds the lines of a key log read from r (a file, or the bytes of a
// pcapng decryption secrets block); name is used in errors, which name the
// line: `key log "x.keys": line 3: client random of 31 bytes, want 32`.
// Lines it adds before an error stay added.
func (kl *KeyLog) Read(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 4096)
	for line := 1; ; line++ {
		b, err := readLine(br)
		if len(b) > 0 || err == nil {
			if perr := kl.addLine(b); perr != nil {
				return fmt.Errorf("key log %q: line %d: %w", name, line, perr)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, errLongLine) {
				return fmt.Errorf("key log %q: line %d: %w: longer than %d bytes", name, line, ErrKeyLog, MaxKeyLogLine)
			}
			return fmt.Errorf("key log %q: line %d: %w", name, line, err)
		}
	}
}

var errLongLine = errors.New("line too long")

// readLine returns the next line without its end (\n or \r\n); io.EOF with
// the last line if it has no end.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > MaxKeyLogLine+2 {
			return nil, errLongLine
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return line, err
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > MaxKeyLogLine {
			return nil, errLongLine
		}
		return line, nil
	}
}

// addLine adds one line. Comments (#), blank lines and labels this package
// does not use (EXPORTER_SECRET, CLIENT_EARLY_TRAFFIC_SECRET,
// EARLY_EXPORTER_SECRET, RSA …) are skipped after their form is checked.
func (kl *KeyLog) addLine(b []byte) error {
	b = bytes.TrimRight(b, " \t\r")
	if len(b) == 0 || b[0] == '#' {
		return nil
	}
	f := bytes.Fields(b)
	if len(f) != 3 {
		return fmt.Errorf("%w: %d fields, want 3 (label, client random, secret)", ErrKeyLog, len(f))
	}
	label := string(f[0])
	var dst func(s *Secrets) *[]byte
	want := 0 // secret length; 0: any of 32 and 48
	switch label {
	case "CLIENT_RANDOM":
		dst, want = func(s *Secrets) *[]byte { return &s.Master }, 48
	case "CLIENT_HANDSHAKE_TRAFFIC_SECRET":
		dst = func(s *Secrets) *[]byte { return &s.ClientHandshake }
	case "SERVER_HANDSHAKE_TRAFFIC_SECRET":
		dst = func(s *Secrets) *[]byte { return &s.ServerHandshake }
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = func(s *Secrets) *[]byte { return &s.ClientTraffic0 }
	case "SERVER_TRAFFIC_SECRET_0":
		dst = func(s *Secrets) *[]byte { return &s.ServerTraffic0 }
	}
	if len(f[1]) != 64 {
		if label == "RSA" && dst == nil {
			return nil // RSA <encrypted pre-master prefix> <pre-master>: not used
		}
		return fmt.Errorf("%w: %s: client random of %d hex digits, want 64", ErrKeyLog, label, len(f[1]))
	}
	var cr [32]byte
	if _, err := hex.Decode(cr[:], f[1]); err != nil {
		return fmt.Errorf("%w: %s: client random: %v", ErrKeyLog, label, err)
	}
	secret := make([]byte, hex.DecodedLen(len(f[2])))
	if _, err := hex.Decode(secret, f[2]); err != nil || len(f[2])%2 != 0 {
		if err == nil {
			err = hex.ErrLength
		}
		return fmt.Errorf("%w: %s: secret: %v", ErrKeyLog, label, err)
	}
	if dst == nil {
		return nil
	}
	if want != 0 && len(secret) != want || want == 0 && len(secret) != 32 && len(secret) != 48 {
		return fmt.Errorf("%w: %s: secret of %d bytes, want %s", ErrKeyLog, label, len(secret), map[bool]string{true: "48", false: "32 or 48"}[want != 0])
	}
	kl.mu.Lock()
	defer kl.mu.Unlock()
	s := kl.m[cr]
	if s == nil {
		limit := kl.limit
		if limit == 0 {
			limit = MaxKeyLogEntries
		}
		if len(kl.m) >= limit {
			return fmt.Errorf("%w: more than %d client randoms", ErrKeyLog, limit)
		}
		s = &Secrets{}
		kl.m[cr] = s
	}
	// A repeated line replaces the secret: the last one logged wins, as
	// in Wireshark.
	*dst(s) = secret
	kl.n++
	return nil
}
