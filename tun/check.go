package tun

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// plan is what Open learned before changing anything.
type plan struct {
	cfg       Config
	ipv4      bool                // an IPv4 client range is routed
	ipv6      bool                // an IPv6 client range is routed
	localnet  bool                // a 127.0.0.0/8 target needs route_localnet
	remote    map[netip.Addr]link // remote target -> interface leading to it
	linkNames map[int]string      // for messages
	warnings  []string            // overlaps allowed by AllowRouteOverlap

	// forceForward6: a remote IPv6 target needs force_forwarding on the
	// device and the outside interface (the host does not forward IPv6).
	forceForward6 bool
}

// prepare looks at the host, changes nothing, and returns the plan or the
// reason to refuse.
func prepare(cfg Config, defaulted bool, h host) (plan, error) {
	p := plan{cfg: cfg, remote: map[netip.Addr]link{}, linkNames: map[int]string{}}

	if _, ok, err := h.sysctl("net/ipv6/conf/all/disable_ipv6"); err != nil {
		return p, err
	} else if !ok {
		// The kernel was booted with ipv6.disable=1 (or built without it).
		hasV6Target := slices.ContainsFunc(cfg.Targets, netip.Addr.Is6)
		if !defaulted || hasV6Target {
			for _, pfx := range cfg.ClientPrefixes {
				if pfx.Addr().Is6() {
					return p, fmt.Errorf("client range %s: IPv6 is disabled in this kernel", pfx)
				}
			}
		}
		p.cfg.ClientPrefixes = slices.DeleteFunc(slices.Clone(cfg.ClientPrefixes), func(pfx netip.Prefix) bool {
			if pfx.Addr().Is6() {
				p.warnings = append(p.warnings, fmt.Sprintf("IPv6 is disabled in this kernel: not routing %s", pfx))
				return true
			}
			return false
		})
		cfg = p.cfg
	}
	for _, pfx := range cfg.ClientPrefixes {
		p.ipv4 = p.ipv4 || pfx.Addr().Is4()
		p.ipv6 = p.ipv6 || pfx.Addr().Is6()
	}

	links, err := h.links()
	if err != nil {
		return p, err
	}
	for _, l := range links {
		p.linkNames[l.Index] = l.Name
		if l.Name == cfg.Name {
			return p, fmt.Errorf("a device named %s exists already (another tcopy-tun running? choose another name)", cfg.Name)
		}
	}
	addrs, err := h.addrs()
	if err != nil {
		return p, err
	}
	routes, err := h.routes(unix.RT_TABLE_MAIN)
	if err != nil {
		return p, err
	}
	if err := checkConflicts(&p, addrs, routes); err != nil {
		return p, err
	}

	for _, t := range cfg.Targets {
		if t.Is4() && t.IsLoopback() {
			p.localnet = true
		}
		r, err := h.routeGet(t, netip.Addr{}, 0)
		if err != nil {
			return p, fmt.Errorf("target %s: no route: %w", t, err)
		}
		if r.Type == unix.RTN_LOCAL {
			continue
		}
		// A lookup answers with the /32 asked for; name the route itself.
		if rs, err := h.routes(r.Table); err == nil {
			if best, ok := longestMatch(rs, t); ok && best.Link == r.Link {
				r = best
			}
		}
		r.linkName = p.linkNames[r.Link]
		if r.Type != unix.RTN_UNICAST || r.Link == 0 {
			return p, fmt.Errorf("target %s: not reachable (route %s)", t, r)
		}
		if !cfg.Forward {
			return p, fmt.Errorf("target %s: not an address of this host (reached by route %s): "+
				"replay to another host needs forwarding mode, and a route on that host sending %s back to this one",
				t, r, prefixList(cfg.ClientPrefixes, t))
		}
		p.remote[t] = link{Index: r.Link, Name: r.linkName}
		if t.Is6() && !p.forceForward6 {
			if all, _, err := h.sysctl("net/ipv6/conf/all/forwarding"); err != nil {
				return p, err
			} else if all != "1" {
				if _, ok, err := h.sysctl("net/ipv6/conf/all/force_forwarding"); err != nil {
					return p, err
				} else if !ok {
					return p, fmt.Errorf("target %s: forwarding IPv6 needs the per-interface "+
						"net.ipv6.conf.<if>.force_forwarding (Linux >= 6.17), which this kernel lacks; the global "+
						"net.ipv6.conf.all.forwarding=1 would also disable router advertisements on every interface, "+
						"so tcopy-tun does not set it: set it yourself if that is acceptable, or use an IPv4 target", t)
				}
				p.forceForward6 = true
			}
		}
	}
	return p, nil
}

