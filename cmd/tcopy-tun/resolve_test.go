package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/agent"
)

// fakeLookup answers from a table, like /etc/hosts; any other name is not
// found, as a resolver says it. It never asks the network.
func fakeLookup(table map[string][]string) lookupFunc {
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range table[host] {
			out = append(out, netip.MustParseAddr(s))
		}
		if len(out) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return out, nil
	}
}

var hosts = fakeLookup(map[string][]string{
	"target.test": {"2001:db8::7", "192.0.2.7"}, // IPv4 preferred
	"v6only.test": {"2001:db8::8"},
	"agent.test":  {"192.0.2.9"},
})

// Host names where people type addresses.
func TestResolveAddrPort(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "127.0.0.1:8080", want: "127.0.0.1:8080"},
		{in: "[2001:db8::1]:80", want: "[2001:db8::1]:80"},
		{in: "localhost:8080", want: "127.0.0.1:8080"},
		{in: "LocalHost:1", want: "127.0.0.1:1"},
		{in: "target.test:80", want: "192.0.2.7:80"},
		{in: "v6only.test:80", want: "[2001:db8::8]:80"},
		{in: "nope.test:80", err: `resolve "nope.test": no such host`},
		{in: "target.test", err: `"target.test": want HOST:PORT`},
		{in: "target.test:http", err: `port "http": want a number`},
		{in: ":80", err: `want HOST:PORT`},
	} {
		got, err := resolveAddrPort(tc.in, hosts)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: %v, %v; want one line with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// A lookup that fails otherwise, or takes too long, is one clear line too.
func TestResolveHostErrors(t *testing.T) {
	slow := func(ctx context.Context, host string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	}
	if _, err := resolveHost("x.test", slow); err == nil || err.Error() != `resolve "x.test": no answer within 5s` {
		t.Errorf("timeout: %v", err)
	}
	other := func(ctx context.Context, host string) ([]netip.Addr, error) { return nil, errors.New("boom") }
	if _, err := resolveHost("x.test", other); err == nil || err.Error() != `resolve "x.test": boom` {
		t.Errorf("other: %v", err)
	}
}

// The flags that take addresses take host names; a name that does not
// resolve fails the flag in one line that names it.
func TestFlagsHostNames(t *testing.T) {
	f, err := parseReplayFlagsLookup([]string{"--pcap", "x.pcap", "--target", "localhost:8080", "--server", "target.test:80",
		"--map", "agent.test:6379=localhost:6390"}, io.Discard, hosts)
	if err != nil {
		t.Fatal(err)
	}
	if f.target.String() != "127.0.0.1:8080" || f.server.String() != "192.0.2.7:80" {
		t.Errorf("target %v, server %v", f.target, f.server)
	}
	if got := f.maps[netip.MustParseAddrPort("192.0.2.9:6379")]; got.String() != "127.0.0.1:6390" {
		t.Errorf("maps %v", f.maps)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "nope.test:80"}, `invalid value "nope.test:80" for flag -target: resolve "nope.test": no such host`},
		{[]string{"--target", "localhost:80", "--map", "nope.test:1=localhost:2"}, `--map: "nope.test:1=localhost:2": captured: resolve "nope.test": no such host`},
	} {
		_, err := parseReplayFlagsLookup(append([]string{"--pcap", "x.pcap"}, tc.args...), io.Discard, hosts)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: %v\nwant %s", tc.args, err, tc.want)
		}
	}
}

// --pcap-listen binds where the user says, loopback unless told otherwise,
// and an address reachable from the network needs --pcap-allow.
func TestFlagsAgents(t *testing.T) {
	parse := func(args ...string) (*replayFlags, error) {
		return parseReplayFlagsLookup(append([]string{"--target", "localhost:80"}, args...), io.Discard, hosts)
	}
	for _, tc := range []struct {
		args   []string
		listen string
		dial   string
		allow  string
		err    string
	}{
		{args: []string{"--pcap-listen", "57012"}, listen: "127.0.0.1:57012"},
		{args: []string{"--pcap-listen", "localhost:57012"}, listen: "127.0.0.1:57012"},
		{args: []string{"--pcap-listen", "[::1]:57012"}, listen: "[::1]:57012"},
		{args: []string{"--pcap-listen", "192.0.2.1:57012", "--pcap-allow", "10.0.0.0/8", "--pcap-allow", "192.0.2.5", "--pcap-allow", "::ffff:172.16.0.0/108"},
			listen: "192.0.2.1:57012", allow: "10.0.0.0/8 192.0.2.5/32 172.16.0.0/12"},
		{args: []string{"--pcap-listen", ":57012", "--pcap-allow", "0.0.0.0/0"}, listen: ":57012", allow: "0.0.0.0/0"},
		{args: []string{"--pcap", "tcp://agent.test:57012"}, dial: "192.0.2.9:57012"},
		{args: []string{"--pcap", "tcp://localhost:9/"}, dial: "127.0.0.1:9"},
		{args: []string{"--pcap-listen", "57012", "--pcap-agent-buffer", "8MiB"}, listen: "127.0.0.1:57012"},
		{args: []string{"--pcap-listen", ":57012"}, err: "--pcap-listen :57012 accepts captures from the network: say from whom with --pcap-allow PREFIX"},
		{args: []string{"--pcap-listen", "192.0.2.1:57012"}, err: "say from whom with --pcap-allow"},
		{args: []string{"--pcap-listen", "nope.test:1"}, err: `--pcap-listen resolve "nope.test": no such host`},
		{args: []string{"--pcap-listen", "57012", "--pcap-allow", "ten"}, err: `--pcap-allow "ten": want a prefix`},
		{args: []string{"--pcap", "x.pcap", "--pcap-allow", "10.0.0.0/8"}, err: "--pcap-allow needs --pcap-listen"},
		{args: []string{"--pcap", "x.pcap", "--pcap-listen", "57012"}, err: "exclude each other"},
		{args: []string{"--pcap-listen", "57012", "--loop", "2"}, err: "--loop cannot repeat a live capture"},
		{args: []string{"--pcap-listen", "57012", "--pcap-snaplen", "10"}, err: "--pcap-snaplen 10: want"},
		{args: []string{"--pcap-listen", "57012", "--pcap-max-agents", "0"}, err: "want values above 0"},
		{args: []string{"--pcap-listen", "57012", "--pcap-agent-buffer", "1x"}, err: `"1x": want a size`},
		{args: []string{"--pcap", "tcp://agent.test"}, err: `--pcap tcp://agent.test: "agent.test": want HOST:PORT`},
		{args: []string{"--pcap", "tcp://nope.test:1"}, err: `--pcap tcp://nope.test:1: resolve "nope.test": no such host`},
	} {
		f, err := parse(tc.args...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: %v; want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		var allow []string
		for _, p := range f.agents.Allow {
			allow = append(allow, p.String())
		}
		if f.pcapListen != tc.listen || f.pcapDial != tc.dial || strings.Join(allow, " ") != tc.allow || !f.endless() {
			t.Errorf("%v: listen %q dial %q allow %q endless %v; want %q %q %q", tc.args, f.pcapListen, f.pcapDial, allow, f.endless(), tc.listen, tc.dial, tc.allow)
		}
		if f.agents.Window != agent.DefaultWindow || f.agents.MaxAgents != agent.DefaultMaxAgents || f.agents.AgentBuffer != agent.DefaultAgentBuffer {
			t.Errorf("%v: agent options %+v", tc.args, f.agents)
		}
	}
}
