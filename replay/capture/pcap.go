package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// pcap magic numbers as read little-endian from the first four bytes.
const (
	magicMicro    = 0xa1b2c3d4 // classic pcap, microsecond timestamps
	magicNano     = 0xa1b23c4d // nanosecond timestamps
	magicModified = 0xa1b2cd34 // Alexey Kuznetzov's "modified pcap": 24-byte record headers
)

// maxPcapRecord is the largest captured length accepted for a pcap record
// when the file's snap length is smaller: libpcap's and Wireshark's maximum
// for ordinary link types. A record claiming more is a bogus length (the
// file is damaged), which is how the damage of a corrupt file shows.
const maxPcapRecord = 262144

// pcapSource reads classic pcap: microsecond and nanosecond timestamps,
// both byte orders, and the modified-pcap record layout.
//
// gopacket's pcapgo reader does not accept the modified-pcap magic, does not
// separate a truncated tail from damage, and copies each record; this reader
// hands out slices of its read buffer instead.
type pcapSource struct {
	name     string
	br       *bufReader
	order    binary.ByteOrder
	nano     bool
	hdrLen   int // record header length: 16, or 24 for modified pcap
	linkType layers.LinkType
	snaplen  uint32
	maxCap   uint32
	swapLens bool // version < 2.3: caplen and len swapped in records
	n        int  // frames delivered so far
	closer   io.Closer
	err      error // sticky final error (io.EOF included)
}

// newPcapSource parses the 24-byte file header (already known to carry a
// pcap magic) and returns the source.
func newPcapSource(name string, br *bufReader, closer io.Closer) (*pcapSource, error) {
	h, got, err := br.next(24)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, truncated("file header: %d of 24 bytes", got)
		}
		return nil, streamError("file header", err)
	}
	s := &pcapSource{name: name, br: br, closer: closer, hdrLen: 16}
	switch magic := binary.LittleEndian.Uint32(h); magic {
	case magicMicro, magicNano, magicModified:
		s.order = binary.LittleEndian
	default:
		s.order = binary.BigEndian
	}
	magic := s.order.Uint32(h)
	s.nano = magic == magicNano
	if magic == magicModified {
		s.hdrLen = 24
	}
	major, minor := s.order.Uint16(h[4:]), s.order.Uint16(h[6:])
	// libpcap and Wireshark refuse only majors below 2; some writers put
	// the version fields in the wrong byte order (2.4 reads as 512.1024),
	// and those files open everywhere else, so they must here too.
	if major < 2 {
		return nil, damaged("file header: unsupported pcap version %d.%d (want 2.4)", major, minor)
	}
	// Before 2.3 the captured and wire lengths were stored the other way
	// round (libpcap swaps them back the same way).
	s.swapLens = major == 2 && minor < 3
	s.snaplen = s.order.Uint32(h[16:])
	// The upper bits of the link type field carry FCS information
	// (LINKTYPE_... with the F bit); the link type is the low 16 bits.
	s.linkType = layers.LinkType(s.order.Uint32(h[20:]) & 0xffff)
	s.maxCap = maxPcapRecord
	if s.snaplen > s.maxCap && s.snaplen <= bufMax {
		s.maxCap = s.snaplen
	}
	return s, nil
}

func (s *pcapSource) ReadFrame() (Frame, error) {
	if s.err != nil {
		return Frame{}, s.err
	}
	f, err := s.read()
	if err != nil {
		s.err = err
	}
	return f, err
}

func (s *pcapSource) read() (Frame, error) {
	n := s.n + 1
	start := s.br.offset()
	h, got, err := s.br.next(s.hdrLen)
	if err != nil {
		if got == 0 && err == io.EOF {
			return Frame{}, io.EOF
		}
		if isEOF(err) {
			return Frame{}, s.wrap(n, truncated("file ends %d bytes into the %d-byte record header at byte %d", got, s.hdrLen, start))
		}
		return Frame{}, s.wrap(n, streamError(fmt.Sprintf("record header at byte %d", start), err))
	}
	sec := s.order.Uint32(h)
	frac := s.order.Uint32(h[4:])
	caplen := s.order.Uint32(h[8:])
	wirelen := s.order.Uint32(h[12:])
	if s.swapLens && caplen > wirelen {
		caplen, wirelen = wirelen, caplen
	}
	if caplen > s.maxCap {
		return Frame{}, s.wrap(n, damaged("record at byte %d: captured length %d exceeds the maximum %d (snap length %d): bogus record length", start, caplen, s.maxCap, s.snaplen))
	}
	data, got, err := s.br.next(int(caplen))
	if err != nil {
		if isEOF(err) {
			return Frame{}, s.wrap(n, truncated("file ends %d bytes into the %d bytes of the record at byte %d", got, caplen, start))
		}
		return Frame{}, s.wrap(n, streamError(fmt.Sprintf("record at byte %d", start), err))
	}
	var ns int64
	if s.nano {
		ns = int64(frac)
	} else {
		ns = int64(frac) * 1000
	}
	s.n = n
	l := int(wirelen)
	if l < int(caplen) {
		// Some writers leave the wire length 0 or smaller; the bytes we
		// hold were certainly on the wire.
		l = int(caplen)
	}
	return Frame{N: n, Time: time.Unix(int64(sec), ns).UTC(), LinkType: s.linkType, Data: data, Len: l}, nil
}

func (s *pcapSource) wrap(frame int, err error) error {
	return &Error{Op: "read", Name: s.name, Frame: frame, Err: err}
}

func (s *pcapSource) Close() error {
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

var errClosed = errors.New("source is closed")

func isEOF(err error) bool {
	return err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF)
}

// streamError classifies an error from the underlying stream: decompressor
// errors mean the compressed container is damaged; anything else (an I/O
// error) is returned as it is, with context.
func streamError(what string, err error) error {
	var ce decompressError
	if errors.As(err, &ce) {
		return &kindError{detail: what, kind: ErrDamaged, cause: ce.err}
	}
	return fmt.Errorf("%s: %w", what, err)
}
