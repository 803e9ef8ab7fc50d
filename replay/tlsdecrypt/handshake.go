package tlsdecrypt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Handshake message types.
const (
	hsClientHello         = 1
	hsServerHello         = 2
	hsNewSessionTicket    = 4
	hsEndOfEarlyData      = 5
	hsEncryptedExtensions = 8
	hsFinished            = 20
	hsKeyUpdate           = 24
)

// Extensions.
const (
	extServerName       = 0
	extALPN             = 16
	extEncryptThenMAC   = 22
	extSessionTicket    = 35
	extPreSharedKey     = 41
	extEarlyData        = 42
	extSupportedVersion = 43
)

// helloRetryRandom is the ServerHello.random of a HelloRetryRequest
// (RFC 8446 section 4.1.3): SHA-256 of "HelloRetryRequest".
var helloRetryRandom = sha256.Sum256([]byte("HelloRetryRequest"))

// reader reads TLS's length-prefixed fields; a short read sets bad and
// returns zeros, so that a parser checks once at the end.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(b))
}

func (r *reader) vec8() []byte  { return r.bytes(r.u8()) }
func (r *reader) vec16() []byte { return r.bytes(r.u16()) }

type clientHello struct {
	random    []byte
	sessionID []byte
	sni       string
	alpn      []string
	versions  []uint16 // supported_versions
	earlyData bool
	psk       bool
	etm       bool
	ticket    []byte // a non-empty session_ticket (TLS 1.2 resumption)
}

func parseClientHello(b []byte) (*clientHello, error) {
	r := &reader{b: b}
	r.u16() // legacy_version
	ch := &clientHello{random: r.bytes(32)}
	ch.sessionID = r.vec8()
	r.vec16() // cipher_suites
	r.vec8()  // compression_methods
	if r.bad {
		return nil, fmt.Errorf("client hello: cut short")
	}
	if len(r.b) == 0 {
		return ch, nil // no extensions
	}
	ext := &reader{b: r.vec16()}
	for len(ext.b) > 0 && !ext.bad {
		typ := ext.u16()
		body := &reader{b: ext.vec16()}
		switch typ {
		case extServerName:
			list := &reader{b: body.vec16()}
			for len(list.b) > 0 && !list.bad {
				kind := list.u8()
				name := list.vec16()
				if kind == 0 && ch.sni == "" {
					ch.sni = string(name)
				}
			}
			body.bad = body.bad || list.bad
		case extALPN:
			list := &reader{b: body.vec16()}
			for len(list.b) > 0 && !list.bad {
				if p := list.vec8(); !list.bad {
					ch.alpn = append(ch.alpn, string(p))
				}
			}
			body.bad = body.bad || list.bad
		case extSupportedVersion:
			list := &reader{b: body.vec8()}
			for len(list.b) > 0 && !list.bad {
				ch.versions = append(ch.versions, uint16(list.u16()))
			}
			body.bad = body.bad || list.bad
		case extEarlyData:
			ch.earlyData = true
		case extPreSharedKey:
			ch.psk = true
		case extEncryptThenMAC:
			ch.etm = true
		case extSessionTicket:
			ch.ticket = body.b
		}
		if body.bad {
			return nil, fmt.Errorf("client hello: extension %d: cut short", typ)
		}
	}
	if ext.bad || r.bad {
		return nil, fmt.Errorf("client hello: extensions cut short")
	}
	return ch, nil
}

type serverHello struct {
	legacyVersion uint16
	version       uint16 // negotiated: supported_versions, or legacyVersion
	random        []byte
	sessionID     []byte
	suite         uint16
	retry         bool // a HelloRetryRequest
	alpn          string
	psk           bool // TLS 1.3: the server accepted a pre-shared key
	etm           bool
}

func parseServerHello(b []byte) (*serverHello, error) {
	r := &reader{b: b}
	sh := &serverHello{legacyVersion: uint16(r.u16())}
	sh.random = r.bytes(32)
	sh.sessionID = r.vec8()
	sh.suite = uint16(r.u16())
	r.u8() // compression
	if r.bad {
		return nil, fmt.Errorf("server hello: cut short")
	}
	sh.version = sh.legacyVersion
	sh.retry = bytes.Equal(sh.random, helloRetryRandom[:])
	if len(r.b) == 0 {
		return sh, nil
	}
	ext := &reader{b: r.vec16()}
	for len(ext.b) > 0 && !ext.bad {
		typ := ext.u16()
		body := &reader{b: ext.vec16()}
		switch typ {
		case extSupportedVersion:
			sh.version = uint16(body.u16())
		case extALPN:
			list := &reader{b: body.vec16()}
			sh.alpn = string(list.vec8())
			body.bad = body.bad || list.bad
		case extPreSharedKey:
			sh.psk = true
		case extEncryptThenMAC:
			sh.etm = true
		}
		if body.bad {
			return nil, fmt.Errorf("server hello: extension %d: cut short", typ)
		}
	}
	if ext.bad || r.bad {
		return nil, fmt.Errorf("server hello: extensions cut short")
	}
	return sh, nil
}

// parseEncryptedExtensions returns the ALPN protocol a TLS 1.3 server chose
// and whether it accepted early data.
func parseEncryptedExtensions(b []byte) (alpn string, early bool, err error) {
	r := &reader{b: b}
	ext := &reader{b: r.vec16()}
	for len(ext.b) > 0 && !ext.bad {
		typ := ext.u16()
		body := &reader{b: ext.vec16()}
		switch typ {
		case extALPN:
			list := &reader{b: body.vec16()}
			alpn = string(list.vec8())
			body.bad = body.bad || list.bad
		case extEarlyData:
			early = true
		}
		if body.bad {
			return "", false, fmt.Errorf("encrypted extensions: extension %d: cut short", typ)
		}
	}
	if ext.bad || r.bad {
		return "", false, fmt.Errorf("encrypted extensions: cut short")
	}
	return alpn, early, nil
}

// parseTicket12 returns the ticket of a TLS 1.2 NewSessionTicket (RFC 5077).
func parseTicket12(b []byte) []byte {
	r := &reader{b: b}
	r.bytes(4) // lifetime hint
	t := r.vec16()
	if r.bad {
		return nil
	}
	return t
}
