package main

import (
	"fmt"
	"math"
	"time"
)

// The live workload: the highest rate of short sessions that live copy
// (tcopy-tun --live lo) follows on this machine, with the load, the source
// server, the replay and the target all on the same cores, next to the
// offline replay rate of sessions of the same shape (the short workload's
// capture at --speed max).
//
// This file holds the pure part: the search over rates and the verdict on
// one step, tested without root. liverun.go runs the steps.

// liveSpec is how the rate is searched.
type liveSpec struct {
	// Start is the first rate tried (sessions/s); each step that follows
	// multiplies it by Factor, until a step does not follow, MaxRate is
	// followed, or MaxGrow steps ran. A first step that does not follow
	// divides by Factor instead (as long as the rate stays ≥ MinRate).
	Start, Factor    float64
	MinRate, MaxRate float64
	MaxGrow          int
	// Bisect steps then split the interval between the highest rate that
	// followed and the lowest that did not (geometric middle).
	Bisect int
	// Trial is how long the load runs in each step.
	Trial time.Duration
	// LagBound is the live lag p99 a step may have and still follow.
	LagBound time.Duration
	// Settle is how long, after the load's end, the harness waits at most
	// for the target to see every request before it stops the copy.
	Settle time.Duration
}

// maxSteps bounds the steps of one search.
func (s liveSpec) maxSteps() int { return s.MaxGrow + s.Bisect }

// liveStep is one step of the search: the load at one rate, copied live.
type liveStep struct {
	Via       string  `json:"via"`
	RateAsked float64 `json:"rate_asked"`
	// What the load generator did (sessions/s and counts).
	RateAchieved float64 `json:"rate_achieved"`
	LoadStarted  int64   `json:"load_sessions_started"`
	LoadOK       int64   `json:"load_sessions_ok"`
	LoadFailed   int64   `json:"load_sessions_failed"`
	LoadMissed   int64   `json:"load_sessions_missed"`
	LoadError    string  `json:"load_first_error,omitempty"`
	// What tcopy-tun's report said.
	CaptureDrops int64    `json:"capture_drops"`
	Replayed     int64    `json:"sessions_replayed"`
	Succeeded    int64    `json:"sessions_succeeded"`
	Failed       int64    `json:"sessions_failed"`
	Incomplete   int64    `json:"sessions_capture_incomplete"`
	NotStarted   int64    `json:"sessions_not_started"`
	Lag          lateness `json:"live_lag"`
	ExitCode     int      `json:"exit_code"`
	// Requests the target answered during the step.
	TargetRequests int64 `json:"target_requests"`
	// CPU seconds (user + system) during the step: tcopy-tun's own from
	// the end of its set-up to its exit (wait4's total less what /proc
	// showed when it was ready), the load generator's, the source server's
	// and the target's.
	CPU       float64 `json:"tcopy_tun_cpu_seconds"`
	CPUShare  float64 `json:"tcopy_tun_cpu_per_load_second"` // CPU over the load's wall time: 1.0 is one core
	CPUPer1k  float64 `json:"tcopy_tun_cpu_seconds_per_1000_sessions"`
	LoadCPU   float64 `json:"load_cpu_seconds"`
	SourceCPU float64 `json:"source_cpu_seconds"`
	TargetCPU float64 `json:"target_cpu_seconds"`
	LoadWall  float64 `json:"load_seconds"`
	// MachineBusy is the share of all the machine's cores busy while the
	// load ran (/proc/stat): near 1, the step was bound by CPU; well below
	// it, by something else (and it shows other work on the host too).
	MachineBusy float64 `json:"machine_busy"`
	MaxRSS      int64   `json:"tcopy_tun_peak_rss_bytes"`
	Follows     bool    `json:"follows"`
	Why         string  `json:"why_not,omitempty"`
	Error       string  `json:"error,omitempty"`
	StopToExit  float64 `json:"stop_to_exit_seconds"`
	Profile     string  `json:"profile,omitempty"` // perf report (-profile), top symbols
}

