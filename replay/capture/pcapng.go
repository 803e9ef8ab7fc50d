package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// pcapng block types.
const (
	blockSHB = 0x0A0D0D0A // section header
	blockIDB = 0x00000001 // interface description
	blockOPB = 0x00000002 // obsolete packet block
	blockSPB = 0x00000003 // simple packet block
	blockEPB = 0x00000006 // enhanced packet block
	blockDSB = 0x0000000A // decryption secrets block
	bomMagic = 0x1A2B3C4D // byte-order magic in the SHB
)

// Option codes used here.
const (
	optEnd      = 0
	optTsresol  = 9
	optTsoffset = 14
)

// SecretsTLSKeyLog is the secrets type of a decryption secrets block that
// holds TLS secrets in the NSS key log format (SSLKEYLOGFILE).
const SecretsTLSKeyLog = 0x544c534b

// Secrets is a pcapng decryption secrets block (Wireshark writes them:
// editcap --inject-secrets).
type Secrets struct {
	Type uint32 // SecretsTLSKeyLog, or another kind (WireGuard, ZigBee, …)
	Data []byte // owned by the receiver
	// Frame is the number of frames read before the block (the secrets
	// apply to the frames after it).
	Frame int
}

// SecretsHandler is implemented by the sources whose format can carry
// decryption secrets (pcapng). A consumer that decrypts (replay/tlsdecrypt)
// registers a callback; the capture package knows nothing of what the
// secrets mean.
type SecretsHandler interface {
	// OnSecrets makes ReadFrame call fn, on the reading goroutine, for
	// each decryption secrets block it passes from then on, before the
	// frame after the block is returned. nil stops the calls (blocks
	// are skipped, as without a handler).
	OnSecrets(fn func(Secrets))
}

var _ SecretsHandler = (*pcapngSource)(nil)

// ngInterface is what a frame needs from its interface description block.
type ngInterface struct {
	linkType layers.LinkType
	snaplen  uint32
	// Timestamps are counted in units of 1/unitsPerSec seconds since
	// tsOffset (seconds) — if_tsresol and if_tsoffset.
	unitsPerSec uint64
	tsOffset    int64
}

// pcapngSource reads pcapng: any number of sections (each may switch byte
// order and starts a new interface list), any number of interfaces with
// their own link type and timestamp resolution. Blocks other than SHB, IDB,
// EPB, SPB and OPB (name resolution, statistics, custom blocks) are skipped,
// and so are decryption secrets blocks unless a handler takes them
// (OnSecrets).
type pcapngSource struct {
	name   string
	br     *bufReader
	order  binary.ByteOrder
	ifaces []ngInterface
	n      int       // frames delivered so far
	last   time.Time // time of the last timestamped frame
	closer io.Closer
	err    error
	// secrets receives decryption secrets blocks (OnSecrets).
	secrets func(Secrets)
}

func (s *pcapngSource) OnSecrets(fn func(Secrets)) { s.secrets = fn }

// dsb hands a decryption secrets block to the handler.
func (s *pcapngSource) dsb(body []byte, start int64) error {
	if s.secrets == nil {
		return nil
	}
	if len(body) < 8 {
		return damaged("decryption secrets block at byte %d: body of %d bytes, need 8", start, len(body))
	}
	typ, n := s.order.Uint32(body), s.order.Uint32(body[4:])
	if uint64(n) > uint64(len(body)-8) {
		return damaged("decryption secrets block at byte %d: secrets of %d bytes overrun the %d-byte block", start, n, len(body)+12)
	}
	s.secrets(Secrets{Type: typ, Data: append([]byte(nil), body[8:8+n]...), Frame: s.n})
	return nil
}

func newPcapngSource(name string, br *bufReader, closer io.Closer) (*pcapngSource, error) {
	s := &pcapngSource{name: name, br: br, closer: closer}
	// The first block must be a section header; reading it here makes
	// Open fail on a damaged header rather than the first ReadFrame.
	typ, body, start, err := s.block()
	if err != nil {
		if err == io.EOF {
			return nil, truncated("file ends before the section header block")
		}
		return nil, err
	}
	if typ != blockSHB {
		return nil, damaged("block at byte %d: type %#x, want a section header block first", start, typ)
	}
	if err := s.section(body, start); err != nil {
		return nil, err
	}
	return s, nil
}

