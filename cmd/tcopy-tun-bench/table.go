package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable prints the results: one line per workload and path (the
// median run), the netstack/socket ratio on the tun line, then issue 5's
// targets.
func writeTable(w io.Writer, rep *benchReport) {
	m := rep.Machine
	fmt.Fprintf(w, "\ntcopy-tun bench: %d × %s, %s, %s; load average %s before, %s after",
		m.CPUs, m.CPUModel, m.Kernel, m.Go, rep.LoadBefore, rep.LoadAfter)
	if rep.Commit != "" {
		fmt.Fprintf(w, "; commit %s", rep.Commit)
		if n := len(rep.Uncommitted); n > 0 {
			fmt.Fprintf(w, " + %d uncommitted source files", n)
		}
	}
	if rep.Quick {
		fmt.Fprint(w, "; QUICK (small captures)")
	}
	if len(rep.ExtraArgs) > 0 {
		fmt.Fprintf(w, "; extra flags %s", strings.Join(rep.ExtraArgs, " "))
	}
	if len(rep.ExtraEnv) > 0 {
		fmt.Fprintf(w, "; environment %s", strings.Join(rep.ExtraEnv, " "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tvia\tsessions\tsessions/s\trequests/s\tMB/s\tCPU s/1k sess\tpeak RSS MiB\tdelivered\tbytes at target\ttun/socket\t")
	for _, wr := range rep.Workloads {
		for _, r := range []*runResult{wr.Tun, wr.Socket} {
			if r == nil {
				continue
			}
			rat := ""
			if r == wr.Tun && wr.Socket != nil {
				rat = fmt.Sprintf("%.2f (%s)", wr.Ratio, metricLabel(wr.Metric))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.0f\t%.1f\t%.3f\t%.0f\t%.2f %%\t%s\t%s\t\n",
				wr.Name, r.Via, r.Expected, r.SessionsPerSec, r.RequestsPerSec, r.MBPerSec,
				r.CPUPer1k, float64(r.MaxRSSBytes)/mib, r.DeliveredPct, bytesAtTarget(r), rat)
		}
		if wr.Tun == nil && wr.Socket == nil && wr.Live == nil {
			fmt.Fprintf(tw, "%s\t-\t%d\tno completed run\t\t\t\t\t\t\t\t\n", wr.Name, wr.Capture.Sessions)
		}
	}
	tw.Flush()

	for _, wr := range rep.Workloads {
		if !paced(wr.Args) {
			continue
		}
		fmt.Fprintf(w, "\n%s: chunk lateness against the captured schedule (p50 / p99 / max)\n", wr.Name)
		for _, r := range []*runResult{wr.Tun, wr.Socket} {
			if r != nil {
				l := r.ChunkLateness
				fmt.Fprintf(w, "  %-6s %d chunks: %.0f µs / %.0f µs / %.0f µs\n", r.Via, l.Count, l.P50us, l.P99us, l.Maxus)
			}
		}
	}

	writeLive(w, rep)
	writeTLSCost(w, rep)

	var goals []string
	for _, wr := range rep.Workloads {
		for _, g := range wr.Targets {
			mark := "met"
			if !g.Met {
				mark = "MISSED"
			}
			goals = append(goals, fmt.Sprintf("%s\t%s\t%s\t%s\t", wr.Name, g.What, g.Got, mark))
		}
	}
	if len(goals) > 0 {
		fmt.Fprintln(w, "\ntargets:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, g := range goals {
			fmt.Fprintln(tw, "  "+g)
		}
		tw.Flush()
	}
	for _, wr := range rep.Workloads {
		for _, r := range wr.Runs {
			if r.Error != "" {
				fmt.Fprintf(w, "note: %s via %s: %s\n", wr.Name, r.Via, r.Error)
			}
		}
	}
	if rep.Interrupted {
		fmt.Fprintln(w, "interrupted: the table holds the replays that completed")
	}
}

// paced reports whether a workload replays at a captured pace (--speed N).
func paced(args []string) bool {
	for i, a := range args {
		if (a == "--speed" || a == "-speed") && i+1 < len(args) && args[i+1] != "max" {
			return true
		}
	}
	return false
}

// bytesAtTarget says how the client bytes the target received compare with
// the capture's: "all" when exactly every byte arrived.
func bytesAtTarget(r *runResult) string {
	if r.ClientBytesExpected == 0 {
		return "-"
	}
	switch d := r.TargetBytesIn - r.ClientBytesExpected; {
	case d == 0:
		return "all"
	case d < 0:
		return fmt.Sprintf("%d B missing", -d)
	default:
		return fmt.Sprintf("%d B extra", d)
	}
}

// writeLive prints the live workload's searches: per path the highest rate
// followed, the offline rate and their ratio, then every step.
func writeLive(w io.Writer, rep *benchReport) {
	for _, wr := range rep.Workloads {
		if len(wr.Live) == 0 {
			continue
		}
		ls0 := wr.Live[0]
		fmt.Fprintf(w, "\n%s: the highest rate of short sessions copied live (--live lo) with 0 kernel drops, every session replayed ok and lag p99 < %v, in steps of %v; load, source, tcopy-tun and target on the same cores\n",
			wr.Name, time.Duration(ls0.LagBoundSeconds*float64(time.Second)), time.Duration(ls0.TrialSeconds*float64(time.Second)))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "via\tfollowed (asked)\tload achieved\tfirst not followed\tlag p99\ttcopy-tun cores\ttcopy-tun CPU s/1k: live\toffline\tload+source CPU s/1k\toffline sess/s\tlive/offline\t")
		for _, ls := range wr.Live {
			best := ls.best()
			lag, cpu, per1k := "-", "-", "-"
			if best != nil {
				lag, cpu, per1k = usDur(best.Lag.P99us).String(), fmt.Sprintf("%.2f", best.CPUShare), fmt.Sprintf("%.3f", best.CPUPer1k)
			}
			failed := "-"
			if ls.FirstFailed > 0 {
				failed = fmt.Sprintf("%.0f/s", ls.FirstFailed)
			} else if ls.AtCeiling {
				failed = "none (ceiling)"
			}
			fmt.Fprintf(tw, "%s\t%.0f/s\t%.0f/s\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.0f\t%.2f\t\n", ls.Via, ls.MaxFollowed, ls.Achieved, failed, lag, cpu, per1k, ls.OfflineCPUPer1k, ls.OthersCPUPer1k, ls.Offline, ls.Ratio)
		}
		tw.Flush()
		fmt.Fprintln(w, "  steps:")
		for _, ls := range wr.Live {
			for i, st := range ls.Steps {
				fmt.Fprintf(w, "  %-6s %d. %s\n", ls.Via, i+1, st.line())
			}
			if ls.Error != "" {
				fmt.Fprintf(w, "  %-6s error: %s\n", ls.Via, ls.Error)
			}
		}
	}
}