// judge decides whether the copy followed the step's load, and says why
// not: the kernel dropped nothing, every session the load made was
// replayed and succeeded (none not started, none capture-incomplete), the
// live lag p99 stayed within the bound, and the load itself reached the
// rate asked (a generator that could not keep up on the shared cores did
// not load the copy at that rate).
func (s *liveStep) judge(lagBound time.Duration) {
	why := ""
	switch {
	case s.Error != "":
		why = "error: " + s.Error
	case s.LoadOK == 0:
		why = "the load made no session"
	case s.LoadFailed > 0:
		why = fmt.Sprintf("%d of the load's sessions failed at the source (%s)", s.LoadFailed, s.LoadError)
	case s.RateAchieved < 0.9*s.RateAsked:
		why = fmt.Sprintf("the load reached %.0f/s of %.0f/s (%d starts missed)", s.RateAchieved, s.RateAsked, s.LoadMissed)
	case s.CaptureDrops > 0:
		why = fmt.Sprintf("the kernel dropped %d packets", s.CaptureDrops)
	case s.Incomplete > 0:
		why = fmt.Sprintf("%d sessions capture-incomplete", s.Incomplete)
	case s.NotStarted > 0:
		why = fmt.Sprintf("%d sessions not started", s.NotStarted)
	case s.Failed > 0:
		why = fmt.Sprintf("%d sessions failed", s.Failed)
	case s.Replayed != s.LoadOK || s.Succeeded != s.LoadOK:
		why = fmt.Sprintf("%d replayed, %d succeeded of the load's %d sessions", s.Replayed, s.Succeeded, s.LoadOK)
	case s.Lag.Count == 0:
		why = "the report has no live lag"
	case s.Lag.P99us > float64(lagBound/time.Microsecond):
		why = fmt.Sprintf("live lag p99 %s > %s", usDur(s.Lag.P99us), lagBound)
	}
	s.Follows, s.Why = why == "", why
}

// liveSearch is one search (one path): its steps and the verdict.
type liveSearch struct {
	Via string `json:"via"`
	// TrialSeconds is each step's load; LagBoundSeconds the lag p99 a step
	// may have and follow.
	TrialSeconds    float64     `json:"step_seconds"`
	LagBoundSeconds float64     `json:"lag_bound_seconds"`
	Steps           []*liveStep `json:"steps"`
	// MaxFollowed is the highest rate asked that the copy followed (0:
	// none); Achieved the load's rate in that step. AtCeiling says the
	// search stopped at the spec's MaxRate, not at a failure.
	MaxFollowed float64 `json:"max_followed_rate"`
	Achieved    float64 `json:"max_followed_achieved_rate"`
	FirstFailed float64 `json:"lowest_failed_rate,omitempty"`
	AtCeiling   bool    `json:"at_ceiling,omitempty"`
	// Offline is the offline replay rate (sessions/s at --speed max) of
	// the short workload's capture through the same path, and Ratio
	// Achieved/Offline.
	Offline     float64 `json:"offline_sessions_per_second"`
	OfflineFrom string  `json:"offline_from,omitempty"`
	Ratio       float64 `json:"live_offline_ratio,omitempty"`
	// OfflineCPUPer1k is tcopy-tun's CPU per 1,000 sessions offline, to
	// set beside the live steps' (the capture's own cost per session).
	OfflineCPUPer1k float64 `json:"offline_cpu_seconds_per_1000_sessions,omitempty"`
	// OthersCPUPer1k is what the load generator and the source server
	// spent per 1,000 sessions in the best step: CPU the offline replay
	// does not share its cores with.
	OthersCPUPer1k float64 `json:"load_and_source_cpu_seconds_per_1000_sessions,omitempty"`
	Error          string  `json:"error,omitempty"`
}

