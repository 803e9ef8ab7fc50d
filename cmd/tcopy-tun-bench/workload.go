package main

import (
	"fmt"
	"strings"
	"time"
)

// workload is one line pair of the table: a capture, replayed with the
// same flags through each path.
type workload struct {
	Name        string
	Description string
	Capture     capSpec
	Args        []string // tcopy-tun flags beyond the common ones
	// Metric is the column the netstack/socket ratio is taken on.
	Metric string
	// Runs is how many times each path replays the capture by default (the
	// table shows the median): the sub-second workloads are noisy.
	Runs int
	// targets are issue 5's goals for this workload.
	targets []goal
	// Live makes it the live workload (live.go): a search for the highest
	// rate live copy follows; Capture is then the short capture whose
	// offline rate it is compared with.
	Live *liveSpec
	// TLS workloads (Capture.TLS) replay against the TLS target, with the
	// capture's key log, and are costed against their plaintext twin
	// (tlscost.go).
}

// goal is one of issue 5's targets, checked against a workload's results.
type goal struct {
	what  string
	check func(tun, socket *runResult) (got string, met bool)
}

const (
	mib = 1 << 20
	// uploadReply is the body of the upload workload's answer: short, so
	// that the answer compares as identical and the bytes are the upload's.
	uploadReply = 64
)

// workloads returns the bench's workloads, full size or quick (for a check
// that the harness works, in seconds).
func workloads(quick bool) []*workload {
	n := func(full, small int) int {
		if quick {
			return small
		}
		return full
	}
	short := capSpec{Kind: "short", Sessions: n(10000, 1000), Requests: 1, Body: 256, Clients: n(1000, 100),
		Spacing: 100 * time.Microsecond, Think: time.Millisecond}
	million := short
	million.Sessions, million.Clients = n(1_000_000, 20_000), 65534
	keep := capSpec{Kind: "keepalive", Sessions: n(200, 20), Requests: 50, Body: 1024, Clients: n(200, 20),
		Spacing: 500 * time.Microsecond, Think: time.Millisecond, ClientThink: 2 * time.Millisecond}
	pipe := keep
	pipe.Kind, pipe.Depth = "pipelined", 10
	bulk := capSpec{Kind: "bulk", Sessions: n(4, 1), Requests: 1, Body: int64(n(256, 16)) * mib, Upload: int64(n(256, 16)) * mib,
		Clients: n(4, 1), Spacing: time.Millisecond}
	// upload is one connection that POSTs Upload bytes and gets a short
	// answer at the end: what the replayer holds of one large client
	// stream (peak RSS), and whether all of it reaches the target.
	upload := capSpec{Kind: "upload", Sessions: 1, Requests: 1, Body: uploadReply, Upload: int64(n(384, 32)) * mib,
		Clients: 1, Spacing: time.Millisecond}

	// timing is a light keep-alive load replayed at the captured pace: the
	// replay waits for each request's time, so what is measured is how
	// precisely it does.
	timing := capSpec{Kind: "keepalive", Sessions: n(100, 20), Requests: 20, Body: 1024, Clients: n(100, 20),
		Spacing: 10 * time.Millisecond, Think: time.Millisecond, ClientThink: 20 * time.Millisecond}

	// live: steps of a few seconds each, bounded in number: about 35 s
	// per path here (a minute and a bit for both), 10 s quick. The lag
	// bound is an eighth of a step: a copy that falls behind the load by
	// more than an eighth of its rate builds a backlog past it within the
	// step (a bound near the step's length would let a copy that never
	// keeps up pass, its backlog held by the capture buffer).
	live := &liveSpec{Start: 1000, Factor: 2, MinRate: 100, MaxRate: 64000, MaxGrow: n(7, 3), Bisect: n(2, 1),
		Trial: time.Duration(n(4000, 1000)) * time.Millisecond, LagBound: 500 * time.Millisecond, Settle: 3 * time.Second}

	// The TLS workloads: short and keep-alive sessions through TLS 1.3,
	// each a full handshake (tlsgen.go). Fewer than their plaintext twins:
	// a new handshake per session costs the target and the replay far
	// more than a plaintext session.
	tlsShort := short
	tlsShort.TLS, tlsShort.Sessions, tlsShort.Clients = true, n(3000, 300), n(300, 30)
	tlsKeep := keep
	tlsKeep.TLS = true

	shortGoals := []goal{
		{"≥ 12,000 sessions/s via tun", func(t, _ *runResult) (string, bool) {
			return fmt.Sprintf("%.0f/s", t.SessionsPerSec), t.SessionsPerSec >= 12000
		}},
		{"100 % delivered via tun", func(t, _ *runResult) (string, bool) {
			return fmt.Sprintf("%.2f %%", t.DeliveredPct), t.Succeeded == t.Expected
		}},
		ratioGoal("sessions_per_second", 0.9),
	}
	return []*workload{
		{Name: "short", Description: fmt.Sprintf("%d short HTTP/1.1 sessions (Connection: close), causal order", short.Sessions),
			Capture: short, Metric: "sessions_per_second", Runs: 3, targets: shortGoals},
		{Name: "short-nocausal", Description: fmt.Sprintf("the same %d sessions, --no-causal-order", short.Sessions),
			Capture: short, Args: []string{"--no-causal-order"}, Metric: "sessions_per_second", Runs: 3, targets: shortGoals},
		{Name: "keepalive", Description: fmt.Sprintf("%d keep-alive connections × %d requests", keep.Sessions, keep.Requests),
			Capture: keep, Metric: "requests_per_second", Runs: 3, targets: []goal{ratioGoal("requests_per_second", 0.9)}},
		{Name: "pipelined", Description: fmt.Sprintf("%d connections × %d requests, pipelined %d deep", pipe.Sessions, pipe.Requests, pipe.Depth),
			Capture: pipe, Metric: "requests_per_second", Runs: 3, targets: []goal{ratioGoal("requests_per_second", 0.9)}},
		{Name: "bulk", Description: fmt.Sprintf("%d sessions × %d MiB each way", bulk.Sessions, bulk.Body/mib),
			Capture: bulk, Metric: "mb_per_second", Runs: 1, targets: []goal{ratioGoal("mb_per_second", 0.8)}},
		{Name: "upload", Description: fmt.Sprintf("1 connection uploading %d MiB, a %d-byte answer at the end: peak RSS", upload.Upload/mib, upload.Body),
			Capture: upload, Metric: "mb_per_second", Runs: 1, targets: []goal{
				{"peak RSS < 256 MiB via tun", func(t, _ *runResult) (string, bool) {
					return fmt.Sprintf("%.0f MiB", float64(t.MaxRSSBytes)/mib), t.MaxRSSBytes < 256*mib
				}},
				{"every uploaded byte at the target, tun and socket", func(t, s *runResult) (string, bool) {
					got := "tun " + bytesAtTarget(t)
					if s != nil {
						got += ", socket " + bytesAtTarget(s)
					}
					return got, t.AllBytesDelivered && (s == nil || s.AllBytesDelivered)
				}},
			}},
		{Name: "timing", Description: fmt.Sprintf("%d keep-alive connections × %d requests at --speed 1: chunk lateness", timing.Sessions, timing.Requests),
			Capture: timing, Args: []string{"--speed", "1"}, Metric: "requests_per_second", Runs: 1, targets: []goal{
				{"chunk lateness p50 < 100 µs via tun", func(t, _ *runResult) (string, bool) {
					return fmt.Sprintf("%.0f µs", t.ChunkLateness.P50us), t.ChunkLateness.Count > 0 && t.ChunkLateness.P50us < 100
				}},
				{"chunk lateness p99 < 1 ms via tun", func(t, _ *runResult) (string, bool) {
					return fmt.Sprintf("%.0f µs", t.ChunkLateness.P99us), t.ChunkLateness.Count > 0 && t.ChunkLateness.P99us < 1000
				}},
			}},
		{Name: "tls-short", Description: fmt.Sprintf("%d short HTTPS sessions (TLS 1.3, full handshake, Connection: close), decrypted with the key log, new handshakes to a TLS target", tlsShort.Sessions),
			Capture: tlsShort, Metric: "sessions_per_second", Runs: 3, targets: tlsGoals()},
		{Name: "tls-keepalive", Description: fmt.Sprintf("%d keep-alive HTTPS connections × %d requests (TLS 1.3)", tlsKeep.Sessions, tlsKeep.Requests),
			Capture: tlsKeep, Metric: "requests_per_second", Runs: 3, targets: tlsGoals()},
		{Name: "live", Description: fmt.Sprintf("live copy (--live lo) of short sessions made at a fixed rate: the highest rate followed with 0 kernel drops, %v steps, against the offline rate of the short capture", live.Trial),
			Capture: short, Metric: "sessions_per_second", Runs: 3, Live: live},
		{Name: "million", Description: fmt.Sprintf("%d short sessions: memory", million.Sessions),
			Capture: million, Metric: "sessions_per_second", Runs: 1, targets: []goal{
				{"peak RSS < 256 MiB via tun", func(t, _ *runResult) (string, bool) {
					return fmt.Sprintf("%.0f MiB", float64(t.MaxRSSBytes)/mib), t.MaxRSSBytes < 256*mib
				}},
				{"100 % delivered via tun", func(t, _ *runResult) (string, bool) {
					return fmt.Sprintf("%.2f %%", t.DeliveredPct), t.Succeeded == t.Expected
				}},
			}},
	}
}

