package tun

import (
	"fmt"
	"net/netip"
	"slices"
)

// Defaults applied by Open to zero fields of Config.
const (
	// DefaultName is the device's name.
	DefaultName = "tcopy0"
	// DefaultMTU is the largest an IP packet can be: the path is host-local,
	// and packet count is the cost (DESIGN: 65535 moves about 20x more bytes
	// per second than 1500).
	DefaultMTU = 65535
	// DefaultTxQueueLen replaces the kernel's 500: at 500 the kernel drops
	// packets on their way into the TUN under load, and the lost SYN-ACKs
	// push connect latency to the retransmit timer (p99 about 1 s, DESIGN).
	DefaultTxQueueLen = 10000
)

// DefaultClientPrefixes are the benchmarking ranges (RFC 2544, RFC 5180)
// that mapped client addresses come from: never routed on the internet, so
// routing them into the TUN takes nothing away from the host.
func DefaultClientPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:2::/48")}
}

// Logf reports one line, like log.Printf or testing.T.Logf.
type Logf func(format string, args ...any)

// Config says what device Open creates and what it may change on the host.
type Config struct {
	// Name of the device; DefaultName when empty. At most 15 bytes.
	Name string
	// MTU of the device; DefaultMTU when 0.
	MTU int
	// TxQueueLen of the device; DefaultTxQueueLen when 0.
	TxQueueLen int
	// VnetHdr opens the device with IFF_VNET_HDR and turns on its checksum
	// and TSO offloads (TUNSETOFFLOAD): every packet on the fd is preceded
	// by a 10-byte virtio_net_hdr, TCP segments of up to 64 KiB pass in
	// both directions whatever the MTU, and checksums are left to the
	// kernel. The reader of the fd must speak the header
	// (netstack.LinkOptions.VnetHdr).
	VnetHdr bool

	// ClientPrefixes are routed into the device: the addresses the replayer
	// dials from. DefaultClientPrefixes when nil. When left nil and the
	// kernel has no IPv6, the IPv6 default is dropped (with a log line).
	ClientPrefixes []netip.Prefix

	// Targets are the addresses that will be dialed. Open refuses client
	// ranges containing one, turns on what a target needs (route_localnet
	// for 127.0.0.0/8, forwarding for a remote one), and before returning
	// checks that each target's replies to every client range are routed
	// into the device. ::1 is refused: it cannot work through a TUN.
	Targets []netip.Addr

	// Forward enables the "target on another host" mode: a target that is
	// not an address of this host is reached by forwarding between the
	// device and the interface that leads to it. Open then enables
	// forwarding on exactly those two interfaces, per family, never the
	// global switch (see doc.go). Without Forward a remote target is an
	// error, since its packets would be dropped.
	Forward bool

	// AllowRouteOverlap turns the refusal of a client range that overlaps
	// an existing route into a logged warning (--keep-client-ip routes real
	// client addresses into the device on purpose). Overlap with a local
	// address or a target is refused regardless.
	AllowRouteOverlap bool

	// Logf, when set, receives one line per host change and per undo.
	Logf Logf
}

// withDefaults returns cfg with zero fields filled and addresses unmapped,
// and whether ClientPrefixes were defaulted.
func (cfg Config) withDefaults() (Config, bool) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.TxQueueLen == 0 {
		cfg.TxQueueLen = DefaultTxQueueLen
	}
	defaulted := cfg.ClientPrefixes == nil
	if defaulted {
		cfg.ClientPrefixes = DefaultClientPrefixes()
	} else {
		cfg.ClientPrefixes = slices.Clone(cfg.ClientPrefixes)
	}
	for i, p := range cfg.ClientPrefixes {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		cfg.ClientPrefixes[i] = p.Masked()
	}
	cfg.Targets = slices.Clone(cfg.Targets)
	for i, a := range cfg.Targets {
		cfg.Targets[i] = a.Unmap()
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	return cfg, defaulted
}

// validate checks what can be checked without looking at the host.
func (cfg Config) validate() error {
	if len(cfg.Name) > 15 {
		return fmt.Errorf("device name %q: longer than 15 bytes", cfg.Name)
	}
	for _, r := range cfg.Name {
		if r <= ' ' || r == '/' || r == ':' || r == '%' || r > 0x7e {
			return fmt.Errorf("device name %q: contains %q", cfg.Name, r)
		}
	}
	if cfg.Name == "." || cfg.Name == ".." || cfg.Name == "all" || cfg.Name == "default" {
		return fmt.Errorf("device name %q: reserved", cfg.Name)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return fmt.Errorf("mtu %d: want 576..65535", cfg.MTU)
	}
	if cfg.TxQueueLen < 1 {
		return fmt.Errorf("txqueuelen %d: want > 0", cfg.TxQueueLen)
	}
	if len(cfg.ClientPrefixes) == 0 {
		return fmt.Errorf("client ranges: none given")
	}
	for i, p := range cfg.ClientPrefixes {
		if !p.IsValid() {
			return fmt.Errorf("client range #%d: invalid prefix", i+1)
		}
		if p.Bits() == 0 {
			return fmt.Errorf("client range %s: would route every address into the device", p)
		}
		a := p.Addr()
		if a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsLinkLocalMulticast() {
			return fmt.Errorf("client range %s: loopback, link-local, multicast or unspecified addresses cannot be clients", p)
		}
	}
	// Prefixes either nest or are disjoint, so after sorting by first
	// address any overlap shows between neighbours: O(n log n) for the
	// thousands of /32s that --keep-client-ip may bring.
	sorted := slices.SortedFunc(slices.Values(cfg.ClientPrefixes), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	for i := 1; i < len(sorted); i++ {
		if sorted[i-1].Overlaps(sorted[i]) {
			return fmt.Errorf("client range %s: overlaps client range %s", sorted[i], sorted[i-1])
		}
	}
	for _, t := range cfg.Targets {
		if err := validateTarget(t); err != nil {
			return err
		}
		if !slices.ContainsFunc(cfg.ClientPrefixes, func(p netip.Prefix) bool { return p.Addr().Is4() == t.Is4() }) {
			fam := "IPv6"
			if t.Is4() {
				fam = "IPv4"
			}
			return fmt.Errorf("target %s: no %s client range to dial it from", t, fam)
		}
	}
	return nil
}

func validateTarget(t netip.Addr) error {
	switch {
	case !t.IsValid():
		return fmt.Errorf("target: invalid address")
	case t == netip.IPv6Loopback():
		return fmt.Errorf("target ::1: IPv6 loopback cannot be reached through a TUN " +
			"(the kernel accepts packets for ::1 only from lo); use 127.0.0.1 or another address of this host")
	case t.IsUnspecified():
		return fmt.Errorf("target %s: unspecified address", t)
	case t.IsMulticast():
		return fmt.Errorf("target %s: multicast address", t)
	case t.Is4() && t == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("target %s: broadcast address", t)
	case t.Is6() && t.IsLinkLocalUnicast():
		return fmt.Errorf("target %s: IPv6 link-local address cannot be reached through a TUN "+
			"(it is valid only on its own link); use a global or unique-local address", t)
	}
	return nil
}