// checkConflicts refuses client ranges that contain a local address or a
// target, or overlap a route of the main table other than a default
// route. With AllowRouteOverlap a route overlap becomes a warning.
func checkConflicts(p *plan, addrs []addr, routes []route) error {
	cfg := p.cfg
	for _, pfx := range cfg.ClientPrefixes {
		for _, a := range addrs {
			if pfx.Contains(a.Prefix.Addr()) {
				return conflictf("client range %s contains %s, an address of this host (dev %s)", pfx, a.Prefix.Addr(), a.Link)
			}
		}
		for _, t := range cfg.Targets {
			if pfx.Contains(t) {
				return conflictf("client range %s contains the target %s", pfx, t)
			}
		}
		for _, r := range routes {
			if r.Dst.Bits() == 0 || !r.Dst.Overlaps(pfx) {
				continue
			}
			if r.linkName == "" {
				r.linkName = p.linkNames[r.Link]
			}
			msg := fmt.Sprintf("client range %s overlaps the route %s", pfx, r)
			if !cfg.AllowRouteOverlap {
				return conflictf("%s: replies to those clients would not all reach the device; choose another client range", msg)
			}
			p.warnings = append(p.warnings, msg+": routing it into the device anyway, as asked")
		}
	}
	return nil
}

// verify checks that the kernel routes each target's replies to each client
// range into the device: a route lookup from the target (as received on
// the outside interface for a remote target) to the first and last
// address of the range must leave through index, and no route of the main
// table may claim a part of the range.
func verify(p plan, index int, h host) error {
	cfg := p.cfg
	for _, t := range cfg.Targets {
		iif := p.remote[t].Index
		for _, pfx := range cfg.ClientPrefixes {
			if pfx.Addr().Is4() != t.Is4() {
				continue
			}
			for _, c := range samples(pfx) {
				r, err := h.routeGet(c, t, iif)
				if err != nil {
					return &conflictError{msg: fmt.Sprintf("return route from target %s to client %s (range %s): the kernel refuses it", t, c, pfx), err: err}
				}
				if r.Link == index {
					continue
				}
				culprit := r
				if rs, err := h.routes(r.Table); err == nil {
					if best, ok := longestMatch(rs, c); ok {
						culprit = best
					}
				}
				culprit.linkName = p.linkNames[culprit.Link]
				got := p.linkNames[r.Link]
				if got == "" {
					got = fmt.Sprintf("#%d", r.Link)
				}
				return conflictf("return route from target %s to client %s (range %s) leads to dev %s, not into %s: "+
					"route %s wins (see `ip rule` and `ip route show table all`)", t, c, pfx, got, cfg.Name, culprit)
			}
		}
	}
	routes, err := h.routes(unix.RT_TABLE_MAIN)
	if err != nil {
		return err
	}
	for _, pfx := range cfg.ClientPrefixes {
		for _, r := range routes {
			if r.Link != index && r.Dst.Bits() > pfx.Bits() && pfx.Overlaps(r.Dst) {
				r.linkName = p.linkNames[r.Link]
				return conflictf("route %s takes part of client range %s away from %s", r, pfx, cfg.Name)
			}
		}
	}
	return nil
}

// samples are the addresses of pfx whose return routes verify checks: the
// first and last usable host.
func samples(pfx netip.Prefix) []netip.Addr {
	first := pfx.Addr()
	if pfx.Bits() == first.BitLen() {
		return []netip.Addr{first}
	}
	last := lastAddr(pfx)
	if pfx.Bits() < first.BitLen()-1 {
		first, last = first.Next(), last.Prev()
	}
	return []netip.Addr{first, last}
}

func lastAddr(pfx netip.Prefix) netip.Addr {
	b := pfx.Masked().Addr().AsSlice()
	for i := pfx.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// longestMatch is the route of rs with the longest prefix containing a.
func longestMatch(rs []route, a netip.Addr) (route, bool) {
	var (
		best route
		ok   bool
	)
	for _, r := range rs {
		if r.Dst.Contains(a) && (!ok || r.Dst.Bits() > best.Dst.Bits()) {
			best, ok = r, true
		}
	}
	return best, ok
}

func prefixList(ps []netip.Prefix, t netip.Addr) string {
	var s string
	for _, p := range ps {
		if p.Addr().Is4() == t.Is4() {
			if s != "" {
				s += ", "
			}
			s += p.String()
		}
	}
	return s
}
