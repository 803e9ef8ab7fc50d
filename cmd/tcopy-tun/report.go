package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"

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
	return &report{rec: intercept.New(intercept.Options{RecordLimit: int(lim), MaxRows: rows,
		Rules: f.rules, Baseline: f.baseline.IsValid()})}
}

func (r *report) observer() replay.Observer { return r.rec }

// finish snapshots the report once the replay is over.
func (r *report) finish(res *runResult) {
	r.out = r.rec.Report(res.summary)
}

// addAgents adds the capture agents' counters to the report, as "agents".
func (r *report) addAgents(s *agent.Stats) {
	if r.out == nil || s == nil {
		return
	}
	j := agentsJSON{Accepted: s.Accepted, Failed: s.Failed, Refused: s.Refused, Stalls: s.Stalls,
		Frames: s.Frames, Late: s.Late, Cut: s.Cut, MaxHeldBytes: s.MaxHeld, List: []agentJSON{}}
	for _, a := range s.Agents {
		row := agentJSON{Name: a.Name, Connected: a.Connected.UTC().Format(time.RFC3339Nano), End: a.End,
			Frames: a.Frames, Bytes: a.Bytes, Late: a.Late, Cut: a.Cut, Stalls: a.Stalls}
		if !a.Ended.IsZero() {
			row.Ended = a.Ended.UTC().Format(time.RFC3339Nano)
		}
		j.List = append(j.List, row)
	}
	r.out.Extras = append(r.out.Extras, intercept.Extra{Name: "agents", Value: j})
}

// addTLS adds the TLS counters to the report, as "tls".
func (r *report) addTLS(t *tlsRun) {
	if r.out == nil || t == nil {
		return
	}
	s := t.summary()
	if s.Sessions+s.Handshakes+s.HandshakeFailed == 0 && !t.active.Load() {
		return // a plaintext replay: its report is as before
	}
	r.out.Extras = append(r.out.Extras, intercept.Extra{Name: "tls", Value: s})
}

// agentsJSON is the report's "agents" member (--pcap-listen, --pcap
// tcp://): totals, then the first 256 agents in connection order.
type agentsJSON struct {
	Accepted     int         `json:"accepted"`
	Failed       int         `json:"failed"`
	Refused      int         `json:"refused"`
	Stalls       int         `json:"stalls"`
	Frames       int64       `json:"frames"`
	Late         int64       `json:"late"`
	Cut          int64       `json:"cut"`
	MaxHeldBytes int64       `json:"max_held_bytes"`
	List         []agentJSON `json:"list"`
}

type agentJSON struct {
	Name      string `json:"name"`
	Connected string `json:"connected"`
	Ended     string `json:"ended,omitempty"`
	End       string `json:"end"` // "" while connected
	Frames    int64  `json:"frames"`
	Bytes     int64  `json:"bytes"`
	Late      int64  `json:"late"`
	Cut       int64  `json:"cut"`
	Stalls    int    `json:"stalls"`
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
	if res.tls != nil {
		res.tls.summary().writeText(w)
	}
	if p := res.pcap; p != nil {
		fmt.Fprintf(w, "pcap:        %d packets (%d bytes) written to %s, %d connections named by their session", p.stats.Packets, p.stats.Bytes, p.name, p.stats.Comments)
		if p.stats.Dropped > 0 {
			fmt.Fprintf(w, ", %d packets dropped (the writer could not keep up)", p.stats.Dropped)
		}
		fmt.Fprintln(w)
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

// logSummary is the end-of-run summary as one log record, for
// --log-format json: the summary and the answers' totals in the report's
// JSON form, and what the capture reading counted.
func logSummary(e env, res *runResult) {
	cs := res.capStats
	args := []any{
		"summary", res.summary,
		slog.Group("capture", "frames", cs.Frames, "segments", cs.TCP, "malformed", cs.Malformed),
	}
	if res.report != nil && res.report.out != nil {
		args = append(args, "totals", res.report.out.Totals)
	}
	if cs.Warning != nil {
		args = append(args, "warning", cs.Warning.Error())
	}
	e.logger().Info("summary", args...)
}
