package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tcopy-tun/tcopy-tun/intercept"
	"github.com/tcopy-tun/tcopy-tun/replay"
	"github.com/tcopy-tun/tcopy-tun/replay/agent"
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
	return &report{rec: intercept.New(intercept.Options{RecordLimit: int(lim), MaxRows: rows})}
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
	if res.agents != nil {
		writeAgents(w, res.agents)
	}
}

// writeAgents prints what the capture agents sent: totals, then one line
// per agent.
func writeAgents(w io.Writer, s *agent.Stats) {
	fmt.Fprintf(w, "agents:      %d connected in all, %d failed, %d refused, %d stalls; %d frames merged, %d late (timestamp raised), %d cut to the snap length\n",
		s.Accepted, s.Failed, s.Refused, s.Stalls, s.Frames, s.Late, s.Cut)
	for _, a := range s.Agents {
		end := a.End
		if end == "" {
			end = "connected at the end"
		}
		fmt.Fprintf(w, "  agent %s: %d frames, %d late, %d stalls; %s\n", a.Name, a.Frames, a.Late, a.Stalls, end)
	}
	if n := s.Accepted - len(s.Agents); n > 0 {
		fmt.Fprintf(w, "  and %d more agents\n", n)
	}
}
