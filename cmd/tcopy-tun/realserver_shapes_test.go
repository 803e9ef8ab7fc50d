package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// TestPrivilegedRealCaptureShapes replays captures of the other shapes the
// real tools write, each with the full procedure of runRealScenario (fresh
// server, real client, capture, replay at --speed 1 and max into a fresh
// server, state and report compared):
//
//   - any-sll2: `tcpdump -i any` (Linux cooked v2, LINKTYPE 276), the
//     project's HTTP server;
//   - any-sll: `tcpdump -i any -y LINUX_SLL` (cooked v1, 113), redis
//     pipelined;
//   - nano: `tcpdump --time-stamp-precision=nano` (pcap magic a1b23c4d),
//     nginx;
//   - pcapng-multi: dumpcap on two interfaces at once, the veth (Ethernet)
//     and "any" (SLL2) filtered to loopback, so one pcapng file holds two
//     interface descriptions of different link types with packets on both:
//     the Go client in the client namespace and another in the server's
//     own namespace over 127.0.0.1 drive the HTTP server at the same time.
//     Sessions of both captured servers (10.77.0.1:8080 and 127.0.0.1:8080)
//     replay onto the target.
func TestPrivilegedRealCaptureShapes(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark)
	bin := buildTcopyTun(t)
	anyIf := func(*realEnv) string { return "any" }
	vethIf := func(e *realEnv) string { return e.srvIf }
	t.Run("any-sll2", func(t *testing.T) {
		runRealScenario(t, bin, realScenario{server: httpdServer{},
			shape: tcpdumpShape("any-sll2", anyIf, nil, pcapMicro, linkSLL2), drive: httpdClient(realServerIP)})
	})
	t.Run("any-sll", func(t *testing.T) {
		requireReal(t, toolRedisServer, toolRedisCli, toolRedisBenchmark)
		runRealScenario(t, bin, realScenario{server: redisServer{},
			shape: tcpdumpShape("any-sll", anyIf, []string{"-y", "LINUX_SLL"}, pcapMicro, linkSLL),
			drive: redisBenchmark("-P", "10", "-n", "1000", "-c", "4")})
	})
	t.Run("nano", func(t *testing.T) {
		requireReal(t, toolNginx, toolAb, toolCurl)
		runRealScenario(t, bin, realScenario{server: nginxServer{},
			shape: tcpdumpShape("nano", vethIf, []string{"--time-stamp-precision=nano"}, pcapNano, linkEthernet),
			drive: nginxClients})
	})
	t.Run("pcapng-multi", func(t *testing.T) {
		requireReal(t, toolDumpcap)
		runRealScenario(t, bin, realScenario{server: httpdServer{}, shape: shapeMultiInterface(),
			drive: func(t *testing.T, e *realEnv) {
				// Both clients at once, so the interfaces interleave.
				remote := startHTTPClient(t, e.cli, 0, realServerIP)
				local := startHTTPClient(t, e.srv, 1, "127.0.0.1")
				for _, p := range []*realProc{remote, local} {
					if err := p.wait(t, realClientTimeout); err != nil {
						t.Fatalf("go http client: %v\n%s", err, p.out.String())
					}
				}
			}})
	})
}

// shapeMultiInterface captures with dumpcap on the server's veth and on
// "any", each with its own filter (dumpcap's -f applies to the -i before
// it), so no packet is captured twice: the veth takes the client
// namespace's traffic, "any" the loopback traffic. Both filters also take
// port 9 (discard, closed): the probes of primeMultiInterface.
func shapeMultiInterface() captureShape {
	return captureShape{
		name:  "pcapng-multi",
		tools: []realTool{toolDumpcap, toolTshark},
		args: func(e *realEnv, file string, port uint16) []string {
			ports := fmt.Sprintf("(tcp port %d or tcp port %d)", port, primePort)
			return []string{"dumpcap", "-n", "-B", "64", "-w", file,
				"-i", e.srvIf, "-f", ports + " and host " + realClientIP,
				"-i", "any", "-y", "LINUX_SLL2", "-f", ports + " and host 127.0.0.1"}
		},
		ready: "Capturing on",
		ext:   ".pcapng",
		prime: primeMultiInterface,
		check: func(t *testing.T, file string) {
			links, packets := pcapngInterfaces(t, file)
			if fmt.Sprint(links) != fmt.Sprint([]uint16{linkEthernet, linkSLL2}) {
				t.Errorf("%s: interface link types %v, want [%d %d] (veth Ethernet, any SLL2)", file, links, linkEthernet, linkSLL2)
			}
			if len(packets) != 2 {
				t.Errorf("%s: packets per interface %v, want packets on both", file, packets)
			}
			// The workload, not only the probes, must be on both.
			out, err := exec.Command("tshark", "-n", "-r", file, "-Y", fmt.Sprintf("tcp.port == %d", httpdPort), "-T", "fields", "-e", "frame.interface_id").Output()
			if err != nil {
				t.Fatalf("tshark -r %s: %v", file, err)
			}
			perIf := map[string]int{}
			for _, f := range strings.Fields(string(out)) {
				perIf[f]++
			}
			if perIf["0"] == 0 || perIf["1"] == 0 {
				t.Errorf("%s: HTTP packets per interface %v, want some on both", file, perIf)
			}
		},
	}
}

// primePort is a closed port: a connection attempt is a SYN and a RST.
const primePort = 9

// primeMultiInterface makes sure dumpcap captures on both interfaces before
// the clients start: its "Capturing on" line comes up to a few hundred
// milliseconds before packets are taken (measured here: the first
// connections after it were missing). It knocks on the closed port through
// each interface until the file (which dumpcap writes out every half second
// or so) holds packets of both. The knocks stay in the capture, as noise on
// another port that the replay must leave alone.
func primeMultiInterface(t *testing.T, e *realEnv, c *capturer) {
	t.Helper()
	knock := func(ns *tuntest.Netns, addr string) {
		_ = ns.Do(func() error {
			conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
			if err == nil {
				conn.Close()
			}
			return nil
		})
	}
	deadline := time.Now().Add(realStartTimeout)
	for {
		b, err := os.ReadFile(c.file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		_, packets, err := parsePcapng(b, true)
		if err != nil {
			t.Fatalf("%s while written: %v", c.file, err)
		}
		if packets[0] > 0 && packets[1] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dumpcap captured nothing of the knocks within %v (packets per interface %v):\n%s", realStartTimeout, packets, c.proc.out.String())
		}
		if packets[0] == 0 {
			knock(e.cli, fmt.Sprintf("%s:%d", realServerIP, primePort))
		}
		if packets[1] == 0 {
			knock(e.srv, fmt.Sprintf("127.0.0.1:%d", primePort))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
