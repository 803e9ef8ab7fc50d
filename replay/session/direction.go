package session

import "net/netip"

// serverSet is Config.Servers as a lookup: exact endpoints plus ports
// selected on any address.
type serverSet struct {
	exact   map[netip.AddrPort]struct{}
	anyAddr map[uint16]struct{}
}

func newServerSet(servers []netip.AddrPort) serverSet {
	var s serverSet
	for _, ap := range servers {
		if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			if s.anyAddr == nil {
				s.anyAddr = make(map[uint16]struct{})
			}
			s.anyAddr[ap.Port()] = struct{}{}
			continue
		}
		if s.exact == nil {
			s.exact = make(map[netip.AddrPort]struct{})
		}
		// Unmap so that ::ffff:10.0.0.1 selects the IPv4 endpoint the
		// decoder reports.
		s.exact[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = struct{}{}
	}
	return s
}

func (s serverSet) empty() bool { return len(s.exact) == 0 && len(s.anyAddr) == 0 }

func (s serverSet) has(ap netip.AddrPort) bool {
	if _, ok := s.exact[ap]; ok {
		return true
	}
	_, ok := s.anyAddr[ap.Port()]
	return ok
}

// maxListeners bounds the set of endpoints learned from handshakes: a SYN
// scan must not make it grow without limit. Past the bound, inference falls
// back to ports for the endpoints not learned.
const maxListeners = 1 << 16

// serviceSide tells which endpoint of a connection without a handshake is
// the server, from the endpoints alone: true means b.
//
// The order, strongest evidence first:
//  1. Config.Servers names exactly one of them;
//  2. Config.Keep accepts exactly one of them;
//  3. exactly one was seen listening earlier in the capture (it received a
//     SYN or sent a SYN-ACK);
//  4. exactly one is a well-known service port (below 1024, or a common
//     database/cache/web port such as 3306, 5432, 6379, 8080, 11211);
//  5. the lower port, since clients use ephemeral ports (32768-60999 on
//     Linux, 49152-65535 elsewhere);
//  6. equal ports: b, the destination of the first packet seen.
//
// It only looks at what was seen before the connection's first packet: a
// capture read from a stream cannot look ahead. Config.Servers settles any
// case where this guesses wrong.
func (b *Builder) serviceSide(a, bb netip.AddrPort) bool {
	if !b.servers.empty() {
		ha, hb := b.servers.has(a), b.servers.has(bb)
		if ha != hb {
			return hb
		}
	}
	if b.cfg.Keep != nil {
		ka, kb := b.cfg.Keep(a), b.cfg.Keep(bb)
		if ka != kb {
			return kb
		}
	}
	_, la := b.listeners[a]
	_, lb := b.listeners[bb]
	if la != lb {
		return lb
	}
	sa, sb := servicePort(a.Port()), servicePort(bb.Port())
	if sa != sb {
		return sb
	}
	if a.Port() != bb.Port() {
		return bb.Port() < a.Port()
	}
	return true
}

func (b *Builder) learnListener(server netip.AddrPort) {
	if _, ok := b.listeners[server]; ok || len(b.listeners) >= maxListeners {
		return
	}
	b.listeners[server] = struct{}{}
}

// servicePort reports ports that servers listen on: the well-known range
// and the registered ports of common services that are not in it.
func servicePort(p uint16) bool {
	if p != 0 && p < 1024 {
		return true
	}
	switch p {
	case 1433, 1521, 2049, 2181, 2375, 2376, 3000, 3306, 3389, 4222,
		5000, 5432, 5672, 5984, 6379, 6443, 7000, 8000, 8008, 8080,
		8081, 8443, 8888, 9000, 9042, 9090, 9092, 9200, 9300, 11211,
		15672, 27017, 50051:
		return true
	}
	return false
}
