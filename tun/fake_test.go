package tun

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeHost is an in-memory host: a few links, addresses, routes and sysctls,
// enough kernel behaviour to make Open's checks meaningful (local delivery,
// longest-prefix match, route_localnet, per-interface forwarding), and a log
// of every change, one line each, compared with golden text by the tests.
type fakeHost struct {
	t *testing.T

	links_  []link
	addrs_  []addr
	routes_ []route // every table
	sysctl_ map[string]string
	next    int // next interface index

	log     []string
	changes int // changes attempted so far
	failAt  int // when > 0, the failAt-th change fails with EIO
	tunFile *os.File
	peer    *os.File // other end of the pipe that stands in for the TUN fd

	// routeGetHook, when set, may answer a route lookup before the model.
	routeGetHook func(dst, src netip.Addr, iif int) (route, bool, error)
	// onAddRoute, when set, runs after a route was added (to let another
	// party change the host in the middle of Open).
	onAddRoute func(r route)
	closed     bool
}

func newFakeHost(t *testing.T) *fakeHost {
	h := &fakeHost{
		t:      t,
		links_: []link{{1, "lo"}, {2, "eth0"}},
		addrs_: []addr{
			{netip.MustParsePrefix("127.0.0.1/8"), "lo"},
			{netip.MustParsePrefix("::1/128"), "lo"},
			{netip.MustParsePrefix("10.0.0.2/24"), "eth0"},
			{netip.MustParsePrefix("fd00::2/64"), "eth0"},
		},
		routes_: []route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("10.0.0.1"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
			{Dst: netip.MustParsePrefix("10.0.0.0/24"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
			{Dst: netip.MustParsePrefix("fd00::/64"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
			{Dst: netip.MustParsePrefix("::/0"), Gw: netip.MustParseAddr("fd00::1"), Link: 2, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST},
		},
		sysctl_: map[string]string{
			"net/ipv4/conf/all/route_localnet":   "0",
			"net/ipv6/conf/all/disable_ipv6":     "0",
			"net/ipv6/conf/default/disable_ipv6": "0",
			"net/ipv6/conf/all/forwarding":       "0",
			"net/ipv6/conf/all/force_forwarding": "0",
			"net/ipv4/ip_forward":                "0",
		},
		next: 7,
	}
	for _, l := range h.links_ {
		h.addIfaceSysctls(l.Name)
	}
	t.Cleanup(func() {
		if h.peer != nil {
			h.peer.Close()
		}
	})
	return h
}

func (h *fakeHost) addIfaceSysctls(name string) {
	h.sysctl_[conf(4, name, "route_localnet")] = "0"
	h.sysctl_[conf(4, name, "forwarding")] = "0"
	h.sysctl_[conf(4, name, "rp_filter")] = "0"
	h.sysctl_[conf(6, name, "disable_ipv6")] = h.sysctl_["net/ipv6/conf/default/disable_ipv6"]
	h.sysctl_[conf(6, name, "addr_gen_mode")] = "0"
	h.sysctl_[conf(6, name, "forwarding")] = "0"
	if _, ok := h.sysctl_["net/ipv6/conf/all/force_forwarding"]; ok {
		h.sysctl_[conf(6, name, "force_forwarding")] = "0"
	}
}

func (h *fakeHost) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

// change counts a change and fails it when it is the failAt-th.
func (h *fakeHost) change(format string, args ...any) error {
	h.changes++
	line := fmt.Sprintf(format, args...)
	if h.failAt > 0 && h.changes == h.failAt {
		h.logf("%s: injected failure", line)
		return syscall.EIO
	}
	h.logf("%s", line)
	return nil
}

func (h *fakeHost) linkName(index int) string {
	for _, l := range h.links_ {
		if l.Index == index {
			return l.Name
		}
	}
	return fmt.Sprintf("#%d", index)
}

func (h *fakeHost) linkIndex(name string) int {
	for _, l := range h.links_ {
		if l.Name == name {
			return l.Index
		}
	}
	return 0
}

func (h *fakeHost) links() ([]link, error) { return slices.Clone(h.links_), nil }
func (h *fakeHost) addrs() ([]addr, error) { return slices.Clone(h.addrs_), nil }

func (h *fakeHost) routes(table int) ([]route, error) {
	var out []route
	for _, r := range h.routes_ {
		if r.Table == table {
			out = append(out, r)
		}
	}
	return out, nil
}

func (h *fakeHost) isLocal(a netip.Addr) bool {
	for _, x := range h.addrs_ {
		if x.Prefix.Addr() == a || (a.Is4() && x.Link == "lo" && x.Prefix.Contains(a)) {
			return true
		}
	}
	return false
}

// routeGet models the kernel's lookup: local addresses, then the longest
// match in table 100 (a policy table the tests fill, consulted for sources
// in 10.9.0.0/16 only) or main; route_localnet for a loopback source leaving
// through another device; forwarding on the input interface.
func (h *fakeHost) routeGet(dst, src netip.Addr, iif int) (route, error) {
	desc := fmt.Sprintf("route get %s", dst)
	if src.IsValid() {
		desc += " from " + src.String()
	}
	if iif != 0 {
		desc += " iif " + h.linkName(iif)
	}
	r, err := h.lookup(dst, src, iif)
	if err != nil {
		h.logf("%s: %v", desc, err)
		return r, err
	}
	h.logf("%s: dev %s", desc, h.linkName(r.Link))
	return r, nil
}

func (h *fakeHost) lookup(dst, src netip.Addr, iif int) (route, error) {
	if h.routeGetHook != nil {
		if r, ok, err := h.routeGetHook(dst, src, iif); ok {
			return r, err
		}
	}
	if h.isLocal(dst) {
		return route{Dst: netip.PrefixFrom(dst, dst.BitLen()), Link: 1, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL}, nil
	}
	table := unix.RT_TABLE_MAIN
	if src.IsValid() && netip.MustParsePrefix("10.9.0.0/16").Contains(src) {
		table = 100
	}
	rs, _ := h.routes(table)
	r, ok := longestMatch(rs, dst)
	if !ok {
		return route{}, syscall.ENETUNREACH
	}
	out := h.linkName(r.Link)
	if src.IsValid() && src.Is4() && src.IsLoopback() && r.Link != 1 &&
		h.sysctl_[conf(4, out, "route_localnet")] != "1" && h.sysctl_["net/ipv4/conf/all/route_localnet"] != "1" {
		return route{}, syscall.EINVAL
	}
	if iif != 0 && dst.Is4() && h.sysctl_[conf(4, h.linkName(iif), "forwarding")] != "1" {
		return route{}, syscall.EHOSTUNREACH
	}
	return r, nil
}

func (h *fakeHost) sysctl(key string) (string, bool, error) {
	v, ok := h.sysctl_[key]
	return v, ok, nil
}

func (h *fakeHost) createTUN(name string, vnetHdr bool) (*os.File, int, error) {
	if err := h.change("create tun %s", name); err != nil {
		return nil, 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		h.t.Fatal(err)
	}
	h.tunFile, h.peer = r, w
	idx := h.next
	h.next++
	h.links_ = append(h.links_, link{idx, name})
	h.addIfaceSysctls(name)
	return r, idx, nil
}

func (h *fakeHost) closeTUN(f *os.File) error {
	name := ""
	for _, l := range h.links_ {
		if l.Index >= 7 {
			name = l.Name
		}
	}
	h.logf("close tun %s", name)
	// The kernel removes the device with everything attached to it.
	idx := h.linkIndex(name)
	h.links_ = slices.DeleteFunc(h.links_, func(l link) bool { return l.Index == idx })
	h.routes_ = slices.DeleteFunc(h.routes_, func(r route) bool { return r.Link == idx })
	for k := range h.sysctl_ {
		if strings.Contains(k, "/conf/"+name+"/") {
			delete(h.sysctl_, k)
		}
	}
	return f.Close()
}

func (h *fakeHost) setMTU(index, mtu int) error {
	return h.change("set %s mtu %d", h.linkName(index), mtu)
}
func (h *fakeHost) setTxQueueLen(index, n int) error {
	return h.change("set %s txqueuelen %d", h.linkName(index), n)
}
func (h *fakeHost) setUp(index int) error { return h.change("set %s up", h.linkName(index)) }

func (h *fakeHost) addRoute(r route) error {
	r.linkName = h.linkName(r.Link)
	if err := h.change("route add %s", r); err != nil {
		return err
	}
	r.linkName = ""
	h.routes_ = append(h.routes_, r)
	if h.onAddRoute != nil {
		h.onAddRoute(r)
	}
	return nil
}

func (h *fakeHost) delRoute(r route) error {
	r.linkName = h.linkName(r.Link)
	if err := h.change("route del %s", r); err != nil {
		return err
	}
	r.linkName = ""
	n := len(h.routes_)
	h.routes_ = slices.DeleteFunc(h.routes_, func(x route) bool { return x == r })
	if len(h.routes_) == n {
		return syscall.ESRCH
	}
	return nil
}

func (h *fakeHost) setSysctl(key, value string) error {
	if _, ok := h.sysctl_[key]; !ok {
		return syscall.ENOENT
	}
	if err := h.change("sysctl %s = %s", key, value); err != nil {
		return err
	}
	h.sysctl_[key] = value
	return nil
}

func (h *fakeHost) close() error {
	h.closed = true
	return nil
}

// state is the host as the undo tests compare it: links, routes, sysctls.
func (h *fakeHost) state() string {
	var b strings.Builder
	for _, l := range h.links_ {
		fmt.Fprintf(&b, "link %d %s\n", l.Index, l.Name)
	}
	for _, r := range h.routes_ {
		r.linkName = h.linkName(r.Link)
		fmt.Fprintf(&b, "route %s\n", r)
	}
	for _, k := range slices.Sorted(maps.Keys(h.sysctl_)) {
		fmt.Fprintf(&b, "sysctl %s = %s\n", k, h.sysctl_[k])
	}
	return b.String()
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
