//go:build linux

package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// ---- options and errors (no privileges) ----

func TestOpenLiveUnknownInterface(t *testing.T) {
	_, err := OpenLive("nosuch0", LiveOptions{})
	if err == nil {
		t.Fatal("OpenLive(nosuch0) succeeded")
	}
	if got, want := err.Error(), `open live "nosuch0": no such network interface`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	var ce *Error
	if !errors.Is(err, ErrNoInterface) || !errors.As(err, &ce) || ce.Name != "nosuch0" {
		t.Errorf("error %v: want an *Error for nosuch0 wrapping ErrNoInterface", err)
	}
}

func TestLiveOptions(t *testing.T) {
	many := make([]uint16, MaxLivePorts+1)
	for i := range many {
		many[i] = uint16(1000 + i)
	}
	for _, tc := range []struct {
		name, iface string
		opts        LiveOptions
		err         string // the whole message
	}{
		{"empty name", "", LiveOptions{}, `open live "": interface name is empty`},
		{"long name", "abcdefghijklmnop", LiveOptions{}, `open live "abcdefghijklmnop": interface name is 16 bytes long, longer than the 15 Linux allows`},
		{"negative snap", "lo", LiveOptions{SnapLen: -1}, `open live "lo": snap length -1 out of range 128..1048576 (0 means 262144)`},
		{"small snap", "lo", LiveOptions{SnapLen: 64}, `open live "lo": snap length 64 out of range 128..1048576 (0 means 262144)`},
		{"huge snap", "lo", LiveOptions{SnapLen: 1<<20 + 1}, `open live "lo": snap length 1048577 out of range 128..1048576 (0 means 262144)`},
		{"negative buffer", "lo", LiveOptions{BufferSize: -5}, `open live "lo": buffer size -5 is negative (0 means 33554432)`},
		{"port 0", "lo", LiveOptions{Ports: []uint16{80, 0}}, `open live "lo": port 0 in the port filter`},
		{"too many ports", "lo", LiveOptions{Ports: many}, `open live "lo": 65 ports in the port filter, at most 64`},
		{"promiscuous any", "any", LiveOptions{Promiscuous: true}, `open live "any": promiscuous mode needs a named interface, not "any"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := OpenLive(tc.iface, tc.opts)
			if err == nil {
				src.Close()
				t.Fatalf("OpenLive(%q, %+v) succeeded", tc.iface, tc.opts)
			}
			if err.Error() != tc.err {
				t.Errorf("error = %q\nwant    %q", err, tc.err)
			}
		})
	}

	// Valid options: defaults filled in, ports sorted and deduplicated,
	// the caller's slice untouched.
	ports := []uint16{443, 80, 443, 8080}
	o, err := LiveOptions{Ports: ports}.normalize("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if o.SnapLen != DefaultSnapLen || o.BufferSize != DefaultLiveBuffer || fmt.Sprint(o.Ports) != "[80 443 8080]" {
		t.Errorf("normalize = %+v, want snap %d, buffer %d, ports [80 443 8080]", o, DefaultSnapLen, DefaultLiveBuffer)
	}
	if fmt.Sprint(ports) != "[443 80 443 8080]" {
		t.Errorf("normalize changed the caller's ports: %v", ports)
	}
}

// ---- the kernel filter, run by a classic BPF interpreter ----

// bpfInput is a packet as a socket filter sees it: the data from the link
// header (or the network header without one) and the ancillary values.
type bpfInput struct {
	data     []byte
	protocol uint16 // skb->protocol, host order
	pkttype  uint32
	ifindex  uint32
}

// runBPF interprets prog the way the kernel does for the opcodes liveFilter
// uses; a load beyond the packet drops it (returns 0), as in the kernel.
func runBPF(t *testing.T, prog []unix.SockFilter, in bpfInput) uint32 {
	t.Helper()
	var a, x uint32
	var mem [16]uint32
	load := func(off uint32, size int) (uint32, bool) {
		if off >= skfAdOff {
			switch off - skfAdOff {
			case skfAdProtocol:
				return uint32(in.protocol), true
			case skfAdPkttype:
				return in.pkttype, true
			case skfAdIfindex:
				return in.ifindex, true
			}
			t.Fatalf("unknown ancillary load %#x", off)
		}
		if uint64(off)+uint64(size) > uint64(len(in.data)) {
			return 0, false
		}
		b := in.data[off:]
		switch size {
		case 1:
			return uint32(b[0]), true
		case 2:
			return uint32(binary.BigEndian.Uint16(b)), true
		}
		return binary.BigEndian.Uint32(b), true
	}
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		var ok bool
		switch ins.Code {
		case bpfLdW:
			a, ok = load(ins.K, 4)
		case bpfLdH:
			a, ok = load(ins.K, 2)
		case bpfLdB:
			a, ok = load(ins.K, 1)
		case bpfLdIndH:
			a, ok = load(x+ins.K, 2)
		case bpfLdIndB:
			a, ok = load(x+ins.K, 1)
		case bpfSt:
			mem[ins.K], ok = a, true
		case bpfLdMem:
			a, ok = mem[ins.K], true
		case bpfLshK:
			a, ok = a<<ins.K, true
		case bpfAddX:
			a, ok = a+x, true
		case bpfLdxMSH:
			var b uint32
			b, ok = load(ins.K, 1)
			x = 4 * (b & 0xf)
		case bpfLdxImm:
			x, ok = ins.K, true
		case bpfAddK:
			a, ok = a+ins.K, true
		case bpfTax:
			x, ok = a, true
		case bpfTxa:
			a, ok = x, true
		case bpfJa:
			pc += int(ins.K)
			ok = true
		case bpfJeq, bpfJset:
			taken := a == ins.K
			if ins.Code == bpfJset {
				taken = a&ins.K != 0
			}
			if taken {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
			ok = true
		case bpfRet:
			return ins.K
		default:
			t.Fatalf("instruction %d: opcode %#x not interpreted", pc, ins.Code)
		}
		if !ok {
			return 0
		}
	}
	t.Fatalf("program ran off its end")
	return 0
}

// Packet builders for the filter and frame tests.

func tcpSeg(sport, dport uint16, payload string) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	b[12] = 5 << 4
	b[13] = 0x18 // PSH ACK
	binary.BigEndian.PutUint16(b[14:], 65535)
	return append(b, payload...)
}

func udpDgram(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], 8)
	return b
}

// ip4 builds an IPv4 header with optLen bytes of options (a multiple of 4)
// and the given fragment field (flags and offset).
func ip4(proto byte, frag uint16, optLen int, payload []byte) []byte {
	hl := 20 + optLen
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = proto
	copy(b[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP options
	}
	return append(b, payload...)
}

func ip6(next byte, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = next
	b[7] = 64
	b[23], b[39] = 1, 2 // ::1 -> ::2 in fd00::/8 would do as well
	return append(b, payload...)
}

// ext6 is an IPv6 extension header (hop-by-hop, routing, destination
// options) of 8*(units+1) bytes followed by payload.
func ext6(next byte, units int, payload []byte) []byte {
	b := make([]byte, 8*(units+1), 8*(units+1)+len(payload))
	b[0], b[1] = next, byte(units)
	b[2] = 1 // PadN
	b[3] = byte(len(b) - 4)
	return append(b, payload...)
}

// frag6 is an IPv6 fragment header followed by payload.
func frag6(next byte, offFlags uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = next
	binary.BigEndian.PutUint16(b[2:], offFlags)
	binary.BigEndian.PutUint32(b[4:], 0x1234)
	return append(b, payload...)
}

// eth builds an Ethernet frame; tags are TPIDs of VLAN tags in front of
// etherType (VLAN ID 7 each).
func eth(etherType uint16, payload []byte, tags ...uint16) []byte {
	b := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}
	for _, tpid := range tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 7)
	}
	b = binary.BigEndian.AppendUint16(b, etherType)
	return append(b, payload...)
}

func TestLiveFilter(t *testing.T) {
	const snap = 5000
	v4 := func(p []byte) []byte { return eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, p)) }
	ports := []uint16{80, 8080}
	for _, tc := range []struct {
		name  string
		spec  filterSpec
		in    bpfInput
		keep  bool
		ports []uint16 // overrides ports; nil: 80 and 8080
	}{
		{name: "ipv4 dst port", in: bpfInput{data: v4(tcpSeg(40000, 80, "x"))}, keep: true},
		{name: "ipv4 src port", in: bpfInput{data: v4(tcpSeg(8080, 40000, "x"))}, keep: true},
		{name: "ipv4 other ports", in: bpfInput{data: v4(tcpSeg(40000, 81, "x"))}},
		{name: "ipv4 other ports, no filter", in: bpfInput{data: v4(tcpSeg(40000, 81, "x"))}, ports: []uint16{}, keep: true},
		{name: "ipv4 options", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 12, tcpSeg(40000, 8080, "")))}, keep: true},
		{name: "ipv4 options, other port", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 12, tcpSeg(40000, 9, "")))}},
		{name: "ipv4 udp on the port", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_UDP, 0, 0, udpDgram(40000, 80)))}},
		{name: "ipv4 udp, no filter", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_UDP, 0, 0, udpDgram(40000, 80)))}, ports: []uint16{}},
		{name: "ipv4 first fragment", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0x2000, 0, tcpSeg(40000, 80, "")))}, keep: true},
		{name: "ipv4 first fragment, other port", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0x2000, 0, tcpSeg(40000, 9, "")))}},
		{name: "ipv4 later fragment", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0x00b9, 0, []byte("middle")))}, keep: true},
		{name: "ipv4 later udp fragment", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_UDP, 0x00b9, 0, []byte("middle")))}},
		{name: "ipv4 cut inside the ports", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 80, "")[:3]))}},
		{name: "ipv6", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_TCP, tcpSeg(40000, 80, "x")))}, keep: true},
		{name: "ipv6 other ports", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_TCP, tcpSeg(40000, 443, "x")))}},
		{name: "ipv6 udp", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_UDP, udpDgram(40000, 80)))}},
		{name: "ipv6 icmp", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_ICMPV6, []byte{135, 0, 0, 0}))}},
		{name: "ipv6 first fragment", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_FRAGMENT, frag6(unix.IPPROTO_TCP, 1, tcpSeg(8080, 40000, ""))))}, keep: true},
		{name: "ipv6 first fragment, other port", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_FRAGMENT, frag6(unix.IPPROTO_TCP, 1, tcpSeg(22, 40000, ""))))}},
		{name: "ipv6 later fragment", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_FRAGMENT, frag6(unix.IPPROTO_TCP, 0x05a8, []byte("rest"))))}, keep: true},
		{name: "ipv6 udp fragment", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_FRAGMENT, frag6(unix.IPPROTO_UDP, 0x05a8, []byte("rest"))))}},
		{name: "ipv6 mld behind hop-by-hop", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_ICMPV6, 0, []byte{143, 0, 0, 0})))}},
		{name: "ipv6 hop-by-hop tcp", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_TCP, 0, tcpSeg(40000, 80, "x"))))}, keep: true},
		{name: "ipv6 hop-by-hop tcp other port", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_TCP, 0, tcpSeg(40000, 81, "x"))))}},
		{name: "ipv6 three extension headers", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_ROUTING, 2, ext6(unix.IPPROTO_DSTOPTS, 1, ext6(unix.IPPROTO_TCP, 0, tcpSeg(8080, 40000, ""))))))}, keep: true},
		{name: "ipv6 three extension headers other port", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_ROUTING, 2, ext6(unix.IPPROTO_DSTOPTS, 1, ext6(unix.IPPROTO_TCP, 0, tcpSeg(8081, 40000, ""))))))}},
		{name: "ipv6 four extension headers kept unexamined", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_DSTOPTS, 0, ext6(unix.IPPROTO_ROUTING, 0, ext6(unix.IPPROTO_DSTOPTS, 0, ext6(unix.IPPROTO_UDP, 0, udpDgram(1, 2)))))))}, keep: true},
		{name: "ipv6 extension header cut short", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_TCP, 3, tcpSeg(40000, 80, ""))[:20]))}},
		{name: "ipv6 hop-by-hop then first fragment", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_FRAGMENT, 0, frag6(unix.IPPROTO_TCP, 1, tcpSeg(40000, 80, "")))))}, keep: true},
		{name: "ipv6 hop-by-hop then first fragment other port", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_HOPOPTS, ext6(unix.IPPROTO_FRAGMENT, 0, frag6(unix.IPPROTO_TCP, 1, tcpSeg(40000, 82, "")))))}},
		{name: "ipv6 ah kept unexamined", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_AH, make([]byte, 24)))}, keep: true},
		{name: "vlan", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 80, "")), 0x8100)}, keep: true},
		{name: "vlan other port", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 81, "")), 0x8100)}},
		{name: "qinq ipv6", in: bpfInput{data: eth(0x86dd, ip6(unix.IPPROTO_TCP, tcpSeg(40000, 8080, "")), 0x88a8, 0x8100)}, keep: true},
		{name: "three tags", in: bpfInput{data: eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 80, "")), 0x88a8, 0x8100, 0x8100)}},
		{name: "arp", in: bpfInput{data: eth(0x0806, make([]byte, 28))}},
		{name: "arp, no filter", in: bpfInput{data: eth(0x0806, make([]byte, 28))}, ports: []uint16{}},
		{name: "loopback sent copy", spec: filterSpec{skipOutgoing: true}, in: bpfInput{data: v4(tcpSeg(40000, 80, "x")), pkttype: unix.PACKET_OUTGOING}},
		{name: "loopback received copy", spec: filterSpec{skipOutgoing: true}, in: bpfInput{data: v4(tcpSeg(40000, 80, "x")), pkttype: unix.PACKET_HOST}, keep: true},
		{name: "ethernet sent", in: bpfInput{data: v4(tcpSeg(40000, 80, "x")), pkttype: unix.PACKET_OUTGOING}, keep: true},
		{name: "raw ipv4", spec: filterSpec{mode: modeRawIP}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 4, tcpSeg(80, 40000, "")), protocol: 0x0800}, keep: true},
		{name: "raw ipv4 other port", spec: filterSpec{mode: modeRawIP}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(79, 40000, "")), protocol: 0x0800}},
		{name: "raw ipv6", spec: filterSpec{mode: modeRawIP}, in: bpfInput{data: ip6(unix.IPPROTO_TCP, tcpSeg(80, 40000, "")), protocol: 0x86dd}, keep: true},
		{name: "raw other protocol", spec: filterSpec{mode: modeRawIP}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(80, 40000, "")), protocol: 0x0806}},
		{name: "cooked", spec: filterSpec{mode: modeCooked, skipOutgoingOn: 1}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(80, 40000, "")), protocol: 0x0800, ifindex: 3}, keep: true},
		{name: "cooked loopback sent copy", spec: filterSpec{mode: modeCooked, skipOutgoingOn: 1}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(80, 40000, "")), protocol: 0x0800, ifindex: 1, pkttype: unix.PACKET_OUTGOING}},
		{name: "cooked loopback received copy", spec: filterSpec{mode: modeCooked, skipOutgoingOn: 1}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(80, 40000, "")), protocol: 0x0800, ifindex: 1, pkttype: unix.PACKET_HOST}, keep: true},
		{name: "cooked other interface sent", spec: filterSpec{mode: modeCooked, skipOutgoingOn: 1}, in: bpfInput{data: ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(80, 40000, "")), protocol: 0x0800, ifindex: 4, pkttype: unix.PACKET_OUTGOING}, keep: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.snap = snap
			spec.ports = ports
			if tc.ports != nil {
				spec.ports = tc.ports
			}
			prog, err := liveFilter(spec)
			if err != nil {
				t.Fatal(err)
			}
			got := runBPF(t, prog, tc.in)
			want := uint32(0)
			if tc.keep {
				want = snap
			}
			if got != want {
				t.Errorf("filter returned %d, want %d (%d instructions)", got, want, len(prog))
			}
		})
	}
}

// TestLiveFilterLimits assembles the largest filters (every mode, the most
// ports) and checks that each port, the first and the last, still matches:
// the jumps stay within classic BPF's reach.
func TestLiveFilterLimits(t *testing.T) {
	ports := make([]uint16, MaxLivePorts)
	for i := range ports {
		ports[i] = uint16(2000 + 3*i)
	}
	for _, spec := range []filterSpec{
		{mode: modeEthernet, skipOutgoing: true},
		{mode: modeRawIP},
		{mode: modeCooked, skipOutgoingOn: 1},
	} {
		spec.ports, spec.snap = ports, 999
		prog, err := liveFilter(spec)
		if err != nil {
			t.Fatalf("mode %d: %v", spec.mode, err)
		}
		frame := func(p []byte) bpfInput {
			if spec.mode == modeEthernet {
				return bpfInput{data: eth(0x86dd, p, 0x8100, 0x8100)}
			}
			return bpfInput{data: p, protocol: 0x86dd}
		}
		for _, p := range []uint16{ports[0], ports[len(ports)-1], ports[len(ports)/2]} {
			if got := runBPF(t, prog, frame(ip6(unix.IPPROTO_TCP, tcpSeg(50000, p, "")))); got != 999 {
				t.Errorf("mode %d, %d instructions: port %d dropped", spec.mode, len(prog), p)
			}
		}
		if got := runBPF(t, prog, frame(ip6(unix.IPPROTO_TCP, tcpSeg(50000, 2001, "")))); got != 0 {
			t.Errorf("mode %d: port 2001 kept", spec.mode)
		}
		t.Logf("mode %d: %d instructions", spec.mode, len(prog))
	}
}

func TestBPFAsmErrors(t *testing.T) {
	var a bpfAsm
	l := a.label()
	a.jump(bpfJeq, 1, l, bpfNext)
	if _, err := a.assemble(); err == nil || !strings.Contains(err.Error(), "unplaced") {
		t.Errorf("jump to an unplaced label: err = %v", err)
	}
	a = bpfAsm{}
	far := a.label()
	a.jump(bpfJeq, 1, far, bpfNext)
	for range 256 {
		a.stmt(bpfTax, 0)
	}
	a.place(far)
	a.stmt(bpfRet, 0)
	if _, err := a.assemble(); err == nil || !strings.Contains(err.Error(), "beyond the 255") {
		t.Errorf("jump of 256: err = %v", err)
	}
}

// ---- frame assembly from recvmsg results (no privileges) ----

// putCmsg appends a control message to b, laid out as the kernel does.
func putCmsg(b []byte, level, typ int32, data []byte) []byte {
	off := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(len(data)))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[off]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[off+unix.CmsgLen(0):], data)
	return b
}

func auxdata(wire uint32, status uint32, tci, tpid uint16) []byte {
	aux := unix.TpacketAuxdata{Status: status, Len: wire, Vlan_tci: tci, Vlan_tpid: tpid}
	return unsafe.Slice((*byte)(unsafe.Pointer(&aux)), unsafe.Sizeof(aux))
}

func timespec(sec, nsec int64) []byte {
	b := binary.NativeEndian.AppendUint64(nil, uint64(sec))
	return binary.NativeEndian.AppendUint64(b, uint64(nsec))
}

// fakeRecv prepares s as if recvmsg had delivered pkt (already cut to the
// snap length, as the filter does) with the control messages in oob.
func fakeRecv(s *liveSource, pkt []byte, oob []byte) {
	if s.buf == nil {
		s.buf = make([]byte, s.head+s.snap)
		s.oob = make([]byte, 128)
	}
	s.n = copy(s.buf[s.head:], pkt)
	copy(s.oob, oob)
	s.msg.SetControllen(len(oob))
	s.frames++
}

func TestLiveFrameAssembly(t *testing.T) {
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	seg := ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 80, "hello"))
	decode := func(t *testing.T, f Frame) *Packet {
		t.Helper()
		var p Packet
		kind, err := NewDecoder().Decode(&f, &p)
		if kind != KindTCP {
			t.Fatalf("decode: kind %v, err %v, frame % x", kind, err, f.Data)
		}
		return &p
	}

	t.Run("ethernet with a stripped vlan tag", func(t *testing.T) {
		s := &liveSource{mode: modeEthernet, lt: linkEthernet, head: vlanHeadroom, snap: 200}
		frame := eth(0x0800, seg)
		var oob []byte
		oob = putCmsg(oob, unix.SOL_PACKET, unix.PACKET_AUXDATA, auxdata(uint32(len(frame)), unix.TP_STATUS_VLAN_VALID|unix.TP_STATUS_VLAN_TPID_VALID, 0x2007, 0x88a8))
		oob = putCmsg(oob, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, timespec(when.Unix(), int64(when.Nanosecond())))
		fakeRecv(s, frame, oob)
		f := s.frame()
		want := eth(0x0800, seg, 0x88a8)
		binary.BigEndian.PutUint16(want[14:], 0x2007)
		if !bytes.Equal(f.Data, want) {
			t.Errorf("data\n% x\nwant\n% x", f.Data, want)
		}
		if f.Len != len(want) || f.N != 1 || f.LinkType != linkEthernet || !f.Time.Equal(when) || f.Time.Location() != time.UTC {
			t.Errorf("frame N %d len %d type %d time %v, want 1, %d, 1, %v UTC", f.N, f.Len, f.LinkType, f.Time, len(want), when)
		}
		if p := decode(t, f); string(p.Payload) != "hello" || p.Dst.Port() != 80 {
			t.Errorf("decoded %+v", p)
		}
	})

	t.Run("ethernet cut by the snap length", func(t *testing.T) {
		s := &liveSource{mode: modeEthernet, lt: linkEthernet, head: vlanHeadroom, snap: 128}
		frame := eth(0x0800, ip4(unix.IPPROTO_TCP, 0, 0, tcpSeg(40000, 80, strings.Repeat("z", 1000))))
		oob := putCmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, auxdata(uint32(len(frame)), 0, 0, 0))
		fakeRecv(s, frame[:128], oob)
		s.n = 128 // the filter trimmed the packet
		f := s.frame()
		if len(f.Data) != 128 || f.Len != len(frame) {
			t.Errorf("caplen %d len %d, want 128 %d", len(f.Data), f.Len, len(frame))
		}
		if p := decode(t, f); p.Missing != 1000-(128-54) {
			t.Errorf("missing %d, want %d", p.Missing, 1000-(128-54))
		}
		// Without auxiliary data the length is what recvmsg reported, and
		// the time is the time of the read.
		before := time.Now()
		fakeRecv(s, frame[:128], nil)
		s.n = 300
		f = s.frame()
		if len(f.Data) != 128 || f.Len != 300 || f.N != 2 || f.Time.Before(before) || time.Since(f.Time) > time.Minute {
			t.Errorf("no aux data: caplen %d len %d N %d time %v", len(f.Data), f.Len, f.N, f.Time)
		}
	})

	t.Run("cooked", func(t *testing.T) {
		s := &liveSource{mode: modeCooked, lt: linkSLL, head: sllHeaderLen, snap: 300}
		s.from = unix.RawSockaddrLinklayer{Protocol: htons(0x0800), Ifindex: 3, Hatype: unix.ARPHRD_ETHER, Pkttype: unix.PACKET_OUTGOING, Halen: 6, Addr: [8]byte{2, 0, 0, 0, 0, 9}}
		oob := putCmsg(nil, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_OLD, timespec(when.Unix(), int64(when.Nanosecond())))
		oob = putCmsg(oob, unix.SOL_PACKET, unix.PACKET_AUXDATA, auxdata(uint32(len(seg)), 0, 0, 0))
		fakeRecv(s, seg, oob)
		f := s.frame()
		wantHdr := []byte{0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0, 0x08, 0x00}
		if !bytes.Equal(f.Data[:16], wantHdr) || !bytes.Equal(f.Data[16:], seg) {
			t.Errorf("data % x, want header % x and the segment", f.Data, wantHdr)
		}
		if f.Len != 16+len(seg) || f.LinkType != linkSLL || !f.Time.Equal(when) {
			t.Errorf("len %d type %d time %v", f.Len, f.LinkType, f.Time)
		}
		if p := decode(t, f); string(p.Payload) != "hello" {
			t.Errorf("decoded %+v", p)
		}
	})

	t.Run("raw", func(t *testing.T) {
		s := &liveSource{mode: modeRawIP, lt: linkRaw, snap: 300}
		fakeRecv(s, seg, putCmsg(nil, unix.SOL_PACKET, unix.PACKET_AUXDATA, auxdata(uint32(len(seg)), 0, 0, 0)))
		f := s.frame()
		if !bytes.Equal(f.Data, seg) || f.Len != len(seg) || f.LinkType != linkRaw {
			t.Errorf("frame %+v", f)
		}
		decode(t, f)
	})
}

// ---- privileged: real packet sockets in a fresh network namespace ----

// replyServer accepts connections on ln; for each it reads the request up
// to the client's FIN, answers "reply:" + request and closes.
func replyServer(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := io.ReadAll(c)
				if err == nil {
					c.Write(append([]byte("reply:"), req...))
				}
			}()
		}
	}()
}

func listen(t *testing.T, network, addr string) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	replyServer(t, ln)
	return ln, netip.MustParseAddrPort(ln.Addr().String())
}

// flow is one TCP connection as the capture should show it.
type flow struct {
	client, server netip.AddrPort
	req            []byte
	up, down       []byte // payload seen client→server and server→client
	syn, synAck    int
	finUp, finDown int
}

func (f *flow) complete() bool {
	return f.finUp > 0 && f.finDown > 0 && len(f.up) >= len(f.req) && len(f.down) >= len(f.req)+len("reply:")
}

func (f *flow) check(t *testing.T) {
	t.Helper()
	switch {
	case !f.complete():
		t.Errorf("%v→%v: incomplete: %d/%d bytes up, %d/%d down, FIN up %d down %d",
			f.client, f.server, len(f.up), len(f.req), len(f.down), len(f.req)+6, f.finUp, f.finDown)
	case !bytes.Equal(f.up, f.req):
		t.Errorf("%v→%v: client bytes differ (duplicated or damaged): %d bytes, want %d", f.client, f.server, len(f.up), len(f.req))
	case string(f.down) != "reply:"+string(f.req):
		t.Errorf("%v→%v: server bytes differ (duplicated or damaged): %d bytes, want %d", f.client, f.server, len(f.down), len(f.req)+6)
	case f.syn != 1 || f.synAck != 1:
		t.Errorf("%v→%v: %d SYN and %d SYN-ACK, want one each (a packet seen twice?)", f.client, f.server, f.syn, f.synAck)
	}
}

// exchange runs one request/reply on a new connection and returns its flow.
func exchange(t *testing.T, network string, server netip.AddrPort, req []byte) *flow {
	t.Helper()
	c, err := net.DialTimeout(network, server.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "reply:"+string(req) {
		t.Fatalf("exchange with %v: %d bytes, %v", server, len(got), err)
	}
	return &flow{client: netip.MustParseAddrPort(c.LocalAddr().String()), server: server, req: req}
}

// checkedSource checks every frame a live source delivers.
type checkedSource struct {
	Source
	t        *testing.T
	lt       layers.LinkType
	snap     int
	from     time.Time
	frames   int
	maxData  int
	prevTime time.Time
	distinct bool // two frames had different times
}

func (c *checkedSource) ReadFrame() (Frame, error) {
	f, err := c.Source.ReadFrame()
	if err != nil {
		return f, err
	}
	c.frames++
	switch {
	case f.N != c.frames:
		c.t.Errorf("frame %d numbered %d", c.frames, f.N)
	case f.LinkType != c.lt:
		c.t.Errorf("frame %d: link type %d, want %d", f.N, f.LinkType, c.lt)
	case len(f.Data) > c.snap || f.Len < len(f.Data):
		c.t.Errorf("frame %d: %d bytes captured of %d, snap length %d", f.N, len(f.Data), f.Len, c.snap)
	case f.Time.Before(c.from.Add(-time.Second)) || f.Time.After(time.Now().Add(time.Second)):
		c.t.Errorf("frame %d: time %v outside the test's run (from %v)", f.N, f.Time, c.from)
	}
	if c.frames > 1 && !f.Time.Equal(c.prevTime) {
		c.distinct = true
	}
	c.prevTime = f.Time
	c.maxData = max(c.maxData, len(f.Data))
	return f, nil
}

// capture opens a live source on iface and returns it wrapped for checks.
func openChecked(t *testing.T, iface string, opts LiveOptions, lt layers.LinkType) *checkedSource {
	t.Helper()
	src, err := OpenLive(iface, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	snap := opts.SnapLen
	if snap == 0 {
		snap = DefaultSnapLen
	}
	return &checkedSource{Source: src, t: t, lt: lt, snap: snap, from: time.Now()}
}

// collect reads segments until every flow is complete, or 10 s have passed
// (then the source is closed, which ends Next with io.EOF). Segments of
// other connections are returned as text.
func collect(t *testing.T, src Source, name string, flows []*flow) (stray []string, stats Stats) {
	t.Helper()
	byKey := map[[2]netip.AddrPort]*flow{}
	for _, f := range flows {
		byKey[[2]netip.AddrPort{f.client, f.server}] = f
	}
	done := func() bool {
		for _, f := range flows {
			if !f.complete() {
				return false
			}
		}
		return true
	}
	watchdog := time.AfterFunc(10*time.Second, func() { src.Close() })
	defer watchdog.Stop()
	r := NewReader(src, name)
	for !done() {
		p, err := r.Next()
		if err == io.EOF {
			t.Errorf("capture ended (watchdog) before every connection was complete")
			break
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if f := byKey[[2]netip.AddrPort{p.Src, p.Dst}]; f != nil {
			f.up = append(f.up, p.Payload...)
			if p.Flags&SYN != 0 {
				f.syn++
			}
			if p.Flags&FIN != 0 {
				f.finUp++
			}
		} else if f := byKey[[2]netip.AddrPort{p.Dst, p.Src}]; f != nil {
			f.down = append(f.down, p.Payload...)
			if p.Flags&(SYN|ACK) == SYN|ACK {
				f.synAck++
			}
			if p.Flags&FIN != 0 {
				f.finDown++
			}
		} else {
			stray = append(stray, fmt.Sprintf("%v→%v flags %#x %d bytes", p.Src, p.Dst, p.Flags, len(p.Payload)))
		}
	}
	return stray, r.Stats()
}

func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// TestPrivilegedLiveLoopback captures lo in a fresh namespace: TCP
// connections to the filtered ports come out whole, both directions, each
// packet once (lo shows every packet as sent and as received); other ports
// and UDP on the same port never reach the process; the snap length cuts
// frames; Close ends a blocked read; the read path does not allocate; the
// kernel's drop counter is reported.
func TestPrivilegedLiveLoopback(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	_, srvA := listen(t, "tcp4", "127.0.0.1:0")
	_, srvB := listen(t, "tcp4", "127.0.0.1:0")

	t.Run("filtered connections", func(t *testing.T) {
		ports := []uint16{srvA.Port()}
		var srv6 netip.AddrPort
		v6 := hasIPv6Loopback()
		if v6 {
			_, srv6 = listen(t, "tcp6", "[::1]:0")
			ports = append(ports, srv6.Port())
		} else {
			t.Log("no ::1 in this namespace: IPv6 not tested")
		}
		src := openChecked(t, "lo", LiveOptions{Ports: ports}, linkEthernet)

		var flows []*flow
		for i, size := range []int{1, 1500, 70000} {
			req := bytes.Repeat([]byte{byte('a' + i)}, size)
			copy(req, "req"+strconv.Itoa(i))
			flows = append(flows, exchange(t, "tcp4", srvA, req))
		}
		if v6 {
			flows = append(flows, exchange(t, "tcp6", srv6, []byte("over ipv6")))
		}
		// Traffic the filter must drop: TCP to another port, UDP to the
		// captured port number.
		exchange(t, "tcp4", srvB, []byte("not captured"))
		if u, err := net.Dial("udp4", srvA.String()); err == nil {
			u.Write([]byte("udp on the captured port"))
			u.Close()
		}

		stray, stats := collect(t, src, "lo", flows)
		for _, f := range flows {
			f.check(t)
		}
		if len(stray) > 0 {
			t.Errorf("segments the filter should have dropped:\n%s", strings.Join(stray, "\n"))
		}
		if stats.NonTCP != 0 || stats.Malformed != 0 {
			t.Errorf("stats: %d non-TCP, %d malformed frames reached the process", stats.NonTCP, stats.Malformed)
		}
		if !src.distinct {
			t.Errorf("every frame has the same time %v: no kernel timestamps?", src.prevTime)
		}
		if src.maxData <= 16384 {
			t.Errorf("largest frame %d bytes: the 70000-byte request should arrive in large frames (lo's MTU is 64 KiB)", src.maxData)
		}
		if d, err := src.Source.(DropCounter).Drops(); err != nil || d != 0 {
			t.Errorf("drops = %d, %v; want 0", d, err)
		}
		t.Logf("%d frames, %d segments; %v", src.frames, stats.TCP, stats.LinkTypes)
	})

	t.Run("snap length", func(t *testing.T) {
		src := openChecked(t, "lo", LiveOptions{Ports: []uint16{srvA.Port()}, SnapLen: MinSnapLen}, linkEthernet)
		f := exchange(t, "tcp4", srvA, bytes.Repeat([]byte("s"), 1000))
		watchdog := time.AfterFunc(10*time.Second, func() { src.Close() })
		defer watchdog.Stop()
		r := NewReader(src, "lo")
		for {
			p, err := r.Next()
			if err != nil {
				t.Fatalf("no cut segment of 1000 bytes seen: %v", err)
			}
			if p.Src == f.client && p.Missing > 0 {
				if len(p.Payload)+p.Missing != 1000 || src.maxData > MinSnapLen {
					t.Errorf("cut segment: %d bytes + %d missing, largest frame %d", len(p.Payload), p.Missing, src.maxData)
				}
				break
			}
		}
		if st := r.Stats(); st.Truncated == 0 {
			t.Errorf("Stats.Truncated = 0 after a cut segment")
		}
	})

	t.Run("close unblocks a read", func(t *testing.T) {
		src, err := OpenLive("lo", LiveOptions{Ports: []uint16{srvB.Port()}})
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan error, 1)
		go func() {
			_, err := src.ReadFrame()
			res <- err
		}()
		time.Sleep(50 * time.Millisecond) // let the read park
		start := time.Now()
		if err := src.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		select {
		case err := <-res:
			if err != io.EOF {
				t.Errorf("blocked ReadFrame returned %v after Close, want io.EOF", err)
			}
			t.Logf("ReadFrame returned %v after Close", time.Since(start))
		case <-time.After(2 * time.Second):
			t.Fatal("ReadFrame still blocked 2 s after Close")
		}
		if _, err := src.ReadFrame(); err != io.EOF {
			t.Errorf("ReadFrame after Close = %v, want io.EOF", err)
		}
		if err := src.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if d, err := src.(DropCounter).Drops(); err != nil || d != 0 {
			t.Errorf("Drops after Close = %d, %v", d, err)
		}
	})

	t.Run("no descriptor leaks", func(t *testing.T) {
		// A device that exists but is down (ifb devices start down).
		tuntest.Current(t).Run(t, "ip", "link", "add", "tcopydown0", "type", "ifb")
		before := openFDs(t)
		for _, iface := range []string{"lo", "any", "nosuch0", "tcopydown0"} {
			src, err := OpenLive(iface, LiveOptions{Ports: []uint16{srvB.Port()}, Promiscuous: iface == "lo"})
			switch {
			case iface == "tcopydown0":
				if want := `open live "tcopydown0": interface is down (ip link set tcopydown0 up)`; err == nil || err.Error() != want {
					t.Errorf("down interface: err = %v, want %s", err, want)
				}
			case iface == "nosuch0":
				if !errors.Is(err, ErrNoInterface) {
					t.Errorf("nosuch0: err = %v", err)
				}
			case err != nil:
				t.Fatal(err)
			}
			if err == nil {
				if err := src.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if after := openFDs(t); after != before {
			t.Errorf("%d open descriptors before, %d after opening and closing sources", before, after)
		}
	})

	t.Run("no allocations per frame", func(t *testing.T) {
		src, err := OpenLive("lo", LiveOptions{Ports: []uint16{srvA.Port()}})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		watchdog := time.AfterFunc(10*time.Second, func() { src.Close() })
		defer watchdog.Stop()
		// Each connection is at least 7 frames (handshake, request,
		// reply, FINs), all queued in the socket by the time it ends.
		for i := range 12 {
			exchange(t, "tcp4", srvA, []byte("alloc "+strconv.Itoa(i)))
		}
		allocs := testing.AllocsPerRun(60, func() {
			if _, err := src.ReadFrame(); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("ReadFrame allocates %.1f times per frame, want 0", allocs)
		}
	})

	t.Run("drops", func(t *testing.T) {
		// The smallest receive buffer holds a frame or two: a burst that
		// nobody reads must be counted as dropped.
		src, err := OpenLive("lo", LiveOptions{Ports: []uint16{srvA.Port()}, BufferSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		exchange(t, "tcp4", srvA, bytes.Repeat([]byte("d"), 1<<20))
		for i := range 20 {
			exchange(t, "tcp4", srvA, []byte("burst "+strconv.Itoa(i)))
		}
		d, err := src.(DropCounter).Drops()
		if err != nil || d == 0 {
			t.Fatalf("Drops = %d, %v after an unread burst, want > 0", d, err)
		}
		if _, err := src.ReadFrame(); err != nil {
			t.Errorf("ReadFrame after drops: %v", err)
		}
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
		if d2, err := src.(DropCounter).Drops(); err != nil || d2 < d {
			t.Errorf("Drops after Close = %d, %v; want at least %d", d2, err, d)
		}
		t.Logf("%d frames dropped", d)
	})
}

// TestPrivilegedLiveDevices captures on the other kinds of devices: "any"
// (cooked LINUX_SLL frames), a veth whose peer is in another namespace
// (real Ethernet, ARP filtered, promiscuous mode undone at Close) and a TUN
// device (raw IP).
func TestPrivilegedLiveDevices(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	cur := tuntest.Current(t)

	t.Run("any", func(t *testing.T) {
		_, srv := listen(t, "tcp4", "127.0.0.1:0")
		// No port filter: the kernel program without the ports block;
		// nothing else runs in this namespace.
		src := openChecked(t, "any", LiveOptions{}, linkSLL)
		flows := []*flow{exchange(t, "tcp4", srv, []byte("cooked")), exchange(t, "tcp4", srv, bytes.Repeat([]byte("k"), 9000))}
		stray, stats := collect(t, src, "any", flows)
		for _, f := range flows {
			f.check(t)
		}
		if len(stray) > 0 || stats.NonTCP > 0 {
			t.Errorf("stray segments %v, %d non-TCP frames", stray, stats.NonTCP)
		}
	})

	t.Run("veth", func(t *testing.T) {
		peer := tuntest.NewNetns(t)
		pair := tuntest.Veth(t, cur, peer, "10.77.1.1/24", "10.77.1.2/24")
		var ln net.Listener
		if err := peer.Do(func() (err error) {
			ln, err = net.Listen("tcp4", "10.77.1.2:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		replyServer(t, ln)
		srv := netip.MustParseAddrPort(ln.Addr().String())

		src := openChecked(t, pair.A, LiveOptions{Ports: []uint16{srv.Port()}, Promiscuous: true}, linkEthernet)
		if !promiscuous(t, pair.A) {
			t.Errorf("%s not promiscuous during a promiscuous capture", pair.A)
		}
		// 20000 bytes cross the 1500-byte MTU in many frames each way.
		flows := []*flow{exchange(t, "tcp4", srv, []byte("over veth")), exchange(t, "tcp4", srv, bytes.Repeat([]byte("v"), 20000))}
		stray, stats := collect(t, src, pair.A, flows)
		for _, f := range flows {
			f.check(t)
		}
		if len(stray) > 0 || stats.NonTCP > 0 {
			t.Errorf("stray segments %v, %d non-TCP frames (ARP?)", stray, stats.NonTCP)
		}
		src.Close()
		if promiscuous(t, pair.A) {
			t.Errorf("%s still promiscuous after Close", pair.A)
		}
	})

	t.Run("tun", func(t *testing.T) {
		const name = "tcopylive0"
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		ifr, _ := unix.NewIfreq(name)
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		tun := os.NewFile(uintptr(fd), name) // closing it removes the device
		defer tun.Close()
		cur.AddAddr(t, name, "10.99.0.1/24")

		src := openChecked(t, name, LiveOptions{Ports: []uint16{80}}, linkRaw)
		// The kernel's SYN to 10.99.0.2:80 leaves through the TUN; sent
		// back mirrored (addresses and ports swapped, so the checksums
		// still hold) it arrives as a SYN from 10.99.0.2:80.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dialDone := make(chan struct{})
		go func() {
			defer close(dialDone)
			var d net.Dialer
			if c, err := d.DialContext(ctx, "tcp4", "10.99.0.2:80"); err == nil {
				c.Close()
			}
		}()
		defer func() { cancel(); <-dialDone }()
		syn := readTunSYN(t, tun)
		hl := int(syn[0]&0xf) * 4
		m := bytes.Clone(syn)
		copy(m[12:16], syn[16:20])
		copy(m[16:20], syn[12:16])
		copy(m[hl:hl+2], syn[hl+2:hl+4])
		copy(m[hl+2:hl+4], syn[hl:hl+2])
		if _, err := tun.Write(m); err != nil {
			t.Fatal(err)
		}
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte(syn[12:16])), binary.BigEndian.Uint16(syn[hl:]))
		server := netip.MustParseAddrPort("10.99.0.2:80")
		watchdog := time.AfterFunc(5*time.Second, func() { src.Close() })
		defer watchdog.Stop()
		r := NewReader(src, name)
		var out, in bool
		for !out || !in {
			p, err := r.Next()
			if err != nil {
				t.Fatalf("SYN sent %v, mirrored SYN received %v; then %v", out, in, err)
			}
			out = out || p.Src == client && p.Dst == server && p.Flags&SYN != 0
			in = in || p.Src == server && p.Dst == client && p.Flags == SYN
		}
	})
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// promiscuous reports whether iface has IFF_PROMISC set.
func promiscuous(t *testing.T, iface string) bool {
	t.Helper()
	// The device's promiscuity count from netlink (IFLA_PROMISCUITY, which
	// counts packet sockets' PACKET_MR_PROMISC; SIOCGIFFLAGS shows only
	// what SIOCSIFFLAGS set), asked in this namespace: not
	// /sys/class/net, which shows the namespace that mounted /sys.
	out, err := exec.Command("ip", "-d", "-j", "link", "show", "dev", iface).Output()
	if err != nil {
		t.Fatalf("ip -d -j link show dev %s: %v", iface, err)
	}
	var links []struct {
		Promiscuity *int `json:"promiscuity"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 || links[0].Promiscuity == nil {
		t.Fatalf("ip -d -j link show dev %s: %v: %s", iface, err, out)
	}
	return *links[0].Promiscuity > 0
}

// readTunSYN reads packets from the TUN until an IPv4 TCP SYN to port 80.
func readTunSYN(t *testing.T, tun *os.File) []byte {
	t.Helper()
	tun.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for range 50 {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("read TUN: %v", err)
		}
		p := buf[:n]
		if n < 40 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
			continue
		}
		hl := int(p[0]&0xf) * 4
		if n >= hl+20 && binary.BigEndian.Uint16(p[hl+2:]) == 80 && p[hl+13]&0x02 != 0 {
			return bytes.Clone(p)
		}
	}
	t.Fatal("no SYN to port 80 among 50 packets from the TUN")
	return nil
}

