package metrics

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/agent"
	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// Capture agents' counters are scraped per agent host (the port of each
// connection left out: an agent that reconnects stays one series).
func TestAgentMetrics(t *testing.T) {
	m := agent.NewMerger("test agents", agent.Options{})
	pcap := replaytest.DemoPcap()
	m.Add("10.1.0.7:40001", bytes.NewReader(pcap))
	m.Add("10.1.0.7:40002", bytes.NewReader(pcap)) // the same host again
	m.Add("10.1.0.8:50000", strings.NewReader("not a capture"))
	// The streams end by themselves; the merge ends at Close, after
	// handing on what it holds.
	for deadline := time.Now().Add(10 * time.Second); m.Stats().Connected > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("agents still connected: %+v", m.Stats())
		}
	}
	m.Close()
	frames := 0
	for {
		if _, err := m.ReadFrame(); err != nil {
			if err != io.EOF {
				t.Fatalf("merge: %v", err)
			}
			break
		}
		frames++
	}
	if frames == 0 {
		t.Fatal("no frame merged")
	}
	x := New()
	x.WatchAgents(m)
	s := serve(t, x, ServerOptions{})
	text := scrape(t, "http://"+s.Addr().String()+"/metrics")
	per := frames / 2
	for _, want := range []string{
		"tcopy_tun_capture_agents_accepted_total 3",
		"tcopy_tun_capture_agents_failed_total 1",
		"tcopy_tun_capture_agents_connected 0",
		`tcopy_tun_capture_agent_frames_total{agent="10.1.0.7"} ` + itoa(2*per),
		`tcopy_tun_capture_agent_frames_total{agent="10.1.0.8"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q:\n%s", want, grepLines(text, "agent"))
		}
	}
	if strings.Contains(text, "40001") {
		t.Errorf("a connection's port became a label:\n%s", grepLines(text, "agent"))
	}
}

func itoa(n int) string {
	var b []byte
	if n == 0 {
		return "0"
	}
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
