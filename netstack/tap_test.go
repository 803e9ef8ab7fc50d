package netstack_test

import (
	"bytes"
	"io"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tcopy-tun/tcopy-tun/netstack/nstest"
)

// recordTap keeps a copy of every packet it is shown.
type recordTap struct {
	mu   sync.Mutex
	pkts []tapped
}

type tapped struct {
	out  bool
	data []byte
}

func (r *recordTap) Packet(out bool, parts [][]byte) {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	r.mu.Lock()
	r.pkts = append(r.pkts, tapped{out, b})
	r.mu.Unlock()
}

func (r *recordTap) snapshot() []tapped {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tapped(nil), r.pkts...)
}

// A tapped endpoint shows the tap every packet, both ways, whole and valid,
// and changes nothing of the connection: the echo arrives as without it.
func TestTapEndpointSeesBothDirections(t *testing.T) {
	checkGoroutines(t)
	tap := &recordTap{}
	p := nstest.NewPair(t, nstest.Options{ClientTap: tap})
	l := listen(t, p, targetV4)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	src := netip.AddrPortFrom(clientV4, 40001)
	c := dial(t, p.Client, src, targetV4)
	msg := []byte("hello through the tap")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, %v", got, err)
	}
	c.CloseWrite()
	io.Copy(io.Discard, c)
	c.Close()

	var syn, synAck, reqData, echoData bool
	for i, pk := range tap.snapshot() {
		ip := header.IPv4(pk.data)
		if !ip.IsValid(len(pk.data)) || int(ip.TotalLength()) != len(pk.data) {
			t.Fatalf("packet %d (out %v) is not one whole IPv4 packet: % x", i, pk.out, pk.data)
		}
		tcp := header.TCP(ip.Payload())
		from := netip.AddrPortFrom(netip.AddrFrom4(ip.SourceAddress().As4()), tcp.SourcePort())
		to := netip.AddrPortFrom(netip.AddrFrom4(ip.DestinationAddress().As4()), tcp.DestinationPort())
		if pk.out && (from != src || to != targetV4) || !pk.out && (from != targetV4 || to != src) {
			t.Errorf("packet %d: out %v from %s to %s", i, pk.out, from, to)
		}
		flags := tcp.Flags()
		switch {
		case i == 0 && pk.out && flags == header.TCPFlagSyn:
			syn = true
		case !pk.out && flags == header.TCPFlagSyn|header.TCPFlagAck:
			synAck = true
		}
		if bytes.Equal(tcp.Payload(), msg) {
			if pk.out {
				reqData = true
			} else {
				echoData = true
			}
		}
	}
	if !syn || !synAck || !reqData || !echoData {
		t.Errorf("the tap saw: first packet the SYN %v, a SYN-ACK %v, the request %v, the echo %v; want all", syn, synAck, reqData, echoData)
	}
}
