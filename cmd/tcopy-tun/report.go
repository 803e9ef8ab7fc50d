package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
)

// report ties the intercept's Recorder to one run of the command.
type report struct {
	rec *intercept.Recorder
	out *intercept.Report
}

func newReport(f *replayFlags) *report {
	lim := f.serverLim
	if lim <= 0 || lim > 1<<30 {
		lim = intercept.DefaultRecordLimit
	}
	// Rows are only needed for --report; without it none are kept, so
	// memory follows the sessions in flight even for millions of sessions.
	rows := -1
	if f.report != "" {
		rows = f.reportRows
	}
	return &report{rec: intercept.New(intercept.Options{RecordLimit: int(lim), MaxRows: rows,
		Rules: f.rules, Baseline: f.baseline.IsValid()})}
}

func (r *report) observer() replay.Observer { return r.rec }

// finish snapshots the report once the replay is over.
func (r *report) finish(res *runResult) {
	r.out = r.rec.Report(res.summary)
}

// writeReport writes the JSON report to a file, or to stdout for "-".
func writeReport(e env, name string, r *report) error {
	if name == "-" {
		return r.out.WriteJSON(e.stdout)
	}
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := r.out.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report %q: %w", name, err)
	}
	return nil
}

// writeSummary prints the end-of-run summary on stderr: the replay's
// counters, then how the answers compared with the capture, then what the
// capture reading noticed.
func writeSummary(w io.Writer, res *runResult) {
	fmt.Fprintln(w, "── tcopy-tun summary ──")
	res.summary.WriteText(w)
	if res.report != nil && res.report.out != nil {
		res.report.out.Totals.WriteText(w)
		res.report.out.WriteRequestsText(w)
	}
	cs := res.capStats
	fmt.Fprintf(w, "capture:     %d frames, %d TCP segments", cs.Frames, cs.TCP)
	if cs.Malformed > 0 {
		fmt.Fprintf(w, ", %d malformed skipped", cs.Malformed)
	}
	fmt.Fprintln(w)
	if cs.Warning != nil {
		fmt.Fprintf(w, "warning:     %v\n", cs.Warning)
	}
}
