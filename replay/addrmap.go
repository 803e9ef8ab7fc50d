package replay

import (
	"fmt"
	"net/netip"
)

// Client address mapping.
//
// Every replayed session is dialed from a fresh client 4-tuple in the client
// range (198.18.0.0/15 and 2001:2::/48 by default), chosen so that:
//
//   - the same captured client IP maps to the same mapped IP within a run
//     (per copy: each --multiply copy is its own client), so per-client state
//     on the target (rate limits, affinity) sees one client as one;
//   - the mapping is a keyed hash of the captured IP, the copy number and the
//     run's salt (RunID and pass): deterministic for a given RunID, and
//     different from one run (or --loop pass) to the next, so that the target,
//     which may still hold the previous run's connections in TIME_WAIT, never
//     sees a reused 4-tuple (two runs collide only where one client lands on
//     the same address in both runs and the ports overlap: with a random
//     RunID a chance of about clients/range × sessions/64512);
//   - ports are handed out per mapped IP, sequentially from a salted base over
//     1024–65535, so no port of a mapped IP is used twice in a Runner until all
//     64512 are used. Then the captured client moves on to its next candidate
//     address (the hash with a higher counter) rather than reusing a port: a
//     captured client ip:port that reappears in the capture, or 200,000
//     sessions from one client, still get 4-tuples never used before in the
//     run;
//   - the range's network and broadcast addresses (first and last, for
//     ranges larger than /31) and Config.ReservedClients are never used.
//
// Two captured clients may hash to the same mapped IP; they then share its
// port sequence, so their tuples still differ. With KeepClientIP the address
// is the captured one and only ports are allocated; once its 64512 ports are
// used they wrap around, oldest first (a warning says so).
//
// The mapper is used by the dispatcher only (in session order), which is what
// makes the mapping deterministic; it is not safe for concurrent use.
type clientMapper struct {
	v4, v6   netip.Prefix
	keep     bool
	reserved map[netip.Addr]bool
	// used counts ports handed out per mapped address in this Runner.
	used    map[netip.Addr]uint32
	wrapped map[netip.Addr]bool // KeepClientIP addresses that wrapped (warned)
	logf    func(string, ...any)
}

const (
	portLo    = 1024
	portSpace = 65536 - portLo
	// maxCandidates bounds the search for an address with free ports.
	// Beyond it the range is treated as used up and ports wrap around.
	maxCandidates = 4096
)

func newClientMapper(cfg *Config) *clientMapper {
	m := &clientMapper{
		v4: cfg.ClientNet4, v6: cfg.ClientNet6, keep: cfg.KeepClientIP,
		reserved: make(map[netip.Addr]bool, len(cfg.ReservedClients)),
		used:     make(map[netip.Addr]uint32),
		wrapped:  make(map[netip.Addr]bool),
		logf:     cfg.Logf,
	}
	for _, a := range cfg.ReservedClients {
		m.reserved[a.Unmap()] = true
	}
	return m
}

// runSalt derives the salt of one pass of a run.
func runSalt(runID uint64, pass int) uint64 {
	return hasher(domRun).word(runID).word(uint64(pass)).sum()
}

// mapClient returns the client address to dial target from, for the copy-th
// copy of a session from captured.
func (m *clientMapper) mapClient(salt uint64, captured, target netip.AddrPort, copy int) (netip.AddrPort, error) {
	want6 := target.Addr().Unmap().Is6()
	if m.keep {
		a := captured.Addr().Unmap()
		if a.Is6() != want6 {
			return netip.AddrPort{}, fmt.Errorf("keep client ip: captured client %s and target %s are of different IP families", captured, target)
		}
		return netip.AddrPortFrom(a, m.nextPort(salt, a, true)), nil
	}
	pfx := m.v4
	if want6 {
		pfx = m.v6
	}
	h := hasher(domAddr).word(salt).addr(captured.Addr()).word(uint64(copy))
	for k := range maxCandidates {
		a, ok := m.candidate(pfx, h.word(uint64(k)).sum())
		if !ok || m.used[a] >= portSpace {
			continue
		}
		return netip.AddrPortFrom(a, m.nextPort(salt, a, false)), nil
	}
	// Every candidate tried is used up: a range far too small for the
	// number of sessions. Start over with the first candidate and reuse its
	// oldest ports.
	for k := range maxCandidates {
		if a, ok := m.candidate(pfx, h.word(uint64(k)).sum()); ok {
			return netip.AddrPortFrom(a, m.nextPort(salt, a, true)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("client net %s: no usable address", pfx)
}

// nextPort hands out the next port of a. With wrap, a used-up address
// starts over (and warns once).
func (m *clientMapper) nextPort(salt uint64, a netip.Addr, wrap bool) uint16 {
	n := m.used[a]
	if n >= portSpace && wrap && !m.wrapped[a] {
		m.wrapped[a] = true
		m.logf("client address %s: all %d ports used in this run; reusing them, oldest first (the target may still hold them in TIME_WAIT)", a, portSpace)
	}
	m.used[a] = n + 1
	base := hasher(domPort).word(salt).addr(a).sum() % portSpace
	return uint16(portLo + (base+uint64(n))%portSpace)
}

// candidate places the hash h in pfx's host bits. It rejects the network
// and broadcast addresses and reserved ones.
func (m *clientMapper) candidate(pfx netip.Prefix, h uint64) (netip.Addr, bool) {
	b := pfx.Addr().As16()
	off := 0
	if pfx.Addr().Is4() {
		off = 12
	}
	bits := len(b)*8 - off*8 - pfx.Bits() // host bits
	// Fill host bits from the low end with hash output, 64 bits at a time.
	word := h
	used := 0
	allZero, allOne := true, true
	for i := len(b) - 1; i >= off && bits > 0; i-- {
		if used == 8 {
			word = mix(word ^ domAddr)
			used = 0
		}
		n := min(bits, 8)
		mask := byte(1<<n - 1)
		v := byte(word) & mask
		word >>= 8
		used++
		b[i] = b[i]&^mask | v
		if v != 0 {
			allZero = false
		}
		if v != mask {
			allOne = false
		}
		bits -= n
	}
	var a netip.Addr
	if pfx.Addr().Is4() {
		a = netip.AddrFrom4([4]byte(b[12:]))
	} else {
		a = netip.AddrFrom16(b)
	}
	hostBits := pfx.Addr().BitLen() - pfx.Bits()
	if hostBits >= 2 && (allZero || allOne) {
		return a, false
	}
	if m.reserved[a] {
		return a, false
	}
	return a, true
}
