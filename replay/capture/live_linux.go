//go:build linux

package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// The live source is an AF_PACKET socket read with recvmsg, one frame per
// call, parked in Go's netpoller while the socket is empty (the descriptor
// is non-blocking and wrapped in an *os.File), without allocating. A
// memory-mapped TPACKET_V3 ring would save the system call per frame; this
// path already reads about 330 k frames/s (2.6 GB/s of large frames) on lo
// with the traffic generator on the same two cores, without drops, which
// is above what the replay sustains per segment.
//
// Filtering is a classic BPF program attached to the socket, assembled
// here (golang.org/x/net/bpf is not a dependency): the kernel drops what
// the replay cannot use before it is copied or queued, which matters on a
// busy interface where the replayed ports are a small share of the traffic.

// liveMode is how the socket sees frames.
type liveMode uint8

const (
	// modeEthernet: SOCK_RAW on a device with an Ethernet header
	// (ARPHRD_ETHER, ARPHRD_LOOPBACK).
	modeEthernet liveMode = iota
	// modeRawIP: SOCK_RAW on a device without a link header (ARPHRD_NONE:
	// TUN, WireGuard; ARPHRD_RAWIP): frames start with the IP header.
	modeRawIP
	// modeCooked: SOCK_DGRAM ("any", every other device type): the kernel
	// strips the link header and describes it in the socket address, from
	// which a LINUX_SLL header is built.
	modeCooked
)

// sllHeaderLen is the size of the LINUX_SLL header of cooked frames.
const sllHeaderLen = 16

// vlanHeadroom is the room kept in front of Ethernet frames to put back a
// VLAN tag that the NIC stripped.
const vlanHeadroom = 4

// Ancillary loads of Linux classic BPF (linux/filter.h); x/sys/unix does
// not define them. SKF_AD_OFF is -0x1000, which a load's k holds as uint32.
const (
	skfAdOff      = 0xfffff000
	skfAdProtocol = 0 // skb->protocol, the EtherType, in host order
	skfAdPkttype  = 4 // PACKET_HOST, PACKET_OUTGOING, ...
	skfAdIfindex  = 8 // skb->dev->ifindex
)

// htons returns v in network byte order, as sockaddr_ll holds its
// protocol (x/sys/unix passes the field through unchanged).
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// liveSource is the Source returned by OpenLive.
type liveSource struct {
	name string
	mode liveMode
	lt   layers.LinkType
	snap int

	f  *os.File
	rc syscall.RawConn

	// Read state, used only by the goroutine in ReadFrame. msg points at
	// iov, from, oob and buf, so nothing is allocated per frame.
	buf    []byte // headroom + snap length
	head   int    // where recvmsg writes in buf
	oob    []byte
	from   unix.RawSockaddrLinklayer
	iov    unix.Iovec
	msg    unix.Msghdr
	recvFn func(fd uintptr) bool // s.recv, bound once
	n      int                   // recvmsg's result
	errno  syscall.Errno         // recvmsg's error
	frames int                   // frames returned so far
	err    error                 // sticky error

	// closed makes ReadFrame return io.EOF once Close has started; mu
	// orders Close with Drops, which both touch the descriptor and the
	// counters.
	closed atomic.Bool
	mu     sync.Mutex
	drops  uint64
}

var (
	_ Source      = (*liveSource)(nil)
	_ DropCounter = (*liveSource)(nil)
)

type ifaceInfo struct {
	index  int
	hatype uint16
	up     bool
}

