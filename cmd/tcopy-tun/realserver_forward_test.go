package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestPrivilegedRealForward is "target on another host": tcopy-tun runs in
// the client namespace (host A) with --forward, the server in the other
// namespace (host B) across the veth, and B routes the client range
// 198.18.0.0/15 back to A's veth address. The same server-state equality and
// report checks as for a local target must hold, and once tcopy-tun has
// exited A's forwarding switches are as they were and the TUN is gone.
//
// redis: one capture holding both redis-benchmark workloads (one
// connection per request, then pipelined), so hundreds of short
// connections and long pipelined ones cross the forwarding path. httpd: the
// project's HTTP server with large uploads and downloads (segments of a
// full 1500-byte MTU on the veth, 64 KiB on the TUN).
func TestPrivilegedRealForward(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark, toolRedisServer, toolRedisCli, toolRedisBenchmark)
	bin := buildTcopyTun(t)
	t.Run("redis", func(t *testing.T) {
		k0 := redisBenchmark("-k", "0", "-n", "100", "-c", "8")
		p10 := redisBenchmark("-P", "10", "-n", "1000", "-c", "4")
		runRealScenario(t, bin, realScenario{server: redisServer{}, shape: shapeEthernet(), forward: true,
			drive: func(t *testing.T, e *realEnv) { k0(t, e); p10(t, e) }})
	})
	t.Run("httpd", func(t *testing.T) {
		runRealScenario(t, bin, realScenario{server: httpdServer{}, shape: shapeEthernet(), forward: true,
			drive: httpdClient(realServerIP), after: forwardMisconfigured})
	})
}

// forwardMisconfigured checks what a user sees when half of the setup is
// missing (README, "target on another host"): without --forward tcopy-tun
// refuses the remote target before sending anything and names the remedy;
// without host B's route back, B's answers never reach A, every connection
// attempt times out, the run fails, and the server received no request.
func forwardMisconfigured(t *testing.T, e *realEnv, capture string) {
	t.Helper()
	target := fmt.Sprintf("%s:%d", realServerIP, httpdPort)
	out, err := e.cli.Output(e.bin, "--pcap", capture, "--target", target, "-q")
	if err == nil || !strings.Contains(out, "not an address of this host") || !strings.Contains(out, "forwarding mode") ||
		!strings.Contains(out, "sending "+realClientNet+" back to this one") {
		t.Errorf("remote target without --forward: %v, want a refusal naming --forward and the route back:\n%s", err, out)
	}

	e.srv.Run(t, "ip", "route", "del", realClientNet)
	inst := httpdServer{}.start(t, e, "no-route")
	run := e.replayExit(t, e.cli, capture, netip.MustParseAddrPort(target), "max", exitFailure,
		"--forward", "--dial-timeout", "300ms")
	s := run.report.Summary
	if s.Replayed == 0 || s.Succeeded != 0 || run.report.Totals.Outcomes["timeout"] != s.Replayed {
		t.Errorf("without the route back: %d replayed, %d succeeded, outcomes %v; want every session timed out",
			s.Replayed, s.Succeeded, nonZero(run.report.Totals.Outcomes))
	}
	if got := inst.state(t); strings.Contains(strings.Join(got, "\n"), "req ") {
		t.Errorf("without the route back the server still got requests:\n%s", strings.Join(got, "\n"))
	}
	t.Logf("without --forward: %s", strings.TrimSpace(out))
	t.Logf("without the route back: %d sessions, outcomes %v", s.Replayed, nonZero(run.report.Totals.Outcomes))
}

// forwardSysctls reads the forwarding-related switches of host A (the
// client namespace) that tcopy-tun --forward may touch.
func forwardSysctls(t *testing.T, e *realEnv) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range []string{
		"net/ipv4/ip_forward",
		"net/ipv4/conf/all/forwarding",
		"net/ipv4/conf/default/forwarding",
		"net/ipv4/conf/" + e.cliIf + "/forwarding",
		"net/ipv4/conf/all/rp_filter",
		"net/ipv4/conf/" + e.cliIf + "/rp_filter",
		"net/ipv6/conf/all/forwarding",
		"net/ipv6/conf/" + e.cliIf + "/forwarding",
	} {
		m[k] = e.cli.Sysctl(t, k)
	}
	return m
}

// checkForwardUndone asserts that host A is back as it was: the same
// switches, no TUN device, no route for the client range.
func checkForwardUndone(t *testing.T, e *realEnv, before map[string]string) {
	t.Helper()
	after := forwardSysctls(t, e)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("after tcopy-tun --forward: %s = %s, was %s", k, after[k], v)
		}
	}
	if out, err := e.cli.Output("ip", "link", "show", "tcopy0"); err == nil {
		t.Errorf("after tcopy-tun --forward: tcopy0 still exists:\n%s", out)
	}
	if out := e.cli.Run(t, "ip", "route", "show", realClientNet); strings.TrimSpace(out) != "" {
		t.Errorf("after tcopy-tun --forward: route for %s left behind: %s", realClientNet, out)
	}
}
