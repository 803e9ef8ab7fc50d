package tun

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func golden(t *testing.T, what string, got []string, want string) {
	t.Helper()
	g := strings.Join(got, "\n")
	w := strings.TrimSpace(strings.ReplaceAll(want, "\t", ""))
	if g != w {
		t.Errorf("%s:\n--- got\n%s\n--- want\n%s", what, g, w)
	}
}

// TestOpenCloseGolden runs Open and Close against the fake host and compares
// every host change, route lookup and log line with golden text.
func TestOpenCloseGolden(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup func(h *fakeHost)
		open  string // the fake host's log after Open
		close string // the fake host's log after Close
		logf  string // what Logf received
	}{
		{
			name: "defaults, loopback and IPv6 targets",
			cfg:  Config{Targets: addrs("127.0.0.1", "fd00::2")},
			open: `
				route get 127.0.0.1: dev lo
				route get fd00::2: dev lo
				create tun tcopy0
				set tcopy0 mtu 65535
				set tcopy0 txqueuelen 10000
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 1
				sysctl net/ipv4/conf/tcopy0/route_localnet = 1
				set tcopy0 up
				route add 198.18.0.0/15 dev tcopy0
				route add 2001:2::/48 dev tcopy0
				route get 198.18.0.1 from 127.0.0.1: dev tcopy0
				route get 198.19.255.254 from 127.0.0.1: dev tcopy0
				route get 2001:2::1 from fd00::2: dev tcopy0
				route get 2001:2:0:ffff:ffff:ffff:ffff:fffe from fd00::2: dev tcopy0`,
			close: `
				route del 2001:2::/48 dev tcopy0
				route del 198.18.0.0/15 dev tcopy0
				sysctl net/ipv4/conf/tcopy0/route_localnet = 0
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 0
				close tun tcopy0`,
			logf: `
				tun: created tcopy0 (index 7, not persistent: it goes away with this process)
				tun: set tcopy0 mtu 65535
				tun: set tcopy0 txqueuelen 10000
				tun: set sysctl net/ipv6/conf/tcopy0/addr_gen_mode 0 -> 1
				tun: set sysctl net/ipv4/conf/tcopy0/route_localnet 0 -> 1
				tun: set tcopy0 up
				tun: added route 198.18.0.0/15 dev tcopy0
				tun: added route 2001:2::/48 dev tcopy0
				tun: deleted route 2001:2::/48 dev tcopy0
				tun: deleted route 198.18.0.0/15 dev tcopy0
				tun: restored sysctl net/ipv4/conf/tcopy0/route_localnet 1 -> 0
				tun: restored sysctl net/ipv6/conf/tcopy0/addr_gen_mode 1 -> 0
				tun: closed tcopy0: the kernel removes it with its routes`,
		},
		{
			name:  "IPv6 disabled by default, own name and sizes, IPv4 target",
			cfg:   Config{Name: "rep1", MTU: 9000, TxQueueLen: 2000, ClientPrefixes: prefixes("100.64.0.0/16", "fd99::/64"), Targets: addrs("10.0.0.2")},
			setup: func(h *fakeHost) { h.sysctl_["net/ipv6/conf/default/disable_ipv6"] = "1" },
			open: `
				route get 10.0.0.2: dev lo
				create tun rep1
				set rep1 mtu 9000
				set rep1 txqueuelen 2000
				sysctl net/ipv6/conf/rep1/disable_ipv6 = 0
				sysctl net/ipv6/conf/rep1/addr_gen_mode = 1
				set rep1 up
				route add 100.64.0.0/16 dev rep1
				route add fd99::/64 dev rep1
				route get 100.64.0.1 from 10.0.0.2: dev rep1
				route get 100.64.255.254 from 10.0.0.2: dev rep1`,
			close: `
				route del fd99::/64 dev rep1
				route del 100.64.0.0/16 dev rep1
				sysctl net/ipv6/conf/rep1/addr_gen_mode = 0
				sysctl net/ipv6/conf/rep1/disable_ipv6 = 1
				close tun rep1`,
		},
		{
			name:  "kernel without IPv6 drops the default IPv6 range",
			cfg:   Config{},
			setup: func(h *fakeHost) { removeIPv6(h) },
			open: `
				create tun tcopy0
				set tcopy0 mtu 65535
				set tcopy0 txqueuelen 10000
				set tcopy0 up
				route add 198.18.0.0/15 dev tcopy0`,
			close: `
				route del 198.18.0.0/15 dev tcopy0
				close tun tcopy0`,
			logf: `
				tun: warning: IPv6 is disabled in this kernel: not routing 2001:2::/48
				tun: created tcopy0 (index 7, not persistent: it goes away with this process)
				tun: set tcopy0 mtu 65535
				tun: set tcopy0 txqueuelen 10000
				tun: set tcopy0 up
				tun: added route 198.18.0.0/15 dev tcopy0
				tun: deleted route 198.18.0.0/15 dev tcopy0
				tun: closed tcopy0: the kernel removes it with its routes`,
		},
		{
			name: "forward to another host, both families",
			cfg:  Config{Forward: true, Targets: addrs("10.0.0.9", "fd00::9")},
			open: `
				route get 10.0.0.9: dev eth0
				route get fd00::9: dev eth0
				create tun tcopy0
				set tcopy0 mtu 65535
				set tcopy0 txqueuelen 10000
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 1
				sysctl net/ipv4/conf/tcopy0/forwarding = 1
				sysctl net/ipv4/conf/eth0/forwarding = 1
				sysctl net/ipv6/conf/tcopy0/force_forwarding = 1
				sysctl net/ipv6/conf/eth0/force_forwarding = 1
				set tcopy0 up
				route add 198.18.0.0/15 dev tcopy0
				route add 2001:2::/48 dev tcopy0
				route get 198.18.0.1 from 10.0.0.9 iif eth0: dev tcopy0
				route get 198.19.255.254 from 10.0.0.9 iif eth0: dev tcopy0
				route get 2001:2::1 from fd00::9 iif eth0: dev tcopy0
				route get 2001:2:0:ffff:ffff:ffff:ffff:fffe from fd00::9 iif eth0: dev tcopy0`,
			close: `
				route del 2001:2::/48 dev tcopy0
				route del 198.18.0.0/15 dev tcopy0
				sysctl net/ipv6/conf/eth0/force_forwarding = 0
				sysctl net/ipv6/conf/tcopy0/force_forwarding = 0
				sysctl net/ipv4/conf/eth0/forwarding = 0
				sysctl net/ipv4/conf/tcopy0/forwarding = 0
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 0
				close tun tcopy0`,
		},
		{
			name: "forward: settings already on are left alone",
			cfg:  Config{Forward: true, Targets: addrs("10.0.0.9", "fd00::9")},
			setup: func(h *fakeHost) {
				h.sysctl_["net/ipv4/conf/eth0/forwarding"] = "1"
				h.sysctl_["net/ipv6/conf/all/forwarding"] = "1"
			},
			open: `
				route get 10.0.0.9: dev eth0
				route get fd00::9: dev eth0
				create tun tcopy0
				set tcopy0 mtu 65535
				set tcopy0 txqueuelen 10000
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 1
				sysctl net/ipv4/conf/tcopy0/forwarding = 1
				set tcopy0 up
				route add 198.18.0.0/15 dev tcopy0
				route add 2001:2::/48 dev tcopy0
				route get 198.18.0.1 from 10.0.0.9 iif eth0: dev tcopy0
				route get 198.19.255.254 from 10.0.0.9 iif eth0: dev tcopy0
				route get 2001:2::1 from fd00::9 iif eth0: dev tcopy0
				route get 2001:2:0:ffff:ffff:ffff:ffff:fffe from fd00::9 iif eth0: dev tcopy0`,
			close: `
				route del 2001:2::/48 dev tcopy0
				route del 198.18.0.0/15 dev tcopy0
				sysctl net/ipv4/conf/tcopy0/forwarding = 0
				sysctl net/ipv6/conf/tcopy0/addr_gen_mode = 0
				close tun tcopy0`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.state()
			var logged []string
			tc.cfg.Logf = func(format string, args ...any) { logged = append(logged, sprintf(format, args...)) }
			d, err := open(tc.cfg, h)
			if err != nil {
				t.Fatalf("open: %v\nhost log:\n%s", err, strings.Join(h.log, "\n"))
			}
			golden(t, "host changes by Open", h.log, tc.open)
			h.log = nil
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			golden(t, "host changes by Close", h.log, tc.close)
			if tc.logf != "" {
				golden(t, "Logf", logged, tc.logf)
			}
			if after := h.state(); after != before {
				t.Errorf("host not restored by Close:\n--- before\n%s--- after\n%s", before, after)
			}
			if !h.closed {
				t.Errorf("host (netlink handle) not released by Close")
			}
			h.log = nil
			if err := d.Close(); err != nil || len(h.log) != 0 {
				t.Errorf("second Close = %v and changed %q; want nil and nothing", err, h.log)
			}
		})
	}
}

