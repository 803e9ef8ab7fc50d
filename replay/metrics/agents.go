package metrics

import (
	"net"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcopy-tun/tcopy-tun/replay/agent"
)

// Capture agents (--pcap-listen, --pcap tcp://), per agent host: the label
// is the peer's IP without its port, so an agent that reconnects for days
// stays one series (and agent.Stats keeps at most 256 agents' rows).
var (
	dAgentsConnected = desc("capture_agents_connected", "Capture agents connected now.")
	dAgentsAccepted  = desc("capture_agents_accepted_total", "Capture agent connections accepted.")
	dAgentsRefused   = desc("capture_agents_refused_total", "Capture agent connections refused: the peer is not allowed (--pcap-allow) or too many agents.")
	dAgentsFailed    = desc("capture_agents_failed_total", "Capture agents whose stream ended with an error (not a clean end of stream).")
	dAgentStalls     = desc("capture_agent_stalls_total", "Times an agent sent nothing for the stall threshold, by agent host.", "agent")
	dAgentFrames     = desc("capture_agent_frames_total", "Frames received from capture agents, by agent host.", "agent")
	dAgentLate       = desc("capture_agent_late_frames_total", "Frames that arrived after a later frame had been merged (their timestamp was raised; see --pcap-window), by agent host.", "agent")
)

func init() {
	scraped = append(scraped, dAgentsConnected, dAgentsAccepted, dAgentsRefused, dAgentsFailed, dAgentStalls, dAgentFrames, dAgentLate)
}

// WatchAgents makes the scrapes report m's agents (nil: none).
func (x *Exporter) WatchAgents(m *agent.Merger) {
	x.mu.Lock()
	x.agents = m
	x.mu.Unlock()
}

// collectAgents reports m's counters.
func collectAgents(ch chan<- prometheus.Metric, m *agent.Merger) {
	st := m.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(dAgentsConnected, prometheus.GaugeValue, float64(st.Connected))
	counter(dAgentsAccepted, int64(st.Accepted))
	counter(dAgentsRefused, int64(st.Refused))
	counter(dAgentsFailed, int64(st.Failed))
	type host struct{ frames, late, stalls int64 }
	hosts := map[string]*host{}
	for _, a := range st.Agents {
		name := a.Name
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
		h := hosts[name]
		if h == nil {
			h = &host{}
			hosts[name] = h
		}
		h.frames += a.Frames
		h.late += a.Late
		h.stalls += int64(a.Stalls)
	}
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := hosts[n]
		counter(dAgentFrames, h.frames, n)
		counter(dAgentLate, h.late, n)
		counter(dAgentStalls, h.stalls, n)
	}
}
