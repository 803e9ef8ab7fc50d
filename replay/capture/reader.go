package capture

import (
	"errors"
	"io"
	"os"
	"sort"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// Stats describes what a Reader has read so far.
type Stats struct {
	Frames int64 // frames read from the source
	Bytes  int64 // captured bytes of those frames
	TCP    int64 // TCP segments returned by Next
	NonTCP int64 // frames without TCP, skipped (ARP, UDP, ICMP, non-IP, ...)
	// Malformed counts frames that could not be decoded and were skipped;
	// FirstMalformed is the first such error, naming its frame.
	Malformed      int64
	FirstMalformed error
	// Truncated counts TCP frames that lost payload to the snap length
	// (Packet.Missing > 0), judged by the IP length: a wire length larger
	// than the captured one alone may be nothing but a cut Ethernet FCS, and
	// cut TCP options lose nothing a replay needs. Their segments are still
	// returned, except TruncatedHeaders of them, cut before the fixed TCP
	// header was whole, which were skipped.
	Truncated        int64
	TruncatedHeaders int64
	Frag             FragStats
	LinkTypes        []LinkTypeCount // frames per link type, by link type
	// First and Last are the capture times of the first and last frame.
	First, Last time.Time
	// Warning is set when the capture was cut short in its last record
	// (it wraps ErrTruncated): everything before was read and used, and
	// Next returned io.EOF.
	Warning error
}

// LinkTypeCount is the number of frames of one link type.
type LinkTypeCount struct {
	LinkType layers.LinkType
	Frames   int64
}

// Reader reads TCP segments from a Source.
//
// Error policy: structural damage of the file (unknown magic, bogus record or
// block length, bad header, corrupt compression) and an unsupported link
// type are fatal: Next returns the error (an *Error naming the capture and
// the frame) and keeps returning it. A malformed packet inside an intact
// file is counted in Stats and skipped. A capture cut short inside its last
// record (ErrTruncated) is not fatal: Next returns every complete segment,
// then io.EOF, and Stats().Warning holds the ErrTruncated error so that the
// caller can report it.
//
// A Reader is not safe for concurrent use. Close closes the Source.
type Reader struct {
	src   Source
	name  string
	dec   Decoder
	pkt   Packet
	stats Stats
	err   error
	// lastLT caches the index in stats.LinkTypes of the last link type
	// seen; almost every capture has one.
	lastLT int
}

// NewReader returns a Reader over src; name is used in error messages
// (Sources already name their own errors).
func NewReader(src Source, name string) *Reader {
	return &Reader{src: src, name: name, lastLT: -1}
}

// Next returns the next TCP segment. The *Packet and its Payload are valid
// until the next call. At the end of the capture it returns io.EOF.
func (r *Reader) Next() (*Packet, error) {
	if r.err != nil {
		return nil, r.err
	}
	for {
		f, err := r.src.ReadFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, err // a quiet wire: the capture goes on
			}
			r.dec.Flush()
			if err == io.EOF {
				r.err = io.EOF
			} else if errors.Is(err, ErrTruncated) {
				r.stats.Warning = err
				r.err = io.EOF
			} else {
				r.err = err
			}
			return nil, r.err
		}
		r.count(&f)
		kind, err := r.dec.Decode(&f, &r.pkt)
		switch kind {
		case KindTCP:
			r.stats.TCP++
			if r.pkt.Missing > 0 {
				r.stats.Truncated++
			}
			return &r.pkt, nil
		case KindNotTCP, KindFragment:
			if kind == KindNotTCP {
				r.stats.NonTCP++
			}
		case KindTruncated:
			r.stats.TruncatedHeaders++
			r.stats.Truncated++
		case KindMalformed:
			r.stats.Malformed++
			if r.stats.FirstMalformed == nil {
				r.stats.FirstMalformed = &Error{Op: "read", Name: r.name, Frame: f.N, Err: err}
			}
		case KindUnsupported:
			r.err = &Error{Op: "read", Name: r.name, Frame: f.N, Err: err}
			return nil, r.err
		}
	}
}

// SetReadDeadline makes Next return an error wrapping
// os.ErrDeadlineExceeded, without ending the capture, when no segment has
// come by t (the zero time: no deadline), so that the caller can move
// capture time on while a live wire is quiet. Only a live source has
// deadlines; for others it returns ErrNoDeadline.
func (r *Reader) SetReadDeadline(t time.Time) error {
	d, ok := r.src.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return ErrNoDeadline
	}
	return d.SetReadDeadline(t)
}

// ErrNoDeadline: the source cannot time out a read.
var ErrNoDeadline = errors.New("capture source has no read deadline")

func (r *Reader) count(f *Frame) {
	s := &r.stats
	s.Frames++
	s.Bytes += int64(len(f.Data))
	if s.Frames == 1 {
		s.First = f.Time
	}
	s.Last = f.Time
	if i := r.lastLT; i >= 0 && s.LinkTypes[i].LinkType == f.LinkType {
		s.LinkTypes[i].Frames++
		return
	}
	for i := range s.LinkTypes {
		if s.LinkTypes[i].LinkType == f.LinkType {
			s.LinkTypes[i].Frames++
			r.lastLT = i
			return
		}
	}
	s.LinkTypes = append(s.LinkTypes, LinkTypeCount{LinkType: f.LinkType, Frames: 1})
	r.lastLT = len(s.LinkTypes) - 1
}

// Stats returns the counters so far. The result is a copy.
func (r *Reader) Stats() Stats {
	s := r.stats
	s.Frag = r.dec.FragStats()
	s.LinkTypes = append([]LinkTypeCount(nil), r.stats.LinkTypes...)
	sort.Slice(s.LinkTypes, func(i, j int) bool { return s.LinkTypes[i].LinkType < s.LinkTypes[j].LinkType })
	return s
}

// Close closes the Source. It is idempotent.
func (r *Reader) Close() error {
	if r.src == nil {
		return nil
	}
	src := r.src
	r.src = nil
	if r.err == nil {
		r.err = errClosed
	}
	return src.Close()
}