func removeIPv6(h *fakeHost) {
	for k := range h.sysctl_ {
		if strings.HasPrefix(k, "net/ipv6/") {
			delete(h.sysctl_, k)
		}
	}
}

// TestOpenUndoesOnEveryFailure makes each host change in turn fail and
// checks that Open returns the error and leaves the host exactly as it
// found it, in every configuration of the golden test.
func TestOpenUndoesOnEveryFailure(t *testing.T) {
	for _, cfg := range []Config{
		{Targets: addrs("127.0.0.1", "fd00::2")},
		{Forward: true, Targets: addrs("10.0.0.9", "fd00::9")},
	} {
		// Count the changes of a successful Open.
		h := newFakeHost(t)
		d, err := open(cfg, h)
		if err != nil {
			t.Fatal(err)
		}
		n := h.changes
		d.Close()
		if n < 8 {
			t.Fatalf("only %d changes in a successful Open; the fake is not exercised", n)
		}
		for i := 1; i <= n; i++ {
			h := newFakeHost(t)
			before := h.state()
			h.failAt = i
			d, err := open(cfg, h)
			if err == nil {
				d.Close()
				t.Fatalf("change %d failed but Open succeeded; log:\n%s", i, strings.Join(h.log, "\n"))
			}
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("change %d: error %v does not wrap the injected EIO", i, err)
			}
			if after := h.state(); after != before {
				t.Errorf("change %d failed (%v), host not restored:\n--- before\n%s--- after\n%s\nlog:\n%s",
					i, err, before, after, strings.Join(h.log, "\n"))
			}
			if h.tunFile != nil {
				if _, err := h.tunFile.Stat(); err == nil {
					t.Errorf("change %d failed, the tun fd is still open", i)
				}
			}
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		setup func(h *fakeHost)
		want  string // substring of the error
		is    error  // errors.Is target, if any
	}{
		{name: "IPv6 loopback target", cfg: Config{Targets: addrs("::1")},
			want: "target ::1: IPv6 loopback cannot be reached through a TUN"},
		{name: "IPv6 link-local target", cfg: Config{Targets: addrs("fe80::1")},
			want: "link-local"},
		{name: "unspecified target", cfg: Config{Targets: addrs("0.0.0.0")}, want: "unspecified"},
		{name: "IPv6 target without IPv6 range", cfg: Config{ClientPrefixes: prefixes("198.18.0.0/15"), Targets: addrs("fd00::2")},
			want: "target fd00::2: no IPv6 client range"},
		{name: "client range contains a local address", cfg: Config{ClientPrefixes: prefixes("10.0.0.0/16")},
			want: "client range 10.0.0.0/16 contains 10.0.0.2, an address of this host (dev eth0)", is: ErrConflict},
		{name: "client range overlaps a route", cfg: Config{Targets: addrs("10.0.0.2")},
			setup: func(h *fakeHost) {
				h.routes_ = append(h.routes_, route{Dst: netip.MustParsePrefix("198.18.4.0/24"), Gw: netip.MustParseAddr("10.0.0.1"), Link: 2, Table: unix.RT_TABLE_MAIN})
			},
			want: "client range 198.18.0.0/15 overlaps the route 198.18.4.0/24 via 10.0.0.1 dev eth0", is: ErrConflict},
		{name: "client range inside a wider route", cfg: Config{ClientPrefixes: prefixes("172.16.5.0/24")},
			setup: func(h *fakeHost) {
				h.routes_ = append(h.routes_, route{Dst: netip.MustParsePrefix("172.16.0.0/12"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNREACHABLE})
			},
			want: "client range 172.16.5.0/24 overlaps the route unreachable 172.16.0.0/12 dev eth0", is: ErrConflict},
		{name: "client range contains the target", cfg: Config{ClientPrefixes: prefixes("198.18.0.0/15"), Targets: addrs("198.18.0.7")},
			want: "client range 198.18.0.0/15 contains the target 198.18.0.7", is: ErrConflict},
		{name: "remote target without Forward", cfg: Config{Targets: addrs("10.0.0.9")},
			want: "target 10.0.0.9: not an address of this host (reached by route 10.0.0.0/24 dev eth0): replay to another host needs forwarding mode, and a route on that host sending 198.18.0.0/15 back to this one"},
		{name: "device name taken", cfg: Config{Name: "eth0"}, want: "a device named eth0 exists already"},
		{name: "name too long", cfg: Config{Name: "abcdefghijklmnop"}, want: "longer than 15 bytes"},
		{name: "name with slash", cfg: Config{Name: "a/b"}, want: "contains '/'"},
		{name: "default route as client range", cfg: Config{ClientPrefixes: prefixes("0.0.0.0/0")}, want: "would route every address"},
		{name: "overlapping client ranges", cfg: Config{ClientPrefixes: prefixes("198.18.0.0/15", "198.18.3.0/24")}, want: "overlaps client range 198.18.0.0/15"},
		{name: "overlapping client ranges, apart in the list", cfg: Config{ClientPrefixes: prefixes("100.64.0.9/32", "2001:2::/48", "100.65.0.0/16", "100.64.0.0/24")},
			want: "client range 100.64.0.9/32: overlaps client range 100.64.0.0/24"},
		{name: "mtu too small", cfg: Config{MTU: 100}, want: "mtu 100"},
		{name: "IPv6 range on a kernel without IPv6", cfg: Config{ClientPrefixes: prefixes("2001:2::/48")},
			setup: removeIPv6, want: "client range 2001:2::/48: IPv6 is disabled in this kernel"},
		{name: "forward IPv6 without force_forwarding", cfg: Config{Forward: true, Targets: addrs("fd00::9")},
			setup: func(h *fakeHost) {
				for k := range h.sysctl_ {
					if strings.HasSuffix(k, "/force_forwarding") {
						delete(h.sysctl_, k)
					}
				}
			},
			want: "target fd00::9: forwarding IPv6 needs the per-interface net.ipv6.conf.<if>.force_forwarding (Linux >= 6.17), which this kernel lacks"},
		{name: "policy route steals the replies", cfg: Config{Targets: addrs("10.9.0.1")},
			setup: func(h *fakeHost) {
				h.addrs_ = append(h.addrs_, addr{netip.MustParsePrefix("10.9.0.1/32"), "eth0"})
				h.routes_ = append(h.routes_, route{Dst: netip.MustParsePrefix("198.18.0.0/16"), Link: 2, Table: 100, Type: unix.RTN_UNICAST})
			},
			want: "return route from target 10.9.0.1 to client 198.18.0.1 (range 198.18.0.0/15) leads to dev eth0, not into tcopy0: route 198.18.0.0/16 dev eth0 table 100 wins",
			is:   ErrConflict},
		{name: "loopback target without route_localnet", cfg: Config{Targets: addrs("127.0.0.1")},
			setup: func(h *fakeHost) {
				// A kernel that ignores route_localnet on the device: the
				// verification must notice rather than trust the sysctl.
				h.routeGetHook = func(dst, src netip.Addr, iif int) (route, bool, error) {
					if src.IsLoopback() {
						return route{}, true, syscall.EINVAL
					}
					return route{}, false, nil
				}
			},
			want: "return route from target 127.0.0.1 to client 198.18.0.1 (range 198.18.0.0/15): the kernel refuses it: invalid argument",
			is:   ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.state()
			d, err := open(tc.cfg, h)
			if err == nil {
				d.Close()
				t.Fatalf("Open succeeded; want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if after := h.state(); after != before {
				t.Errorf("host changed by a refused Open:\n--- before\n%s--- after\n%s", before, after)
			}
		})
	}
}

// TestOpenVerifyFindsRouteAddedMeanwhile: a more specific route that
// appears while Open runs (after its checks) and misses the sampled
// addresses is still found, and Open undoes everything.
func TestOpenVerifyFindsRouteAddedMeanwhile(t *testing.T) {
	h := newFakeHost(t)
	before := h.state()
	h.onAddRoute = func(r route) {
		if r.Dst == netip.MustParsePrefix("198.18.0.0/15") {
			h.routes_ = append(h.routes_, route{Dst: netip.MustParsePrefix("198.18.128.0/24"), Gw: netip.MustParseAddr("10.0.0.1"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST})
		}
	}
	d, err := open(Config{Targets: addrs("10.0.0.2")}, h)
	if err == nil {
		d.Close()
		t.Fatal("Open succeeded with a route taking part of the client range")
	}
	want := "route 198.18.128.0/24 via 10.0.0.1 dev eth0 takes part of client range 198.18.0.0/15 away from tcopy0"
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v; want ErrConflict containing %q", err, want)
	}
	// The foreign route stays; everything of ours is gone.
	h.routes_ = slices.DeleteFunc(h.routes_, func(r route) bool { return r.Dst == netip.MustParsePrefix("198.18.128.0/24") })
	if after := h.state(); after != before {
		t.Errorf("host not restored:\n--- before\n%s--- after\n%s", before, after)
	}
}

func TestOpenAllowRouteOverlapWarns(t *testing.T) {
	h := newFakeHost(t)
	var logged []string
	cfg := Config{
		ClientPrefixes:    prefixes("10.0.0.77/32"),
		Targets:           addrs("10.0.0.2"),
		AllowRouteOverlap: true,
		Logf:              func(f string, a ...any) { logged = append(logged, sprintf(f, a...)) },
	}
	d, err := open(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := "tun: warning: client range 10.0.0.77/32 overlaps the route 10.0.0.0/24 dev eth0: routing it into the device anyway, as asked"
	if len(logged) == 0 || logged[0] != want {
		t.Errorf("first log line = %q, want %q", logged, want)
	}
	if got := strings.Join(h.log, "\n"); !strings.Contains(got, "route get 10.0.0.77 from 10.0.0.2: dev tcopy0") {
		t.Errorf("the /32 is not verified to route into the device:\n%s", got)
	}
}

// TestCloseLeavesForeignSysctl: a sysctl changed by someone else after Open
// keeps their value; the other undos still run.
func TestCloseLeavesForeignSysctl(t *testing.T) {
	h := newFakeHost(t)
	var logged []string
	d, err := open(Config{Forward: true, Targets: addrs("10.0.0.9"), ClientPrefixes: prefixes("198.18.0.0/15"),
		Logf: func(f string, a ...any) { logged = append(logged, sprintf(f, a...)) }}, h)
	if err != nil {
		t.Fatal(err)
	}
	h.sysctl_["net/ipv4/conf/eth0/forwarding"] = "2"
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := h.sysctl_["net/ipv4/conf/eth0/forwarding"]; got != "2" {
		t.Errorf("eth0 forwarding = %s after Close, want the foreign 2 kept", got)
	}
	want := "tun: left sysctl net/ipv4/conf/eth0/forwarding = 2: changed by someone else after we set 1 (it was 0)"
	if !strings.Contains(strings.Join(logged, "\n"), want) {
		t.Errorf("log lacks %q:\n%s", want, strings.Join(logged, "\n"))
	}
	if strings.Contains(h.state(), "tcopy0") {
		t.Errorf("device left behind:\n%s", h.state())
	}
}

// TestCloseContinuesPastErrors: an undo that fails is reported, and the
// ones after it (down to closing the fd) still run.
func TestCloseContinuesPastErrors(t *testing.T) {
	h := newFakeHost(t)
	d, err := open(Config{Targets: addrs("127.0.0.1")}, h)
	if err != nil {
		t.Fatal(err)
	}
	h.failAt = h.changes + 1 // the first undo: route del 2001:2::/48
	err = d.Close()
	if err == nil || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "undo route del 2001:2::/48 dev tcopy0") {
		t.Errorf("Close = %v; want the failed route del, wrapping EIO", err)
	}
	if !strings.HasSuffix(strings.Join(h.log, "\n"), "close tun tcopy0") {
		t.Errorf("fd not closed after a failed undo:\n%s", strings.Join(h.log, "\n"))
	}
}

func TestPermissionError(t *testing.T) {
	err := permErr(`create tun "tcopy0"`, syscall.EPERM)
	var pe *PermissionError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPermission) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("permErr(EPERM) = %#v; want a *PermissionError matching ErrPermission and EPERM", err)
	}
	if got, want := err.Error(), `create tun "tcopy0": operation not permitted (needs CAP_NET_ADMIN)`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !strings.Contains(pe.Hint(), "setcap cap_net_admin+ep") || !strings.Contains(pe.Hint(), "root") {
		t.Errorf("Hint() = %q; want root and setcap remedies", pe.Hint())
	}
	if err := permErr("x", syscall.EIO); errors.Is(err, ErrPermission) {
		t.Errorf("permErr(EIO) matches ErrPermission")
	}
	dev := &PermissionError{Op: "open /dev/net/tun", Err: syscall.EACCES, Path: "/dev/net/tun"}
	if !strings.Contains(dev.Hint(), "0666") || !strings.Contains(dev.Error(), "not accessible") {
		t.Errorf("device-node PermissionError: %q / %q", dev.Error(), dev.Hint())
	}
}

func TestSamples(t *testing.T) {
	for _, tc := range []struct{ pfx, want string }{
		{"198.18.0.0/15", "[198.18.0.1 198.19.255.254]"},
		{"10.0.0.77/32", "[10.0.0.77]"},
		{"10.0.0.76/31", "[10.0.0.76 10.0.0.77]"},
		{"2001:2::/48", "[2001:2::1 2001:2:0:ffff:ffff:ffff:ffff:fffe]"},
	} {
		if got := sprintf("%v", samples(netip.MustParsePrefix(tc.pfx))); got != tc.want {
			t.Errorf("samples(%s) = %s, want %s", tc.pfx, got, tc.want)
		}
	}
}
