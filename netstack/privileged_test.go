package netstack_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/netstack"
)

// The real loop: netstack on a TUN, kernel targets in a private namespace,
// responses routed back into the TUN. For each link endpoint kind: an IPv4
// target on a dummy interface, a loopback target (route_localnet), an IPv6
// target, a refused port, and the server's view of the client addresses.
func TestPrivilegedTUNLoop(t *testing.T) {
	for _, kind := range netstack.LinkKinds() {
		t.Run(string(kind), func(t *testing.T) {
			checkGoroutines(t)
			env := newLoopEnv(t, 65535)
			ep, err := netstack.NewLinkEndpoint(kind, env.tunFD, 65535)
			if err != nil {
				t.Fatal(err)
			}
			st, err := netstack.New(ep, netstack.Options{Logf: t.Logf, ConnectTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()

			v4 := env.startServer(t, netip.AddrPortFrom(nsTargetV4, 0), echo)
			lo := env.startServer(t, netip.MustParseAddrPort("127.0.0.1:0"), echo)
			v6 := env.startServer(t, netip.AddrPortFrom(nsTargetV6, 0), echo)

			msg := bytes.Repeat([]byte("tcopy-tun loop "), 1<<20/15) // about 1 MiB each way
			for _, tc := range []struct {
				name   string
				client netip.Addr
				server *kernelServer
			}{
				{"ipv4 dummy target", netip.MustParseAddr("198.18.3.4"), v4},
				{"ipv4 loopback target", netip.MustParseAddr("198.18.3.5"), lo},
				{"ipv6 target", netip.MustParseAddr("2001:2::3:6"), v6},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if err := echoOnce(st, netip.AddrPortFrom(tc.client, 0), tc.server.addr, msg); err != nil {
						t.Fatal(err)
					}
					// The target saw the mapped client address: the
					// whole point of dialling through the TUN.
					if n := tc.server.sawClient(tc.client); n != 1 {
						t.Errorf("server %s accepted %d connections from %s, want 1", tc.server.addr, n, tc.client)
					}
				})
			}

			t.Run("refused", func(t *testing.T) {
				// The kernel answers a SYN to a closed port with an RST.
				closed := netip.AddrPortFrom(nsTargetV4, 9) // nothing listens on discard
				_, err := st.DialTCP(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("198.18.3.7"), 0), closed)
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("dial %s: %v, want ECONNREFUSED", closed, err)
				}
			})

			t.Run("ipv6 loopback refused", func(t *testing.T) {
				_, err := st.DialTCP(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("2001:2::3:8"), 0), netip.MustParseAddrPort("[::1]:80"))
				if !errors.Is(err, netstack.ErrIPv6Loopback) {
					t.Fatalf("dial ::1: %v, want ErrIPv6Loopback", err)
				}
			})

			stats := st.Stats()
			t.Logf("%s: %+v", kind, stats)
			if stats.AssignedAddresses != 0 {
				t.Errorf("%d addresses still assigned", stats.AssignedAddresses)
			}
			if stats.LinkTxErrors != 0 || stats.TxDroppedNoBufferSpace != 0 {
				t.Errorf("the TUN refused or the link dropped packets: %+v", stats)
			}
		})
	}
}

// GSO through vnet headers: with a 1500-byte MTU, TCP still moves 64 KiB per
// packet in both directions (gVisor's segments and the kernel's coalesced
// ones), and everything arrives intact. Without vnet headers the same MTU
// costs one packet per 1460 bytes.
func TestPrivilegedTUNGSO(t *testing.T) {
	const mtu = 1500
	const size = 8 << 20
	for _, vnet := range []bool{true, false} {
		t.Run(fmt.Sprintf("vnet=%v", vnet), func(t *testing.T) {
			checkGoroutines(t)
			env := newLoopEnvVnet(t, mtu, vnet)
			ep, err := netstack.NewLinkEndpointOpts(netstack.LinkBatch, env.tunFD, mtu, netstack.LinkOptions{VnetHdr: vnet})
			if err != nil {
				t.Fatal(err)
			}
			st, err := netstack.New(ep, netstack.Options{Logf: t.Logf, ConnectTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			v4 := env.startServer(t, netip.AddrPortFrom(nsTargetV4, 0), echo)
			lo := env.startServer(t, netip.MustParseAddrPort("127.0.0.1:0"), echo)
			v6 := env.startServer(t, netip.AddrPortFrom(nsTargetV6, 0), echo)
			msg := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			for _, tc := range []struct {
				client netip.Addr
				server *kernelServer
			}{
				{netip.MustParseAddr("198.18.4.1"), v4},
				{netip.MustParseAddr("198.18.4.2"), lo},
				{netip.MustParseAddr("2001:2::4:3"), v6},
			} {
				before := st.Stats()
				if err := echoOnce(st, netip.AddrPortFrom(tc.client, 0), tc.server.addr, msg); err != nil {
					t.Fatalf("%s -> %s: %v", tc.client, tc.server.addr, err)
				}
				after := st.Stats()
				sent := after.PacketsSent - before.PacketsSent
				rcvd := after.PacketsReceived - before.PacketsReceived
				t.Logf("%s -> %s: %d MiB each way in %d packets out, %d in", tc.client, tc.server.addr, size>>20, sent, rcvd)
				perMSS := uint64(size / (mtu - 60))
				if vnet && (sent > perMSS/4 || rcvd > perMSS/4) {
					t.Errorf("with GSO: %d packets out, %d in for %d bytes each way: segments are not large", sent, rcvd, size)
				}
				if !vnet && sent < perMSS/2 {
					t.Errorf("without GSO: only %d packets out for %d bytes at MTU %d", sent, size, mtu)
				}
			}
			if s := st.Stats(); s.LinkTxErrors != 0 {
				t.Errorf("the TUN refused %d packets", s.LinkTxErrors)
			}
		})
	}
}
