package metrics

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcopy-tun/tcopy-tun/replay"
)

// collector is the Exporter seen as a prometheus.Collector: it reads the
// counters at each scrape.
type collector Exporter

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// The metrics read at scrape time. README ("Metrics and logs") lists them
// all with their meaning: keep it in step.
var (
	dRead        = desc("sessions_read_total", "Sessions that began in the capture and reached the replay, selected or not.")
	dSkipped     = desc("sessions_skipped_total", "Sessions left out by --sample or --shard.")
	dUnmapped    = desc("sessions_unmapped_total", "Sessions of a captured server without a target (--target, --map).")
	dPlanned     = desc("sessions_planned_total", "Session copies scheduled (--multiply copies per selected session).")
	dStarted     = desc("sessions_started_total", "Session copies begun: a dial was attempted.")
	dNotStarted  = desc("sessions_not_started_total", "Planned session copies that never began (interrupted, --duration reached).")
	dFinished    = desc("sessions_finished_total", "Session copies finished, by outcome (ok, refused, reset, timeout, deviation, canceled, other, capture-incomplete).", "outcome")
	dInFlight    = desc("sessions_in_flight", "Session copies running now: begun and not finished.")
	dShed        = desc("sessions_shed_total", "Sessions given up before they started: the reader could not wait for them and the byte budget was spent.")
	dDropped     = desc("sessions_dropped_total", "Live sessions whose client bytes did not fit their window or the budget; each was replayed up to the first dropped byte.")
	dDropBytes   = desc("dropped_bytes_total", "Client bytes of live sessions that could not be buffered and were not replayed.")
	dPeerWait    = desc("peer_timeouts_total", "Sessions that stopped waiting for a peer connection's progress after --turn-timeout.")
	dSent        = desc("sent_bytes_total", "Client bytes written to the target, counted as written.")
	dReceived    = desc("received_bytes_total", "Bytes the target sent back, counted as received.")
	dTurns       = desc("turns_total", "Client turns written to the target: one per captured client chunk.")
	dDeviations  = desc("deviations_total", "Where the target departed from the capture, by kind: turn_timeout (no answer within --turn-timeout), quiet_turn (a shorter answer), early_close, close_timeout, lost_turn (a turn after client bytes the capture lost).", "kind")
	dAnswers     = desc("answers_total", "Finished sessions by how the target's answer compared with the captured one (identical, volatile, same-length, different, missing, not-comparable, not-replayed).", "match")
	dEndMiss     = desc("sessions_end_mismatch_total", "Connected sessions whose replay ended differently from the capture.")
	dRequests    = desc("requests_total", "Requests (HTTP messages, RESP commands, other protocols' turns) whose answers the per-request comparison judged or tried to.")
	dReqSame     = desc("requests_same_total", "Requests answered the same as the reference (the baseline with --baseline, else the capture) after the rules.")
	dReqNotComp  = desc("requests_not_compared_total", "Requests without a verdict: one side did not answer, a hole, past --response-limit, or a session cut short.")
	dReqNoise    = desc("requests_noise", "Requests whose answers differ from the reference only in noise (fields that also differ between baseline and capture, or between baseline answers), as learned so far.")
	dRegressions = desc("requests_regressions", "Requests whose answers differ from the reference beyond noise and --ignore: regressions, as judged with the noise learned so far (a gauge: learning more noise can lower it).")

	dRunInfo  = desc("run_info", "The current run: its id (the client mapping's seed) and speed; always 1.", "run_id", "speed")
	dRunStart = desc("run_start_timestamp_seconds", "When the current run began (Unix time).")
	dPasses   = desc("run_passes_total", "Passes over the capture begun (--loop).")

	dFrames    = desc("capture_frames_total", "Frames read from a capture source.", "source")
	dCapBytes  = desc("capture_bytes_total", "Captured bytes of those frames.", "source")
	dSegments  = desc("capture_segments_total", "TCP segments decoded from a capture source.", "source")
	dNotTCP    = desc("capture_not_tcp_total", "Frames without TCP, skipped (ARP, UDP, ICMP, ...).", "source")
	dMalformed = desc("capture_malformed_total", "Frames that could not be decoded, skipped.", "source")
	dTruncated = desc("capture_truncated_total", "TCP frames that lost payload to the snap length.", "source")
	dKernDrops = desc("capture_kernel_drops_total", "Frames of a live interface that the kernel dropped because the reader fell behind (PACKET_STATISTICS).", "source")
)

var scraped = []*prometheus.Desc{
	dRead, dSkipped, dUnmapped, dPlanned, dStarted, dNotStarted, dFinished, dInFlight,
	dShed, dDropped, dDropBytes, dPeerWait, dSent, dReceived, dTurns, dDeviations,
	dAnswers, dEndMiss, dRequests, dReqSame, dReqNotComp, dReqNoise, dRegressions, dRunInfo, dRunStart, dPasses,
	dFrames, dCapBytes, dSegments, dNotTCP, dMalformed, dTruncated, dKernDrops,
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range scraped {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	x := (*Exporter)(c)
	x.mu.Lock()
	r, rec, total, sources, agents := x.runner, x.rec, x.base, append([]*Source(nil), x.sources...), x.agents
	x.mu.Unlock()
	if agents != nil {
		collectAgents(ch, agents)
	}
	// Read the run outside the lock: Summary and Totals take their own.
	total.add(snapshot(r, rec))

	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(dRead, total.read)
	counter(dSkipped, total.skipped)
	counter(dUnmapped, total.unmapped)
	counter(dPlanned, total.planned)
	counter(dStarted, total.started)
	counter(dNotStarted, total.notStarted)
	for i, l := range outcomeLabels {
		counter(dFinished, total.outcomes[i], l)
	}
	counter(dShed, total.shed)
	counter(dDropped, total.droppedSessions)
	counter(dDropBytes, total.droppedBytes)
	counter(dPeerWait, total.peerTimeouts)
	counter(dSent, total.sent)
	counter(dReceived, total.received)
	counter(dTurns, total.turns)
	for i, l := range deviationLabels {
		counter(dDeviations, total.deviations[i], l)
	}
	for i, l := range matchLabels {
		counter(dAnswers, total.answers[i], l)
	}
	counter(dEndMiss, total.endMismatch)
	counter(dRequests, total.requests)
	counter(dReqSame, total.reqSame)
	counter(dReqNotComp, total.reqNotCompared)
	gauge(dReqNoise, float64(total.reqNoise))
	gauge(dRegressions, float64(total.reqRegressions))

	var inFlight int64
	if r != nil {
		s := r.Summary()
		inFlight = s.InFlight
		speed := "max"
		if s.Speed < replay.SpeedMax {
			speed = strconv.FormatFloat(s.Speed, 'g', -1, 64)
		}
		gauge(dRunInfo, 1, fmt.Sprintf("%016x", s.RunID), speed)
		if !s.Start.IsZero() {
			gauge(dRunStart, float64(s.Start.UnixNano())/1e9)
		}
	}
	gauge(dInFlight, float64(inFlight))
	counter(dPasses, total.passes)

	for _, s := range sources {
		cc, drops := s.snapshot()
		counter(dFrames, cc.frames, s.name)
		counter(dCapBytes, cc.bytes, s.name)
		counter(dSegments, cc.segments, s.name)
		counter(dNotTCP, cc.notTCP, s.name)
		counter(dMalformed, cc.malformed, s.name)
		counter(dTruncated, cc.truncated, s.name)
		counter(dKernDrops, int64(drops), s.name)
	}
}
