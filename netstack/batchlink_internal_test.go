package netstack

import (
	"encoding/binary"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestEncodeVnetHdr(t *testing.T) {
	// A packet with a 20-byte IPv4 and a 20-byte TCP header and payload
	// bytes of data, carrying gso.
	packet := func(payload int, gso stack.GSO) *stack.PacketBuffer {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: header.IPv4MinimumSize + header.TCPMinimumSize,
			Payload:            buffer.MakeWithData(make([]byte, payload)),
		})
		pkt.TransportHeader().Push(header.TCPMinimumSize)
		pkt.NetworkHeader().Push(header.IPv4MinimumSize)
		pkt.GSOOptions = gso
		return pkt
	}
	tso := stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1460, L3HdrLen: header.IPv4MinimumSize}
	tso6 := tso
	tso6.Type, tso6.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
	for _, tc := range []struct {
		name                            string
		pkt                             *stack.PacketBuffer
		flags, gsoType                  uint8
		hdrLen, gsoSize, start, csumOff uint16
	}{
		{"no gso: all zero", packet(100, stack.GSO{}), 0, 0, 0, 0, 0, 0},
		{"one segment: checksum only", packet(1000, tso), vnetHdrFNeedsCsum, 0, 0, 0, 20, 16},
		{"exactly one mss: checksum only", packet(1460, tso), vnetHdrFNeedsCsum, 0, 0, 0, 20, 16},
		{"tso v4", packet(64000, tso), vnetHdrFNeedsCsum, vnetHdrGSOTCPv4, 40, 1460, 20, 16},
		{"tso v6", packet(3000, tso6), vnetHdrFNeedsCsum, vnetHdrGSOTCPv6, 40, 1460, 40, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.pkt.DecRef()
			var h [vnetHdrSize]byte
			for i := range h {
				h[i] = 0xff // stale contents must be overwritten
			}
			encodeVnetHdr(&h, tc.pkt)
			le := binary.LittleEndian
			got := []uint16{uint16(h[0]), uint16(h[1]), le.Uint16(h[2:]), le.Uint16(h[4:]), le.Uint16(h[6:]), le.Uint16(h[8:])}
			want := []uint16{uint16(tc.flags), uint16(tc.gsoType), tc.hdrLen, tc.gsoSize, tc.start, tc.csumOff}
			for i, name := range []string{"flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"} {
				if got[i] != want[i] {
					t.Errorf("%s = %d, want %d", name, got[i], want[i])
				}
			}
		})
	}
}
