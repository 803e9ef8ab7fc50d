package tuntest

import "testing"

// VethPair names the two ends of a veth pair: A lives in the first
// namespace given to Veth, B in the second.
type VethPair struct {
	A, B string
}

// Veth joins namespaces a and b with a veth pair, both ends up, and adds
// addrA to a's end and addrB to b's end (an empty prefix adds none). It is
// the wire of the "target on another host" topology: tcopy-tun in a, the
// target in b. The pair is created from inside a, so it never exists in the
// test's own namespace, and it disappears with the namespaces.
func Veth(t testing.TB, a, b *Netns, addrA, addrB string) VethPair {
	t.Helper()
	if a == nil || b == nil || a == b {
		t.Fatalf("tuntest.Veth: need two distinct namespaces")
	}
	id := randHex(4)
	p := VethPair{A: "va" + id, B: "vb" + id} // 10 bytes: under IFNAMSIZ
	a.Run(t, "ip", "link", "add", p.A, "type", "veth", "peer", "name", p.B, "netns", b.Name)
	a.Run(t, "ip", "link", "set", p.A, "up")
	b.Run(t, "ip", "link", "set", p.B, "up")
	if addrA != "" {
		a.AddAddr(t, p.A, addrA)
	}
	if addrB != "" {
		b.AddAddr(t, p.B, addrB)
	}
	return p
}
