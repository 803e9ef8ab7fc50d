package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

// TCP flags as they appear in byte 13 of the header.
const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// synPacket is an IPv4 or IPv6 packet holding a TCP SYN from src to dst,
// with valid checksums: what the netstack would write into the TUN.
func synPacket(src, dst netip.AddrPort) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], 0x01020304) // ISN
	tcp[12] = 5 << 4
	tcp[13] = tcpSYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	var pseudo uint32
	for _, a := range [][]byte{src.Addr().AsSlice(), dst.Addr().AsSlice()} {
		for i := 0; i < len(a); i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(a[i:]))
		}
	}
	pseudo += 6 + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], checksum(tcp, pseudo))
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(tcp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8] = 64 // TTL
		ip[9] = 6  // TCP
		copy(ip[12:], src.Addr().AsSlice())
		copy(ip[16:], dst.Addr().AsSlice())
		binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
		return append(ip, tcp...)
	}
	ip := make([]byte, 40, 40+len(tcp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
	ip[6] = 6  // TCP
	ip[7] = 64 // hop limit
	copy(ip[8:], src.Addr().AsSlice())
	copy(ip[24:], dst.Addr().AsSlice())
	return append(ip, tcp...)
}

// tcpInfo parses an IP packet's TCP header, if it is one.
func tcpInfo(b []byte) (src, dst netip.AddrPort, flags byte, ok bool) {
	if len(b) < 1 {
		return
	}
	var (
		sa, da netip.Addr
		off    int
	)
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 || b[9] != 6 {
			return
		}
		off = int(b[0]&15) * 4
		sa, _ = netip.AddrFromSlice(b[12:16])
		da, _ = netip.AddrFromSlice(b[16:20])
	case 6:
		if len(b) < 40 || b[6] != 6 {
			return
		}
		off = 40
		sa, _ = netip.AddrFromSlice(b[8:24])
		da, _ = netip.AddrFromSlice(b[24:40])
	default:
		return
	}
	if len(b) < off+20 {
		return
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(b[off:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(b[off+2:]))
	return src, dst, b[off+13], true
}

var errNoReply = errors.New("no reply")

// probe writes a SYN from client to target into the TUN and waits up to
// timeout for the kernel's answer to come back out of it (SYN-ACK from a
// listener, RST from a closed port). It returns the answer's TCP flags, and
// errNoReply when nothing came: the return path is broken.
func probe(f *os.File, client, target netip.AddrPort, timeout time.Duration) (byte, error) {
	return probeHdr(f, 0, client, target, timeout)
}

// probeHdr is probe on a device whose packets carry a hdr-byte prefix (a
// virtio_net_hdr: the SYN goes with an all-zero one, which asks for no
// offload).
func probeHdr(f *os.File, hdr int, client, target netip.AddrPort, timeout time.Duration) (byte, error) {
	if _, err := f.Write(append(make([]byte, hdr), synPacket(client, target)...)); err != nil {
		return 0, fmt.Errorf("write SYN %s -> %s into the tun: %w", client, target, err)
	}
	deadline := time.Now().Add(timeout)
	if err := f.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	defer f.SetReadDeadline(time.Time{})
	buf := make([]byte, 65536)
	for {
		n, err := f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("SYN %s -> %s: %w within %v", client, target, errNoReply, timeout)
		}
		if err != nil {
			return 0, fmt.Errorf("read the tun: %w", err)
		}
		if n < hdr {
			continue
		}
		src, dst, flags, ok := tcpInfo(buf[hdr:n])
		if ok && src == target && dst == client {
			return flags, nil
		}
		// Anything else (an answer to an earlier probe) is not ours.
	}
}