// BenchmarkPrivilegedLiveLoopback reads TCP segments through a live
// capture of lo (in a fresh namespace) while a connection streams small
// writes as fast as the kernel takes them. The generator shares the two
// cores with the reader, so frames/s is the rate the whole loop sustains;
// drops/frame says whether the capture kept up with it.
func BenchmarkPrivilegedLiveLoopback(b *testing.B) {
	for _, size := range []int{100, 16384} {
		b.Run("write="+strconv.Itoa(size), func(b *testing.B) { benchLive(b, size) })
	}
}

func benchLive(b *testing.B, size int) {
	ns := tuntest.NewNetns(b)
	var (
		src  Source
		ln   net.Listener
		conn net.Conn
	)
	if err := ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		if src, err = OpenLive("lo", LiveOptions{Ports: []uint16{port}}); err != nil {
			return err
		}
		conn, err = net.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	stop := make(chan struct{})
	genDone := make(chan struct{})
	go func() {
		defer close(genDone)
		defer conn.Close()
		conn.(*net.TCPConn).SetNoDelay(true)
		msg := bytes.Repeat([]byte("m"), size)
		for {
			select {
			case <-stop:
				return
			default:
			}
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(msg); err != nil {
				return
			}
		}
	}()
	r := NewReader(src, "lo")
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-genDone
	drops, _ := src.(DropCounter).Drops()
	st := r.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(st.Bytes)/1e6/elapsed.Seconds(), "MB/s")
	b.ReportMetric(float64(drops)/float64(b.N), "drops/frame")
}