// lookupInterface asks the kernel about iface through an AF_UNIX socket,
// which needs no privilege: an unknown name is reported as such even to a
// user who could not capture anyway.
func lookupInterface(iface string) (ifaceInfo, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ifaceInfo{}, fmt.Errorf("interface lookup: socket: %w", err)
	}
	defer unix.Close(fd)
	ioctl := func(req uint, what string) (*unix.Ifreq, error) {
		ifr, err := unix.NewIfreq(iface)
		if err != nil {
			return nil, err
		}
		if err := unix.IoctlIfreq(fd, req, ifr); err != nil {
			if errors.Is(err, unix.ENODEV) {
				return nil, ErrNoInterface
			}
			return nil, fmt.Errorf("interface %s: %w", what, err)
		}
		return ifr, nil
	}
	var info ifaceInfo
	ifr, err := ioctl(unix.SIOCGIFINDEX, "index")
	if err != nil {
		return info, err
	}
	info.index = int(ifr.Uint32())
	// The hardware address's sa_family is the device type (ARPHRD_*).
	if ifr, err = ioctl(unix.SIOCGIFHWADDR, "type"); err != nil {
		return info, err
	}
	info.hatype = ifr.Uint16()
	if ifr, err = ioctl(unix.SIOCGIFFLAGS, "flags"); err != nil {
		return info, err
	}
	info.up = ifr.Uint16()&unix.IFF_UP != 0
	return info, nil
}

func openLive(iface string, o LiveOptions) (Source, error) {
	fail := func(err error) (Source, error) {
		return nil, &Error{Op: "open live", Name: iface, Err: err}
	}
	s := &liveSource{name: iface, mode: modeCooked, lt: linkSLL, snap: o.SnapLen}
	spec := filterSpec{ports: o.Ports}
	var ifindex int
	if iface == "any" {
		// Each packet that crosses the loopback device is seen as sent
		// and again as received; keep the received copy, as libpcap does.
		if lo, err := lookupInterface("lo"); err == nil {
			spec.skipOutgoingOn = lo.index
		}
	} else {
		info, err := lookupInterface(iface)
		if err != nil {
			return fail(err)
		}
		if !info.up {
			return fail(fmt.Errorf("interface is down (ip link set %s up)", iface))
		}
		ifindex = info.index
		switch info.hatype {
		case unix.ARPHRD_ETHER:
			s.mode, s.lt = modeEthernet, linkEthernet
		case unix.ARPHRD_LOOPBACK:
			s.mode, s.lt = modeEthernet, linkEthernet
			spec.skipOutgoing = true
		case unix.ARPHRD_NONE, unix.ARPHRD_RAWIP:
			s.mode, s.lt = modeRawIP, linkRaw
		}
		// Any other device type (PPP, IP tunnels, InfiniBand, ...) is
		// read in cooked mode, which works whatever the link header.
	}
	spec.mode = s.mode
	spec.snap = uint32(o.SnapLen)
	if s.mode == modeCooked {
		spec.snap -= sllHeaderLen // so that header + data fit the snap length
	}
	prog, err := liveFilter(spec)
	if err != nil {
		return fail(err)
	}

	sockType := unix.SOCK_RAW
	if s.mode == modeCooked {
		sockType = unix.SOCK_DGRAM
	}
	// Protocol 0: the socket receives nothing until bind names ETH_P_ALL
	// below, so no frame slips in before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, sockType|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fail(fmt.Errorf("packet socket: %w (live capture needs CAP_NET_RAW)", err))
		}
		return fail(fmt.Errorf("packet socket: %w", err))
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail(fmt.Errorf("attach filter: %w", err))
	}
	// Auxiliary data carries the length on the wire (the filter trims the
	// packet to the snap length, and recvmsg then reports only what is
	// left) and the VLAN tag a NIC stripped.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail(fmt.Errorf("enable PACKET_AUXDATA: %w", err))
	}
	// Kernel timestamps; the _NEW option has 64-bit seconds everywhere
	// (Linux 5.1); older kernels have only the native layout.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_NEW, 1); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS_OLD, 1); err != nil {
			return fail(fmt.Errorf("enable SO_TIMESTAMPNS: %w", err))
		}
	}
	// SO_RCVBUFFORCE may exceed net.core.rmem_max but needs CAP_NET_ADMIN;
	// without it SO_RCVBUF gives what the sysctl allows.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.BufferSize); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.BufferSize); err != nil {
			return fail(fmt.Errorf("set receive buffer to %d bytes: %w", o.BufferSize, err))
		}
	}
	if o.Promiscuous {
		// A packet-socket membership rather than IFF_PROMISC set by
		// ioctl: the kernel counts it per socket and undoes it when the
		// socket closes, even if the process dies, so nothing is left.
		mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fail(fmt.Errorf("promiscuous mode: %w", err))
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail(fmt.Errorf("bind packet socket: %w", err))
	}

	// A non-blocking descriptor makes the *os.File pollable: ReadFrame
	// parks in the netpoller, and Close from another goroutine wakes it.
	f := os.NewFile(uintptr(fd), "packet socket "+iface)
	ok = true // f owns fd now
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fail(fmt.Errorf("packet socket: %w", err))
	}
	s.f, s.rc = f, rc
	switch s.mode {
	case modeEthernet:
		s.head = vlanHeadroom
	case modeCooked:
		s.head = sllHeaderLen
	}
	s.buf = make([]byte, s.head+o.SnapLen)
	// Room for PACKET_AUXDATA (20 bytes) and a timestamp (16 bytes), each
	// behind a 16-byte header, with slack for the kernel's alignment.
	s.oob = make([]byte, 128)
	s.iov.Base = &s.buf[s.head]
	s.iov.SetLen(len(s.buf) - s.head)
	s.msg.Name = (*byte)(unsafe.Pointer(&s.from))
	s.msg.Iov = &s.iov
	s.msg.SetIovlen(1)
	s.msg.Control = &s.oob[0]
	s.recvFn = s.recv
	return s, nil
}