// block reads the next whole block. It returns io.EOF (bare) only at a clean
// end between blocks. For a section header block, it determines the byte
// order from the block's byte-order magic before checking lengths.
func (s *pcapngSource) block() (typ uint32, body []byte, start int64, err error) {
	start = s.br.offset()
	h, err := s.br.peek(12)
	if len(h) == 0 && err == io.EOF {
		return 0, nil, start, io.EOF
	}
	if len(h) < 12 {
		if isEOF(err) {
			return 0, nil, start, truncated("file ends %d bytes into the block header at byte %d", len(h), start)
		}
		return 0, nil, start, streamError(fmt.Sprintf("block at byte %d", start), err)
	}
	if binary.LittleEndian.Uint32(h) == blockSHB {
		switch binary.LittleEndian.Uint32(h[8:]) {
		case bomMagic:
			s.order = binary.LittleEndian
		case 0x4D3C2B1A:
			s.order = binary.BigEndian
		default:
			return 0, nil, start, damaged("section header at byte %d: bad byte-order magic %#x", start, binary.LittleEndian.Uint32(h[8:]))
		}
	}
	typ = s.order.Uint32(h)
	total := s.order.Uint32(h[4:])
	if total < 12 || total%4 != 0 || total > bufMax {
		return 0, nil, start, damaged("block at byte %d (type %#x): bogus block length %d", start, typ, total)
	}
	b, got, err := s.br.next(int(total))
	if err != nil {
		if isEOF(err) {
			return 0, nil, start, truncated("file ends %d bytes into the %d-byte block at byte %d", got, total, start)
		}
		return 0, nil, start, streamError(fmt.Sprintf("block at byte %d", start), err)
	}
	if trailer := s.order.Uint32(b[total-4:]); trailer != total {
		return 0, nil, start, damaged("block at byte %d (type %#x): length %d at the start but %d at the end", start, typ, total, trailer)
	}
	return typ, b[8 : total-4], start, nil
}

// section starts a new section from the SHB body.
func (s *pcapngSource) section(body []byte, start int64) error {
	if len(body) < 16 {
		return damaged("section header at byte %d: body of %d bytes, need 16", start, len(body))
	}
	if major := s.order.Uint16(body[4:]); major != 1 {
		return damaged("section header at byte %d: unsupported pcapng version %d.%d", start, major, s.order.Uint16(body[6:]))
	}
	if err := s.options(body[16:], start, nil); err != nil {
		return err
	}
	s.ifaces = s.ifaces[:0]
	return nil
}

// options walks an option list, checking that every option fits, and calls
// fn (if not nil) for each.
func (s *pcapngSource) options(b []byte, start int64, fn func(code uint16, val []byte) error) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return damaged("block at byte %d: %d stray bytes after the options", start, len(b))
		}
		code, l := s.order.Uint16(b), int(s.order.Uint16(b[2:]))
		if code == optEnd {
			return nil
		}
		padded := (l + 3) &^ 3
		if 4+padded > len(b) {
			return damaged("block at byte %d: option %d of %d bytes overruns the block", start, code, l)
		}
		if fn != nil {
			if err := fn(code, b[4:4+l]); err != nil {
				return err
			}
		}
		b = b[4+padded:]
	}
	return nil
}

