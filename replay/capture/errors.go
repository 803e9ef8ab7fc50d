package capture

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gopacket/gopacket/layers"
)

// Sentinel errors. Every error from this package that a caller may act on
// wraps one of them, so errors.Is works through the context added on the way
// up (file name, frame number).
var (
	// ErrNotCapture: the input is not a capture this package can read
	// (unknown magic). The message says what the input looks like instead
	// ("text file", "gzip-compressed, but not a capture inside", ...).
	ErrNotCapture = errors.New("not a pcap or pcapng capture")
	// ErrUnsupportedLinkType: a frame has a link type this package cannot
	// decode. The concrete error is a *LinkTypeError naming the type.
	ErrUnsupportedLinkType = errors.New("unsupported link type")
	// ErrTruncated: the capture ends in the middle of a record (a file cut
	// short, a stream that stopped mid-write). All complete frames before
	// it have been delivered.
	ErrTruncated = errors.New("capture is truncated")
	// ErrDamaged: the file's structure is invalid (bogus record length,
	// inconsistent block lengths, bad header, corrupt compression). Reading
	// cannot go on past it.
	ErrDamaged = errors.New("capture is damaged")
	// ErrMalformed: one frame could not be decoded (a header too short for
	// its own length fields, a TCP data offset below 5, ...). The file is
	// intact; the Reader counts such frames and skips them.
	ErrMalformed = errors.New("malformed packet")
)

// Error is an error while reading a named capture. Its text is one line:
//
//	read "x.pcap": frame 1812: tcp header: data offset 4 < 5: malformed packet
//
// Frame is 0 when the error is not about a frame (the file header, say).
type Error struct {
	Op    string // "open", "read"
	Name  string // capture name as the user gave it; "-" is stdin
	Frame int    // 1-based frame number, 0 if none
	Err   error
}

func (e *Error) Error() string {
	name := strconv.Quote(e.Name)
	if e.Name == "-" {
		name = "stdin"
	}
	if e.Frame > 0 {
		return e.Op + " " + name + ": frame " + strconv.Itoa(e.Frame) + ": " + e.Err.Error()
	}
	return e.Op + " " + name + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// LinkTypeError reports a link type this package cannot decode. It matches
// ErrUnsupportedLinkType with errors.Is.
type LinkTypeError struct {
	LinkType layers.LinkType
}

func (e *LinkTypeError) Error() string {
	return "unsupported link type " + LinkTypeName(e.LinkType) +
		" (supported: " + supportedLinkTypesText + ")"
}

func (e *LinkTypeError) Is(target error) bool { return target == ErrUnsupportedLinkType }

// kindError is a sentinel plus detail: "<detail>: <sentinel>". It keeps the
// sentinel last so the one-line message reads from the specific to the
// general, and errors.Is finds the sentinel.
type kindError struct {
	detail string
	kind   error
	cause  error // optional underlying error (decompressor, I/O)
}

func (e *kindError) Error() string {
	if e.cause != nil {
		return e.detail + ": " + e.cause.Error() + ": " + e.kind.Error()
	}
	return e.detail + ": " + e.kind.Error()
}

func (e *kindError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

func damaged(format string, args ...any) error {
	return &kindError{detail: fmt.Sprintf(format, args...), kind: ErrDamaged}
}

func truncated(format string, args ...any) error {
	return &kindError{detail: fmt.Sprintf(format, args...), kind: ErrTruncated}
}

func notCapture(format string, args ...any) error {
	return &kindError{detail: fmt.Sprintf(format, args...), kind: ErrNotCapture}
}
