package main

import (
	"io"

	"github.com/tcopy-tun/tcopy-tun/intercept/htmlreport"
)

// writeHTML writes the report as one self-contained HTML page (--html):
// drawn from the same report as the JSON one. outputFlags opens its file
// before anything is sent; writeOutputs writes it when the run ends.
func writeHTML(r *report) func(w io.Writer) error {
	return func(w io.Writer) error { return htmlreport.Write(w, r.out) }
}