// recv is the netpoller callback: one non-blocking recvmsg. It returns
// false only when the socket is empty, so that Read waits for the next
// edge; everything else ends the wait.
func (s *liveSource) recv(fd uintptr) bool {
	for {
		s.msg.Namelen = unix.SizeofSockaddrLinklayer
		s.msg.SetControllen(len(s.oob))
		s.msg.Flags = 0
		// MSG_TRUNC makes the result the packet's length after the
		// filter's trim rather than what fit in the buffer.
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&s.msg)), unix.MSG_TRUNC)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		s.n, s.errno = int(n), errno
		return true
	}
}

// ReadFrame waits for the next frame. It returns io.EOF once Close has been
// called, also when Close ends a wait from another goroutine.
func (s *liveSource) ReadFrame() (Frame, error) {
	if s.err != nil {
		return Frame{}, s.err
	}
	if s.closed.Load() {
		s.err = io.EOF
		return Frame{}, s.err
	}
	err := s.rc.Read(s.recvFn)
	if err == nil && s.errno != 0 {
		err = s.errno
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && !s.closed.Load() {
			return Frame{}, err // SetReadDeadline passed: not an end
		}
		if s.closed.Load() {
			s.err = io.EOF
			return Frame{}, s.err
		}
		if errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			err = fmt.Errorf("interface went down or away: %w", err)
		} else {
			err = fmt.Errorf("recvmsg: %w", err)
		}
		s.err = &Error{Op: "read live", Name: s.name, Frame: s.frames + 1, Err: err}
		return Frame{}, s.err
	}
	s.frames++
	return s.frame(), nil
}

// SetReadDeadline makes a ReadFrame waiting at t return an error wrapping
// os.ErrDeadlineExceeded; the capture goes on (the zero time: no deadline).
// It lets the reading goroutine move capture time on while the wire is
// quiet without a second goroutine (and its hand-off) per frame.
func (s *liveSource) SetReadDeadline(t time.Time) error { return s.f.SetReadDeadline(t) }

