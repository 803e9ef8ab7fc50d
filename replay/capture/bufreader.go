package capture

import (
	"errors"
	"io"
)

// bufReader is a minimal zero-copy buffered reader for record-oriented
// formats: next(n) returns the next n bytes as a slice of its own buffer,
// valid until the following call. Unlike bufio.Reader it grows to hold any
// record up to max, and it never waits for more than the bytes it was asked
// for, so a stream (stdin, a pipe) is processed as it arrives.
type bufReader struct {
	r     io.Reader
	buf   []byte
	start int   // first unread byte in buf
	end   int   // end of valid data in buf
	off   int64 // stream offset of buf[start]
	err   error // sticky error from r (io.EOF included)
}

const (
	bufInitial = 64 << 10
	// bufMax bounds one record (pcap record or pcapng block). Wireshark's
	// limit for a pcapng block is 16 MiB; nothing legitimate is larger.
	bufMax = 16 << 20
)

func newBufReader(r io.Reader) *bufReader {
	return &bufReader{r: r, buf: make([]byte, bufInitial)}
}

// offset is the stream offset of the next unread byte.
func (b *bufReader) offset() int64 { return b.off }

// fill makes at least n bytes available (n <= bufMax). It returns the number
// available, which is < n only together with an error: io.EOF when the
// stream ended (possibly with some bytes available), or the reader's error.
func (b *bufReader) fill(n int) (int, error) {
	for b.end-b.start < n {
		if b.err != nil {
			return b.end - b.start, b.err
		}
		if len(b.buf)-b.start < n {
			// Not enough room after start: compact, and grow if even the
			// whole buffer is too small. Only a partial record is moved.
			if len(b.buf) < n {
				size := len(b.buf)
				for size < n {
					size *= 2
				}
				nb := make([]byte, size)
				copy(nb, b.buf[b.start:b.end])
				b.buf = nb
			} else {
				copy(b.buf, b.buf[b.start:b.end])
			}
			b.end -= b.start
			b.start = 0
		}
		m, err := b.r.Read(b.buf[b.end:])
		if m < 0 || m > len(b.buf)-b.end {
			b.err = errors.New("reader returned an invalid count")
			continue
		}
		b.end += m
		if err != nil {
			b.err = err
		} else if m == 0 {
			// A reader that returns 0, nil repeatedly would spin; io.Reader
			// discourages it, and a bounded number of retries is enough.
			m2, err2 := b.retry()
			b.end += m2
			if err2 != nil {
				b.err = err2
			}
		}
	}
	return b.end - b.start, nil
}

func (b *bufReader) retry() (int, error) {
	for i := 0; i < 100; i++ {
		m, err := b.r.Read(b.buf[b.end:])
		if m > 0 || err != nil {
			return m, err
		}
	}
	return 0, io.ErrNoProgress
}

// peek returns up to n bytes without consuming them; fewer only with an
// error (io.EOF at the end of the stream).
func (b *bufReader) peek(n int) ([]byte, error) {
	m, err := b.fill(n)
	return b.buf[b.start : b.start+m], err
}

// next consumes and returns exactly n bytes. On a short stream it returns
// the number of bytes that were available and the error (io.EOF if the
// stream simply ended); those bytes are consumed too.
func (b *bufReader) next(n int) ([]byte, int, error) {
	m, err := b.fill(n)
	if m < n {
		b.start += m
		b.off += int64(m)
		return nil, m, err
	}
	p := b.buf[b.start : b.start+n]
	b.start += n
	b.off += int64(n)
	return p, n, nil
}

// Read lets a bufReader stand in for the stream it wraps (after peeking at
// the magic, the data goes on to a decompressor).
func (b *bufReader) Read(p []byte) (int, error) {
	if b.start == b.end {
		if b.err != nil {
			return 0, b.err
		}
		if len(p) >= len(b.buf) {
			n, err := b.r.Read(p)
			b.off += int64(n)
			if err != nil {
				b.err = err
			}
			return n, err
		}
		b.start, b.end = 0, 0
		m, err := b.r.Read(b.buf)
		if m < 0 || m > len(b.buf) {
			m, err = 0, errors.New("reader returned an invalid count")
		}
		b.end = m
		if err != nil {
			b.err = err
		}
		if m == 0 {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.start:b.end])
	b.start += n
	b.off += int64(n)
	return n, nil
}
