package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Open opens the capture named name: a file path, or "-" for standard
// input. The format is recognised by its magic number, never by the name:
// pcap (micro- and nanosecond, either byte order, modified pcap), pcapng,
// and either of them compressed with gzip or zstd.
//
// Standard input is read as a stream: frames are delivered as their bytes
// arrive, nothing is buffered beyond the record being read, and the stream
// is never reopened or rewound. Closing the Source does not close os.Stdin.
func Open(name string) (Source, error) {
	if name == "-" {
		return newSource(os.Stdin, name, nil)
	}
	f, err := os.Open(name)
	if err != nil {
		// Same form as every other capture error: open "x.pcap": cause.
		// errors.Is(err, fs.ErrNotExist) still works through Unwrap.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{Op: "open", Name: name, Err: err}
	}
	s, err := newSource(f, name, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// NewSource reads a capture from r, recognised by its magic number like
// Open. name is used in error messages. If r is an io.Closer, the Source's
// Close closes it.
func NewSource(r io.Reader, name string) (Source, error) {
	c, _ := r.(io.Closer)
	return newSource(r, name, c)
}

func newSource(r io.Reader, name string, closer io.Closer) (Source, error) {
	wrapErr := func(err error) error {
		return &Error{Op: "open", Name: name, Err: err}
	}
	br := newBufReader(r)
	magic, err := br.peek(4)
	if err != nil && len(magic) < 4 {
		if isEOF(err) {
			if len(magic) == 0 {
				return nil, wrapErr(notCapture("empty file"))
			}
			return nil, wrapErr(notCapture("%d-byte file, too short for a capture header", len(magic)))
		}
		return nil, wrapErr(streamError("file header", err))
	}
	var container string
	switch {
	case magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			if isEOF(err) {
				return nil, wrapErr(truncated("gzip header cut short"))
			}
			return nil, wrapErr(&kindError{detail: "gzip header", kind: ErrDamaged, cause: err})
		}
		container = "gzip-compressed"
		br = newBufReader(&decompressReader{r: zr})
		closer = &multiCloser{zr, closer}
	case binary.LittleEndian.Uint32(magic) == 0xFD2FB528:
		// Synchronous decoding (concurrency 1) produces output as input
		// arrives, which a stream on stdin needs, and starts no goroutines.
		// The window limit (zstd's own default for decompression) bounds
		// the memory a frame header can claim: the decoder allocates the
		// window up front.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, wrapErr(&kindError{detail: "zstd", kind: ErrDamaged, cause: err})
		}
		container = "zstd-compressed"
		br = newBufReader(&decompressReader{r: zr})
		closer = &multiCloser{zstdCloser{zr}, closer}
	}
	if container != "" {
		magic, err = br.peek(4)
		if err != nil && len(magic) < 4 {
			closer.(*multiCloser).closeOwn()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, wrapErr(truncated("%s data cut short after %d bytes", container, len(magic)))
			}
			if isEOF(err) {
				if len(magic) == 0 {
					return nil, wrapErr(notCapture("%s, but empty inside", container))
				}
				return nil, wrapErr(notCapture("%s, but only %d bytes inside", container, len(magic)))
			}
			return nil, wrapErr(streamError(container+" data", err))
		}
	}
	var s Source
	switch m := binary.LittleEndian.Uint32(magic); {
	case m == blockSHB:
		s, err = newPcapngSource(name, br, closer)
	case m == magicMicro || m == magicNano || m == magicModified ||
		bits32swap(m) == magicMicro || bits32swap(m) == magicNano || bits32swap(m) == magicModified:
		s, err = newPcapSource(name, br, closer)
	default:
		head, _ := br.peek(512)
		what := describe(head)
		if container != "" {
			what = container + ", but not a capture inside: " + what
		}
		err = notCapture("%s", what)
	}
	if err != nil {
		// The caller of newSource closes what it opened; here close only
		// the decompressors we added. (Open closes the file itself.)
		if c, ok := closer.(*multiCloser); ok {
			c.closeOwn()
		}
		return nil, wrapErr(err)
	}
	return s, nil
}