// frame turns the last recvmsg's result into a Frame: it applies the
// auxiliary data and timestamp and builds the link header where needed.
func (s *liveSource) frame() Frame {
	caplen := min(s.n, len(s.buf)-s.head)
	wire := s.n // the length on the wire, if the kernel sent no aux data
	var (
		ts         time.Time
		vlan       bool
		tci, tpid  uint16
		controlLen = int(s.msg.Controllen)
	)
	oob := s.oob[:min(controlLen, len(s.oob))]
	hdrLen := unix.CmsgLen(0)
	for len(oob) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(oob) {
			break
		}
		data := oob[hdrLen:l]
		switch {
		case h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && len(data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})):
			aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&data[0]))
			wire = int(aux.Len)
			if aux.Vlan_tci != 0 || aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
				vlan, tci, tpid = true, aux.Vlan_tci, 0x8100
				if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
					tpid = aux.Vlan_tpid
				}
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS_NEW && len(data) >= 16:
			ts = time.Unix(int64(binary.NativeEndian.Uint64(data)), int64(binary.NativeEndian.Uint64(data[8:])))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPNS_OLD:
			// struct timespec of the native word size.
			if len(data) >= 16 {
				ts = time.Unix(int64(binary.NativeEndian.Uint64(data)), int64(binary.NativeEndian.Uint64(data[8:])))
			} else if len(data) >= 8 {
				ts = time.Unix(int64(int32(binary.NativeEndian.Uint32(data))), int64(int32(binary.NativeEndian.Uint32(data[4:]))))
			}
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	if ts.IsZero() {
		// Only if the kernel sent no timestamp (it always does once
		// SO_TIMESTAMPNS is on): the time of the read is close enough.
		ts = time.Now()
	}

	data := s.buf[s.head : s.head+caplen]
	switch s.mode {
	case modeEthernet:
		if vlan && caplen >= 12 {
			// Put the tag back between the MAC addresses and the
			// EtherType, as the frame was on the wire (and as libpcap
			// does); only the 12 address bytes move.
			b := s.buf[s.head-vlanHeadroom:]
			copy(b[:12], b[vlanHeadroom:vlanHeadroom+12])
			binary.BigEndian.PutUint16(b[12:], tpid)
			binary.BigEndian.PutUint16(b[14:], tci)
			data = b[:caplen+vlanHeadroom]
			wire += vlanHeadroom
			if len(data) > s.snap {
				data = data[:s.snap]
			}
		}
	case modeCooked:
		// LINKTYPE_LINUX_SLL: packet type, ARPHRD type, address length,
		// 8 address bytes, protocol (already in network order).
		h := s.buf[:sllHeaderLen]
		binary.BigEndian.PutUint16(h[0:], uint16(s.from.Pkttype))
		binary.BigEndian.PutUint16(h[2:], s.from.Hatype)
		binary.BigEndian.PutUint16(h[4:], uint16(s.from.Halen))
		copy(h[6:14], s.from.Addr[:])
		binary.NativeEndian.PutUint16(h[14:], s.from.Protocol)
		data = s.buf[:sllHeaderLen+caplen]
		wire += sllHeaderLen
	}
	return Frame{N: s.frames, Time: ts.UTC(), LinkType: s.lt, Data: data, Len: max(wire, len(data))}
}

// Drops implements DropCounter. The kernel resets its counters on every
// read, so they are summed here.
func (s *liveSource) Drops() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed.Load() {
		if err := s.collectStats(); err != nil {
			return s.drops, &Error{Op: "stats live", Name: s.name, Err: err}
		}
	}
	return s.drops, nil
}