func ratioGoal(metric string, min float64) goal {
	return goal{fmt.Sprintf("tun/socket ≥ %.1f on %s", min, metricLabel(metric)), func(t, s *runResult) (string, bool) {
		r := ratio(t, s, metric)
		return fmt.Sprintf("%.2f", r), r >= min
	}}
}

func ratio(t, s *runResult, metric string) float64 {
	if t == nil || s == nil || s.metric(metric) == 0 {
		return 0
	}
	return t.metric(metric) / s.metric(metric)
}

func metricLabel(m string) string {
	switch m {
	case "sessions_per_second":
		return "sessions/s"
	case "requests_per_second":
		return "requests/s"
	case "mb_per_second":
		return "MB/s"
	}
	return m
}

// selectWorkloads picks workloads by a comma-separated list of names (empty
// or "all": every one).
func selectWorkloads(all []*workload, list string) ([]*workload, error) {
	list = strings.TrimSpace(list)
	if list == "" || list == "all" {
		return all, nil
	}
	byName := map[string]*workload{}
	var names []string
	for _, w := range all {
		byName[w.Name] = w
		names = append(names, w.Name)
	}
	var out []*workload
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		w, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("unknown workload %q (have %s)", n, strings.Join(names, ", "))
		}
		seen[n] = true
		out = append(out, w)
	}
	return out, nil
}
