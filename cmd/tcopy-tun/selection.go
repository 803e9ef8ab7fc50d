package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// selection is which captured servers the replay rebuilds sessions for,
// worked out once from the flags: the endpoint --server names, else the
// captured ends of --map, else the server on --target's port, on any
// address. It answers the session builder (has, as Config.Keep through
// serversSeen), a live capture's filter (ports) and the messages (String).
// When the default selects nothing in a capture file that holds exactly one
// server, that server is meant (fallback).
type selection struct {
	// servers are the selected endpoints; one with an unspecified address
	// (0.0.0.0, :: or none) selects its port on any address, as in
	// session.Config.Servers.
	servers []netip.AddrPort
	// named: --server or --map named the servers (or the only server in
	// the capture was chosen): nothing is guessed.
	named bool
}

func newSelection(f *replayFlags) selection {
	switch {
	case f.server.IsValid():
		return selection{servers: []netip.AddrPort{f.server}, named: true}
	case len(f.maps) > 0:
		s := selection{named: true}
		for c := range f.maps {
			s.servers = append(s.servers, c)
		}
		slices.SortFunc(s.servers, netip.AddrPort.Compare) // messages do not change from run to run
		return s
	}
	return selection{servers: []netip.AddrPort{netip.AddrPortFrom(netip.Addr{}, f.target.Port())}}
}

// onlyServer selects one captured server: the only one in the capture.
func onlyServer(server netip.AddrPort) selection {
	return selection{servers: []netip.AddrPort{server}, named: true}
}

func anyAddr(ap netip.AddrPort) bool { return !ap.Addr().IsValid() || ap.Addr().IsUnspecified() }

// has reports whether the captured server endpoint is selected. IPv4-mapped
// IPv6 addresses select the IPv4 endpoint the decoder reports.
func (s selection) has(server netip.AddrPort) bool {
	for _, sel := range s.servers {
		if sel.Port() != server.Port() {
			continue
		}
		if anyAddr(sel) || sel.Addr().Unmap() == server.Addr().Unmap() {
			return true
		}
	}
	return false
}

// ports are the selected server ports, for a live capture's kernel filter
// (none: every TCP segment).
func (s selection) ports() []uint16 {
	var ports []uint16
	for _, sel := range s.servers {
		if p := sel.Port(); p != 0 && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// String names the selection in messages: "port 80", "10.0.0.1:80",
// "10.0.0.1:80, port 81".
func (s selection) String() string {
	var w []string
	for _, sel := range s.servers {
		if anyAddr(sel) {
			w = append(w, fmt.Sprintf("port %d", sel.Port()))
		} else {
			w = append(w, sel.String())
		}
	}
	return strings.Join(w, ", ")
}

// noun is "server", or "servers" for more than one.
func (s selection) noun() string {
	if len(s.servers) > 1 {
		return "servers"
	}
	return "server"
}

// fallback returns the server meant when a pass with this selection read no
// session and seen recorded what it read: with no server named in the
// flags, a capture file whose connections all have one server, which the
// selection did not select. A second pass over the file replays it.
// Standard input and a live interface cannot be read again: there the
// error says what was seen instead (noSessionsError).
func (s selection) fallback(f *replayFlags, seen *serversSeen) (netip.AddrPort, bool) {
	if s.named || f.endless() || f.pcap == "-" {
		return netip.AddrPort{}, false
	}
	others := seen.others()
	if len(others) != 1 || seen.more {
		return netip.AddrPort{}, false
	}
	return others[0], true
}

// maxServersSeen bounds what serversSeen keeps: enough to tell one server
// from several and to name a few in a message, whatever a scan in the
// capture looks like.
const maxServersSeen = 8

// serversSeen records the distinct captured servers of the connections a
// pass reads, selected or not, at the cost of a comparison per new
// connection, so that a pass that selected nothing still knows what the
// capture holds (selection.fallback, noSessionsError).
//
// Its keep is the session builder's Config.Keep, and added is called after
// each Builder.Add (passBuilder). Config.Keep is asked about a connection's
// server endpoint once its direction is known, after any question about
// the two endpoints that settles the direction (a connection without a
// handshake), and one segment opens at most one connection: so the last
// endpoint Keep was asked about while a segment was added is the server of
// the connection it opened.
//
// It counts connections, not sessions: a connection without a handshake
// that never carried client data (not a session) counts too.
type serversSeen struct {
	sel   selection
	last  netip.AddrPort // the endpoint Keep was last asked about
	asked bool           // Keep was asked during the current Add
	list  []netip.AddrPort
	more  bool // more distinct servers than list holds
}

func newServersSeen(sel selection) *serversSeen { return &serversSeen{sel: sel} }

// keep is session.Config.Keep: the selection, noting the question.
func (s *serversSeen) keep(server netip.AddrPort) bool {
	s.last, s.asked = server, true
	return s.sel.has(server)
}

// added records the server of the connection the segment just added
// opened, if it opened one.
func (s *serversSeen) added() {
	if !s.asked {
		return
	}
	s.asked = false
	switch {
	case slices.Contains(s.list, s.last):
	case len(s.list) < maxServersSeen:
		s.list = append(s.list, s.last)
	default:
		s.more = true
	}
}

// others are the servers seen that the selection does not select, in the
// order first seen.
func (s *serversSeen) others() []netip.AddrPort {
	var out []netip.AddrPort
	for _, ap := range s.list {
		if !s.sel.has(ap) {
			out = append(out, ap)
		}
	}
	return out
}

// othersString names the servers seen that the selection does not select,
// for a message: "10.1.0.1:9000", "10.1.0.1:9000 and 10.1.0.2:9001",
// "... and others"; "" if there are none.
func (s *serversSeen) othersString() string {
	var w []string
	for _, ap := range s.others() {
		w = append(w, ap.String())
	}
	switch {
	case len(w) == 0:
		return ""
	case s.more:
		return strings.Join(w, ", ") + " and others"
	case len(w) == 1:
		return w[0]
	}
	return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
}

// noSessionsError says that a pass with selection sel read no session, what
// the capture held instead and how to choose.
func noSessionsError(f *replayFlags, sel selection, c capture.Stats, seen *serversSeen) error {
	others := seen.othersString()
	if f.endless() {
		what := "live capture on " + f.live
		if f.live == "" {
			what = "capture from " + f.sourceName()
		}
		if others != "" {
			return fmt.Errorf("%s: no sessions of the selected %s were seen (%d TCP segments, of connections to %s; choose with --server IP:PORT)", what, sel.noun(), c.TCP, others)
		}
		return fmt.Errorf("%s: no sessions of the selected %s were seen (%d TCP segments)", what, sel.noun(), c.TCP)
	}
	if c.TCP == 0 {
		return fmt.Errorf("read %q: no TCP segments in %d frames: nothing to replay", f.pcap, c.Frames)
	}
	held := fmt.Sprintf("the capture holds %d TCP segments", c.TCP)
	if others != "" {
		held += ", of connections to " + others
	}
	choose := fmt.Sprintf("run 'tcopy-tun inspect %s' and choose with --server IP:PORT", f.pcap)
	if o := seen.others(); f.pcap == "-" && len(o) == 1 && !seen.more {
		choose = fmt.Sprintf("standard input cannot be read again: run again with --server %s", o[0])
	}
	return fmt.Errorf("read %q: no sessions of the captured %s %s (%s; %s)", f.pcap, sel.noun(), sel, held, choose)
}
