package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tcopy-tun/tcopy-tun/intercept/htmlreport"
)

// writeHTML writes the report as one self-contained HTML page (--html):
// the same report the JSON one is made from.
func writeHTML(r *report) func(w io.Writer) error {
	return func(w io.Writer) error { return htmlreport.Write(w, r.out) }
}

// htmlOutput is --html until the run's outputs are opened in one place:
// the file is created before anything is sent, so that a path that cannot
// be written fails at once, and written when the run ends (also when it
// was interrupted).
type htmlOutput struct {
	name string
	f    *os.File // nil for standard output
	w    io.Writer
}

func openHTML(e env, name string) (*htmlOutput, error) {
	if name == "" {
		return nil, nil
	}
	if name == "-" {
		return &htmlOutput{name: name, w: e.stdout}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("--html: %w", err)
	}
	return &htmlOutput{name: name, f: f, w: f}, nil
}

// write writes the page and closes the file.
func (h *htmlOutput) write(r *report) error {
	if h == nil {
		return nil
	}
	err := writeHTML(r)(h.w)
	if h.f != nil {
		if cerr := h.f.Close(); err == nil {
			err = cerr
		}
		h.f = nil
	}
	if err != nil {
		return fmt.Errorf("--html %q: %w", h.name, err)
	}
	return nil
}

// close closes a file that was never written, and removes it: a run that
// failed before it had a report leaves no empty page behind.
func (h *htmlOutput) close() {
	if h == nil || h.f == nil {
		return
	}
	h.f.Close()
	os.Remove(h.name)
	h.f = nil
}