func bits32swap(v uint32) uint32 {
	return v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24
}

// describe guesses what a non-capture input is, for the error message.
func describe(b []byte) string {
	has := func(off int, magic string) bool {
		return len(b) >= off+len(magic) && string(b[off:off+len(magic)]) == magic
	}
	switch {
	case has(0, "\x1f\x8b"):
		return "gzip-compressed twice"
	case has(0, "\x28\xb5\x2f\xfd"):
		return "zstd-compressed twice"
	case has(0, "BZh"):
		return "bzip2-compressed (decompress it first: bunzip2 -k)"
	case has(0, "\xfd7zXZ\x00"):
		return "xz-compressed (decompress it first: xz -dk)"
	case has(0, "\x04\x22\x4d\x18"):
		return "lz4-compressed (decompress it first: lz4 -d)"
	case has(0, "PK\x03\x04"):
		return "a zip archive"
	case has(257, "ustar"):
		return "a tar archive"
	case has(0, "\x7fELF"):
		return "an ELF executable"
	case has(0, "snoop\x00\x00\x00"):
		return "a snoop capture (convert it: editcap -F pcap in out.pcap)"
	case has(0, "GMBU"):
		return "a Microsoft Network Monitor capture (convert it: editcap -F pcap in out.pcap)"
	}
	if isText(b) {
		t := bytes.TrimLeft(b, " \t\r\n")
		switch {
		case len(t) > 0 && (t[0] == '{' || t[0] == '['):
			return "text file (looks like JSON)"
		case bytes.HasPrefix(bytes.ToLower(t), []byte("<!doctype html")) || bytes.HasPrefix(bytes.ToLower(t), []byte("<html")):
			return "text file (looks like HTML)"
		case bytes.Contains(t, []byte(" > ")) && bytes.Contains(t, []byte(": Flags")):
			return "text file (looks like tcpdump's text output; write a capture with tcpdump -w)"
		}
		return "text file"
	}
	if len(b) >= 4 {
		return fmt.Sprintf("unknown magic %#08x", binary.BigEndian.Uint32(b))
	}
	return "unknown content"
}

func isText(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	// A multi-byte character may be cut at the end of the sample.
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			return len(b) < utf8.UTFMax // a character cut by the sample's end
		}
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' && r != '\f' {
			return false
		}
		b = b[size:]
	}
	return true
}

// decompressError marks an error that came from a decompressor (corrupt
// data, bad checksum): the capture file is damaged.
type decompressError struct{ err error }

func (e decompressError) Error() string { return e.err.Error() }
func (e decompressError) Unwrap() error { return e.err }

// decompressReader tags decompressor errors so that streamError can tell
// them from I/O errors. A decompressor that runs out of input mid-stream
// returns io.ErrUnexpectedEOF, which passes through: the capture is
// truncated, not damaged.
type decompressReader struct{ r io.Reader }

func (d *decompressReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
		var pe *os.PathError
		switch {
		case errors.Is(err, zstd.ErrWindowSizeExceeded):
			err = decompressError{fmt.Errorf("%w: it needs more than 128 MiB of memory (decompress it first: zstd -d --long=31)", err)}
		case !errors.As(err, &pe):
			err = decompressError{err}
		}
	}
	return n, err
}

type zstdCloser struct{ d *zstd.Decoder }

func (z zstdCloser) Close() error { z.d.Close(); return nil }

// multiCloser closes the decompressor, then the underlying stream.
type multiCloser struct {
	own   io.Closer // the decompressor
	under io.Closer // the file, or nil
}

func (m *multiCloser) closeOwn() {
	if m.own != nil {
		m.own.Close()
		m.own = nil
	}
}

func (m *multiCloser) Close() error {
	m.closeOwn()
	if m.under != nil {
		u := m.under
		m.under = nil
		return u.Close()
	}
	return nil
}