// collectStats adds the kernel's PACKET_STATISTICS since the last call.
// The caller holds mu.
func (s *liveSource) collectStats() error {
	var (
		st  *unix.TpacketStats
		err error
	)
	cerr := s.rc.Control(func(fd uintptr) {
		st, err = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if cerr != nil {
		return fmt.Errorf("packet statistics: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("packet statistics: %w", err)
	}
	s.drops += uint64(st.Drops)
	return nil
}

// Close ends the capture: a ReadFrame waiting in another goroutine returns
// io.EOF. The drop count is read one last time first, so Drops stays
// valid. Close is idempotent.
func (s *liveSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil
	}
	// Best effort: a failure to read the statistics must not keep the
	// socket open.
	_ = s.collectStats()
	s.closed.Store(true)
	if err := s.f.Close(); err != nil {
		return &Error{Op: "close live", Name: s.name, Err: err}
	}
	return nil
}

// filterSpec describes the kernel filter of a live capture.
type filterSpec struct {
	mode  liveMode
	ports []uint16 // sorted, no duplicates; empty: every TCP segment
	snap  uint32   // bytes to keep of an accepted packet
	// skipOutgoing drops the sent copy of each packet (on a loopback
	// device, where every packet is also received).
	skipOutgoing bool
	// skipOutgoingOn does the same for one interface index only ("any").
	skipOutgoingOn int
}

// ipv6ExtWalk is how many IPv6 extension headers the filter skips.
const ipv6ExtWalk = 3

// Classic BPF opcodes used by liveFilter.
const (
	bpfLdW    = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfLdH    = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
	bpfLdB    = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	bpfLdIndH = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
	bpfLdIndB = unix.BPF_LD | unix.BPF_B | unix.BPF_IND
	bpfLdMem  = unix.BPF_LD | unix.BPF_MEM
	bpfSt     = unix.BPF_ST
	bpfLshK   = unix.BPF_ALU | unix.BPF_LSH | unix.BPF_K
	bpfAddX   = unix.BPF_ALU | unix.BPF_ADD | unix.BPF_X
	bpfLdxMSH = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
	bpfLdxImm = unix.BPF_LDX | unix.BPF_W | unix.BPF_IMM
	bpfAddK   = unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K
	bpfTax    = unix.BPF_MISC | unix.BPF_TAX
	bpfTxa    = unix.BPF_MISC | unix.BPF_TXA
	bpfJa     = unix.BPF_JMP | unix.BPF_JA
	bpfJeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJset   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRet    = unix.BPF_RET | unix.BPF_K
)

// liveFilter assembles the socket filter: TCP over IPv4 or IPv6 (behind
// up to two VLAN tags on Ethernet) to or from one of spec.ports. It
// returns spec.snap for a packet to keep (the kernel trims it to that
// length) and 0 for one to drop.
//
// IPv4: the header length comes from IHL, so options are handled; a
// non-first fragment has no ports and is kept for the Decoder to
// reassemble. IPv6: TCP after up to ipv6ExtWalk hop-by-hop, routing and
// destination options headers and an optional fragment header (a
// non-first fragment is kept); a longer chain and AH are kept unexamined;
// anything else (ICMPv6 and MLD behind hop-by-hop, UDP, ...) is dropped.
func liveFilter(spec filterSpec) ([]unix.SockFilter, error) {
	var a bpfAsm
	// The exits (discard, keep) come before the ports block, whose length
	// grows with the number of ports, so that no jump has to cross it:
	// classic BPF's conditional jumps reach 255 instructions.
	discard, keep, ports, accept, chain6 := a.label(), a.label(), a.label(), a.label(), a.label()

	if spec.skipOutgoing || spec.skipOutgoingOn > 0 {
		start := a.label()
		a.stmt(bpfLdW, skfAdOff+skfAdPkttype)
		if spec.skipOutgoing {
			a.jump(bpfJeq, unix.PACKET_OUTGOING, discard, start)
		} else {
			a.jump(bpfJeq, unix.PACKET_OUTGOING, bpfNext, start)
			a.stmt(bpfLdW, skfAdOff+skfAdIfindex)
			a.jump(bpfJeq, uint32(spec.skipOutgoingOn), discard, start)
		}
		a.place(start)
	}

	// Dispatch on the EtherType to an IP block per network header offset.
	var offsets []uint32
	var ip4, ip6 []int
	addOffset := func(off uint32) (int, int) {
		offsets = append(offsets, off)
		ip4 = append(ip4, a.label())
		ip6 = append(ip6, a.label())
		return ip4[len(ip4)-1], ip6[len(ip6)-1]
	}
	if spec.mode == modeEthernet {
		next := a.label()
		for depth := range 3 {
			a.place(next)
			v4, v6 := addOffset(uint32(14 + 4*depth))
			a.stmt(bpfLdH, uint32(12+4*depth))
			a.jump(bpfJeq, 0x0800, v4, bpfNext)
			a.jump(bpfJeq, 0x86dd, v6, bpfNext)
			if depth < 2 {
				next = a.label()
				a.jump(bpfJeq, 0x8100, next, bpfNext) // 802.1Q
				a.jump(bpfJeq, 0x88a8, next, bpfNext) // 802.1ad (QinQ outer)
			}
			a.ja(discard)
		}
	} else {
		// The network header comes first; skb->protocol says which.
		v4, v6 := addOffset(0)
		a.stmt(bpfLdW, skfAdOff+skfAdProtocol)
		a.jump(bpfJeq, 0x0800, v4, bpfNext)
		a.jump(bpfJeq, 0x86dd, v6, bpfNext)
		a.ja(discard)
	}

	for i, off := range offsets {
		// IPv4: X = offset of the TCP header.
		a.place(ip4[i])
		a.stmt(bpfLdB, off+9)
		a.jump(bpfJeq, unix.IPPROTO_TCP, bpfNext, discard)
		a.stmt(bpfLdH, off+6)
		a.jump(bpfJset, 0x1fff, keep, bpfNext)
		a.stmt(bpfLdxMSH, off) // X = 4 * IHL
		if off > 0 {
			a.stmt(bpfTxa, 0)
			a.stmt(bpfAddK, off)
			a.stmt(bpfTax, 0)
		}
		a.ja(ports)

		// IPv6: X = the header after the fixed one, A = its type.
		a.place(ip6[i])
		a.stmt(bpfLdxImm, off+40)
		a.stmt(bpfLdB, off+6)
		a.ja(chain6)
	}

	// The IPv6 header chain, all relative to X: TCP, a fragment header, or
	// up to ipv6ExtWalk hop-by-hop, routing or destination options headers
	// (skipped by their length) before one of those.
	frag6 := a.label()
	a.place(chain6)
	for level := 0; ; level++ {
		a.jump(bpfJeq, unix.IPPROTO_TCP, ports, bpfNext)
		a.jump(bpfJeq, unix.IPPROTO_FRAGMENT, frag6, bpfNext)
		// IPsec AH has its own length unit; kept unexamined (rare).
		a.jump(bpfJeq, unix.IPPROTO_AH, keep, bpfNext)
		if level == ipv6ExtWalk {
			// A longer chain: kept for the Decoder to judge.
			a.jump(bpfJeq, unix.IPPROTO_HOPOPTS, keep, bpfNext)
			a.jump(bpfJeq, unix.IPPROTO_ROUTING, keep, bpfNext)
			a.jump(bpfJeq, unix.IPPROTO_DSTOPTS, keep, discard)
			break
		}
		ext := a.label()
		a.jump(bpfJeq, unix.IPPROTO_HOPOPTS, ext, bpfNext)
		a.jump(bpfJeq, unix.IPPROTO_ROUTING, ext, bpfNext)
		a.jump(bpfJeq, unix.IPPROTO_DSTOPTS, ext, discard)
		a.place(ext)
		a.stmt(bpfLdIndB, 0) // its next header...
		a.stmt(bpfSt, 0)     // ...kept in M[0]
		a.stmt(bpfLdIndB, 1) // X += (length + 1) * 8
		a.stmt(bpfAddK, 1)
		a.stmt(bpfLshK, 3)
		a.stmt(bpfAddX, 0)
		a.stmt(bpfTax, 0)
		a.stmt(bpfLdMem, 0)
	}
	a.place(frag6)
	a.stmt(bpfLdIndB, 0) // the fragment header's next header
	a.jump(bpfJeq, unix.IPPROTO_TCP, bpfNext, discard)
	a.stmt(bpfLdIndH, 2) // fragment offset and flags
	a.jump(bpfJset, 0xfff8, keep, bpfNext)
	a.stmt(bpfTxa, 0)
	a.stmt(bpfAddK, 8)
	a.stmt(bpfTax, 0)

	a.ja(ports)
	a.place(discard)
	a.stmt(bpfRet, 0)
	a.place(keep)
	a.stmt(bpfRet, spec.snap)

	// X = offset of the TCP header.
	a.place(ports)
	if len(spec.ports) > 0 {
		for _, field := range []uint32{0, 2} { // source port, destination port
			a.stmt(bpfLdIndH, field)
			for _, p := range spec.ports {
				a.jump(bpfJeq, uint32(p), accept, bpfNext)
			}
		}
		a.stmt(bpfRet, 0)
	}
	a.place(accept)
	a.stmt(bpfRet, spec.snap)
	prog, err := a.assemble()
	if err != nil {
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	return prog, nil
}

// bpfAsm assembles classic BPF with symbolic, forward-only jump targets.
type bpfAsm struct {
	ins    []bpfIns
	labels []int // instruction index of each label; -1 until placed
}

type bpfIns struct {
	code   uint16
	k      uint32
	jt, jf int // target labels of a jump (bpfJa uses jt); bpfNext: the next instruction
}

const bpfNext = -1

func (a *bpfAsm) label() int {
	a.labels = append(a.labels, -1)
	return len(a.labels) - 1
}

func (a *bpfAsm) place(l int) { a.labels[l] = len(a.ins) }

func (a *bpfAsm) stmt(code uint16, k uint32) {
	a.ins = append(a.ins, bpfIns{code: code, k: k, jt: bpfNext, jf: bpfNext})
}

func (a *bpfAsm) jump(code uint16, k uint32, jt, jf int) {
	a.ins = append(a.ins, bpfIns{code: code, k: k, jt: jt, jf: jf})
}

func (a *bpfAsm) ja(l int) { a.ins = append(a.ins, bpfIns{code: bpfJa, jt: l, jf: bpfNext}) }

func (a *bpfAsm) assemble() ([]unix.SockFilter, error) {
	if len(a.ins) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("%d instructions, more than %d", len(a.ins), unix.BPF_MAXINSNS)
	}
	out := make([]unix.SockFilter, len(a.ins))
	for i, in := range a.ins {
		rel := func(l int) (int, error) {
			if l == bpfNext {
				return 0, nil
			}
			t := a.labels[l]
			if t < 0 {
				return 0, fmt.Errorf("instruction %d: jump to an unplaced label", i)
			}
			if t <= i {
				return 0, fmt.Errorf("instruction %d: backward jump to %d", i, t)
			}
			return t - i - 1, nil
		}
		f := unix.SockFilter{Code: in.code, K: in.k}
		if in.code&0x07 == unix.BPF_JMP {
			jt, err := rel(in.jt)
			if err != nil {
				return nil, err
			}
			jf, err := rel(in.jf)
			if err != nil {
				return nil, err
			}
			if in.code == bpfJa {
				f.K = uint32(jt)
			} else {
				if jt > 255 || jf > 255 {
					return nil, fmt.Errorf("instruction %d: jump of %d beyond the 255 of a conditional", i, max(jt, jf))
				}
				f.Jt, f.Jf = uint8(jt), uint8(jf)
			}
		}
		out[i] = f
	}
	return out, nil
}
