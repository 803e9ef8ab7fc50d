package session

import (
	"errors"
	"io"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// Build reads r to its end through a Builder with cfg, calling emit for each
// complete session (see Collect) as soon as it ends in the capture, and returns the
// Builder's counters. It does not close r.
//
// At the end of the capture (io.EOF, which includes a capture cut short in
// its last record: see capture.Reader) it flushes the sessions still open
// and returns a nil error. On any other read error it also flushes them (the
// capture ended there for every session it holds) and returns the error.
// Sessions are handed on while the capture is read, so a caller that must
// not act on part of a damaged capture has to hold them until Build
// returns.
func Build(r *capture.Reader, cfg Config, emit func(*Session)) (Stats, error) {
	b := NewBuilder(cfg, Collect(emit))
	err := b.ReadFrom(r)
	b.Close()
	return b.Stats(), err
}

// ReadFrom adds every segment of r until its end, without closing the
// Builder: several readers may feed one Builder in sequence (a capture
// rotated into files). It returns nil at io.EOF and the reader's error
// otherwise.
func (b *Builder) ReadFrom(r *capture.Reader) error {
	for {
		p, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		b.Add(p)
	}
}