// searchRate runs the search: steps at growing rates until one does not
// follow, then bisection between the highest that followed and the lowest
// that did not. try runs one step; an error from it (the step could not be
// run at all, or the run was interrupted) ends the search. The number of
// steps is bounded by spec.maxSteps().
func searchRate(spec liveSpec, try func(rate float64) (*liveStep, error)) (*liveSearch, error) {
	ls := &liveSearch{TrialSeconds: spec.Trial.Seconds(), LagBoundSeconds: spec.LagBound.Seconds()}
	var lo, hi float64 // highest followed, lowest not followed (0: none yet)
	step := func(rate float64) (bool, error) {
		st, err := try(rate)
		if st != nil {
			ls.Steps = append(ls.Steps, st)
		}
		if err != nil {
			return false, err
		}
		if st.Follows {
			if rate > lo {
				lo, ls.Achieved = rate, st.RateAchieved
			}
		} else if hi == 0 || rate < hi {
			hi = rate
		}
		return st.Follows, nil
	}
	done := func(err error) (*liveSearch, error) {
		ls.MaxFollowed, ls.FirstFailed = lo, hi
		ls.AtCeiling = hi == 0 && lo >= spec.MaxRate
		return ls, err
	}
	rate := roundRate(spec.Start)
	for n := 0; n < spec.MaxGrow; n++ {
		ok, err := step(rate)
		if err != nil {
			return done(err)
		}
		if ok && hi == 0 {
			if rate >= spec.MaxRate {
				return done(nil)
			}
			rate = roundRate(math.Min(rate*spec.Factor, spec.MaxRate))
			continue
		}
		if !ok && lo == 0 {
			// Nothing followed yet: go down.
			next := roundRate(rate / spec.Factor)
			if next < spec.MinRate || next >= rate {
				return done(nil)
			}
			rate = next
			continue
		}
		break // lo < hi: bracketed
	}
	for b := 0; b < spec.Bisect && lo > 0 && hi > 0; b++ {
		mid := roundRate(math.Sqrt(lo * hi))
		if mid <= lo || mid >= hi {
			break
		}
		if _, err := step(mid); err != nil {
			return done(err)
		}
	}
	return done(nil)
}

// roundRate rounds a rate to two significant digits (5657 → 5700), so the
// rates of the table read as what they are: a bracket, not a measurement
// to the session.
func roundRate(r float64) float64 {
	if r <= 0 {
		return 0
	}
	e := math.Pow(10, math.Floor(math.Log10(r))-1)
	return math.Round(r/e) * e
}

// usDur formats microseconds as a duration.
func usDur(us float64) time.Duration {
	d := time.Duration(us * 1e3)
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// line is a step's one-line summary.
func (s *liveStep) line() string {
	verdict := "follows"
	if !s.Follows {
		verdict = "does not follow: " + s.Why
	}
	if s.Error != "" {
		return fmt.Sprintf("asked %.0f/s: %s", s.RateAsked, verdict)
	}
	return fmt.Sprintf("asked %.0f/s, load %.0f/s (%d sessions, %d failed, %d missed); drops %d; replayed %d, ok %d, capture-incomplete %d, not started %d; lag p50 %s p99 %s max %s; CPU s: tcopy-tun %.2f (%.2f of a core, %.3f s/1k sessions), load %.2f, source %.2f, target %.2f; machine %.0f %% busy; exit %.1fs after the stop: %s",
		s.RateAsked, s.RateAchieved, s.LoadOK, s.LoadFailed, s.LoadMissed, s.CaptureDrops, s.Replayed, s.Succeeded, s.Incomplete, s.NotStarted,
		usDur(s.Lag.P50us), usDur(s.Lag.P99us), usDur(s.Lag.Maxus), s.CPU, s.CPUShare, s.CPUPer1k, s.LoadCPU, s.SourceCPU, s.TargetCPU, 100*s.MachineBusy, s.StopToExit, verdict)
}

// best is the step at the highest rate followed (nil: none).
func (ls *liveSearch) best() *liveStep {
	var b *liveStep
	for _, st := range ls.Steps {
		if st.Follows && (b == nil || st.RateAsked > b.RateAsked) {
			b = st
		}
	}
	return b
}
