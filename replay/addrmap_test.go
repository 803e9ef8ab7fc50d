package replay

import (
	"net/netip"
	"testing"
)

func newTestMapper(t *testing.T, cfg Config) *clientMapper {
	t.Helper()
	cfg.Dialer = SocketDialerForTests
	if !cfg.Target.IsValid() {
		cfg.Target = testTarget
	}
	c, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newClientMapper(&c)
}

// SocketDialerForTests satisfies Config validation in pure mapping tests.
var SocketDialerForTests = &SocketDialer{}

func TestMappingDeterministicAndInRange(t *testing.T) {
	clients := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.1:1001"),
		netip.MustParseAddrPort("192.0.2.2:1000"), netip.MustParseAddrPort("[2001:db8::1]:5000"),
	}
	run := func(runID uint64, pass int) []netip.AddrPort {
		m := newTestMapper(t, Config{})
		var out []netip.AddrPort
		for _, c := range clients {
			a, err := m.mapClient(runSalt(runID, pass), c, testTarget, 0)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	a, b := run(42, 0), run(42, 0)
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("client %v: %v then %v with the same run id", clients[i], a[i], b[i])
		}
		if !DefaultClientNet4.Contains(a[i].Addr()) {
			t.Errorf("client %v mapped to %v, outside %v (IPv4 target)", clients[i], a[i], DefaultClientNet4)
		}
		if a[i].Port() < 1024 {
			t.Errorf("port %d below 1024", a[i].Port())
		}
	}
	if a[0].Addr() != a[1].Addr() {
		t.Errorf("one captured client IP mapped to two addresses: %v, %v", a[0], a[1])
	}
	if a[0] == a[1] {
		t.Errorf("two sessions of one client got the same tuple %v", a[0])
	}
	if a[0].Addr() == a[2].Addr() {
		t.Errorf("two client IPs collided on %v (possible, but not for these)", a[0])
	}
	for _, other := range [][]netip.AddrPort{run(43, 0), run(42, 1)} {
		for i := range a {
			if other[i].Addr() == a[i].Addr() {
				t.Errorf("client %v maps to %v in two runs or passes", clients[i], a[i])
			}
		}
	}
}

// TestMappingNoTupleReuse: 200,000 sessions from one captured client ip:port
// (a client reusing its port) each get a tuple never used before; the
// mapping spreads over ceil(200000/64512) = 4 addresses.
func TestMappingNoTupleReuse(t *testing.T) {
	m := newTestMapper(t, Config{})
	captured := netip.MustParseAddrPort("192.0.2.9:33333")
	salt := runSalt(7, 0)
	seen := make(map[netip.AddrPort]bool, 200000)
	addrs := map[netip.Addr]int{}
	for i := range 200000 {
		a, err := m.mapClient(salt, captured, testTarget, 0)
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("session %d: tuple %v reused", i, a)
		}
		seen[a] = true
		addrs[a.Addr()]++
	}
	if len(addrs) != 4 {
		t.Errorf("spread over %d addresses, want 4: %v", len(addrs), addrs)
	}
	for a, n := range addrs {
		if n > portSpace {
			t.Errorf("%v used %d times", a, n)
		}
	}
}

// TestMappingAvoidsSpecialAddresses: in a /30 only the two host addresses
// are usable; reserved ones are skipped.
func TestMappingAvoidsSpecialAddresses(t *testing.T) {
	m := newTestMapper(t, Config{ClientNet4: netip.MustParsePrefix("198.18.0.0/30")})
	got := map[netip.Addr]bool{}
	for i := range 300 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1)
		a, err := m.mapClient(runSalt(1, 0), c, testTarget, 0)
		if err != nil {
			t.Fatal(err)
		}
		got[a.Addr()] = true
	}
	want := map[netip.Addr]bool{netip.MustParseAddr("198.18.0.1"): true, netip.MustParseAddr("198.18.0.2"): true}
	if len(got) != 2 || !got[netip.MustParseAddr("198.18.0.1")] || !got[netip.MustParseAddr("198.18.0.2")] {
		t.Errorf("used %v, want %v", got, want)
	}

	m = newTestMapper(t, Config{ClientNet4: netip.MustParsePrefix("198.18.0.0/30"),
		ReservedClients: []netip.Addr{netip.MustParseAddr("198.18.0.1")}})
	for i := range 100 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1)
		a, _ := m.mapClient(runSalt(1, 0), c, testTarget, 0)
		if a.Addr() != netip.MustParseAddr("198.18.0.2") {
			t.Fatalf("mapped to %v, want only 198.18.0.2", a)
		}
	}
}

func TestMappingFamiliesAndKeep(t *testing.T) {
	v6target := netip.MustParseAddrPort("[fd00::2]:80")
	m := newTestMapper(t, Config{})
	a, err := m.mapClient(runSalt(1, 0), netip.MustParseAddrPort("192.0.2.1:1000"), v6target, 0)
	if err != nil || !DefaultClientNet6.Contains(a.Addr()) {
		t.Errorf("IPv4 client to IPv6 target: %v %v, want inside %v", a, err, DefaultClientNet6)
	}
	if h := a.Addr().As16(); [10]byte(h[6:]) == [10]byte{} {
		t.Errorf("mapped to the subnet-router anycast address %v", a)
	}

	m = newTestMapper(t, Config{KeepClientIP: true})
	captured := netip.MustParseAddrPort("192.0.2.1:1000")
	a, err = m.mapClient(runSalt(1, 0), captured, testTarget, 0)
	if err != nil || a.Addr() != captured.Addr() {
		t.Errorf("keep client ip: %v %v", a, err)
	}
	if _, err := m.mapClient(runSalt(1, 0), captured, v6target, 0); err == nil {
		t.Error("keep client ip across families: no error")
	}
}

func TestMappingCopiesDiffer(t *testing.T) {
	m := newTestMapper(t, Config{})
	captured := netip.MustParseAddrPort("192.0.2.1:1000")
	seen := map[netip.Addr]bool{}
	for c := range 20 {
		a, _ := m.mapClient(runSalt(1, 0), captured, testTarget, c)
		if seen[a.Addr()] {
			t.Errorf("copy %d shares address %v with another copy", c, a.Addr())
		}
		seen[a.Addr()] = true
	}
}