func (s *pcapngSource) iface(body []byte, start int64) error {
	if len(body) < 8 {
		return damaged("interface description at byte %d: body of %d bytes, need 8", start, len(body))
	}
	ifc := ngInterface{
		linkType:    layers.LinkType(s.order.Uint16(body)),
		snaplen:     s.order.Uint32(body[4:]),
		unitsPerSec: 1e6,
	}
	err := s.options(body[8:], start, func(code uint16, v []byte) error {
		switch code {
		case optTsresol:
			if len(v) != 1 {
				return damaged("interface description at byte %d: if_tsresol of %d bytes", start, len(v))
			}
			r := v[0]
			if r&0x80 != 0 {
				if r&0x7f > 63 {
					return damaged("interface description at byte %d: if_tsresol 2^-%d is out of range", start, r&0x7f)
				}
				ifc.unitsPerSec = 1 << (r & 0x7f)
			} else {
				if r > 19 {
					return damaged("interface description at byte %d: if_tsresol 10^-%d is out of range", start, r)
				}
				u := uint64(1)
				for i := byte(0); i < r; i++ {
					u *= 10
				}
				ifc.unitsPerSec = u
			}
		case optTsoffset:
			if len(v) != 8 {
				return damaged("interface description at byte %d: if_tsoffset of %d bytes", start, len(v))
			}
			ifc.tsOffset = int64(s.order.Uint64(v))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ifc.unitsPerSec == 0 {
		ifc.unitsPerSec = 1
	}
	s.ifaces = append(s.ifaces, ifc)
	return nil
}

func (s *pcapngSource) ReadFrame() (Frame, error) {
	if s.err != nil {
		return Frame{}, s.err
	}
	f, err := s.read()
	if err != nil {
		if err != io.EOF {
			err = &Error{Op: "read", Name: s.name, Frame: s.n + 1, Err: err}
		}
		s.err = err
	}
	return f, err
}

func (s *pcapngSource) read() (Frame, error) {
	for {
		typ, body, start, err := s.block()
		if err != nil {
			return Frame{}, err
		}
		switch typ {
		case blockSHB:
			if err := s.section(body, start); err != nil {
				return Frame{}, err
			}
		case blockIDB:
			if err := s.iface(body, start); err != nil {
				return Frame{}, err
			}
		case blockDSB:
			if err := s.dsb(body, start); err != nil {
				return Frame{}, err
			}
		case blockEPB:
			if len(body) < 20 {
				return Frame{}, damaged("enhanced packet block at byte %d: body of %d bytes, need 20", start, len(body))
			}
			id := s.order.Uint32(body)
			ts := uint64(s.order.Uint32(body[4:]))<<32 | uint64(s.order.Uint32(body[8:]))
			caplen := s.order.Uint32(body[12:])
			wirelen := s.order.Uint32(body[16:])
			if uint64(caplen) > uint64(len(body)-20) {
				return Frame{}, damaged("enhanced packet block at byte %d: captured length %d overruns the %d-byte block", start, caplen, len(body)+12)
			}
			return s.frame(id, ts, true, body[20:20+caplen], wirelen, start)
		case blockOPB:
			if len(body) < 20 {
				return Frame{}, damaged("packet block at byte %d: body of %d bytes, need 20", start, len(body))
			}
			id := uint32(s.order.Uint16(body))
			ts := uint64(s.order.Uint32(body[4:]))<<32 | uint64(s.order.Uint32(body[8:]))
			caplen := s.order.Uint32(body[12:])
			wirelen := s.order.Uint32(body[16:])
			if uint64(caplen) > uint64(len(body)-20) {
				return Frame{}, damaged("packet block at byte %d: captured length %d overruns the %d-byte block", start, caplen, len(body)+12)
			}
			return s.frame(id, ts, true, body[20:20+caplen], wirelen, start)
		case blockSPB:
			if len(body) < 4 {
				return Frame{}, damaged("simple packet block at byte %d: body of %d bytes, need 4", start, len(body))
			}
			if len(s.ifaces) == 0 {
				return Frame{}, damaged("simple packet block at byte %d before any interface description", start)
			}
			wirelen := s.order.Uint32(body)
			data := body[4:]
			// The captured length is the smaller of the wire length and the
			// interface's snap length; the rest of the body is padding.
			c := uint64(wirelen)
			if sl := s.ifaces[0].snaplen; sl != 0 && uint64(sl) < c {
				c = uint64(sl)
			}
			if c < uint64(len(data)) {
				data = data[:c]
			}
			// Simple packet blocks carry no timestamp: they get the time of
			// the frame before, so that time never jumps back to zero in
			// the middle of a capture (a zero time for the first frame).
			return s.frame(0, 0, false, data, wirelen, start)
		default:
			// Name resolution, interface statistics, custom and unknown
			// blocks carry no frames.
		}
	}
}

func (s *pcapngSource) frame(id uint32, ts uint64, hasTime bool, data []byte, wirelen uint32, start int64) (Frame, error) {
	if uint64(id) >= uint64(len(s.ifaces)) {
		return Frame{}, damaged("packet block at byte %d: interface %d is not described (the section has %d)", start, id, len(s.ifaces))
	}
	ifc := &s.ifaces[id]
	t := s.last
	if hasTime {
		sec := ts / ifc.unitsPerSec
		frac := ts % ifc.unitsPerSec
		var ns uint64
		if ifc.unitsPerSec == 1e9 {
			ns = frac
		} else {
			hi, lo := bits.Mul64(frac, 1e9)
			ns, _ = bits.Div64(hi, lo, ifc.unitsPerSec)
		}
		t = time.Unix(int64(sec)+ifc.tsOffset, int64(ns)).UTC()
		s.last = t
	}
	s.n++
	l := int(wirelen)
	if l < len(data) {
		l = len(data)
	}
	return Frame{N: s.n, Time: t, LinkType: ifc.linkType, Data: data, Len: l}, nil
}

func (s *pcapngSource) Close() error {
	if s.closer == nil {
		return nil
	}
	c := s.closer
	s.closer = nil
	if s.err == nil {
		s.err = errClosed
	}
	return c.Close()
}
