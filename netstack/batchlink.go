package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// batchQueueLen bounds the packets waiting for the writer goroutine. Beyond
// it packets are dropped (TCP retransmits them), as a full qdisc would. It
// is sized like the TUN's txqueuelen in DESIGN.md: enough for a burst of
// SYNs from thousands of sessions, small enough that a stuck device does
// not pin unbounded memory.
const batchQueueLen = 8192

// virtio_net_hdr (linux/virtio_net.h), the header IFF_VNET_HDR puts in front
// of every packet on a TUN: flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset; little endian.
const (
	vnetHdrSize         = 10
	vnetHdrFNeedsCsum   = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	vnetHdrGSOTCPv4     = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	vnetHdrGSOTCPv6     = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	vnetGSOMaxSize      = 65535
	vnetHdrCsumStartOff = 6
)

// encodeVnetHdr fills h for pkt from the GSO options gVisor's TCP set on it:
// a partial checksum for the kernel to complete (NEEDS_CSUM, from csum_start
// to the end, stored at csum_start+csum_offset) and, for a segment larger
// than the MSS, the segmentation the kernel may apply. There is no link
// header on a TUN, so csum_start is the IP header length.
func encodeVnetHdr(h *[vnetHdrSize]byte, pkt *stack.PacketBuffer) {
	*h = [vnetHdrSize]byte{}
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone {
		return
	}
	if gso.NeedsCsum {
		h[0] = vnetHdrFNeedsCsum
		binary.LittleEndian.PutUint16(h[vnetHdrCsumStartOff:], gso.L3HdrLen)
		binary.LittleEndian.PutUint16(h[8:], gso.CsumOffset)
	}
	if pkt.Data().Size() > int(gso.MSS) {
		switch gso.Type {
		case stack.GSOTCPv4:
			h[1] = vnetHdrGSOTCPv4
		case stack.GSOTCPv6:
			h[1] = vnetHdrGSOTCPv6
		}
		binary.LittleEndian.PutUint16(h[2:], uint16(pkt.HeaderSize()))
		binary.LittleEndian.PutUint16(h[4:], gso.MSS)
	}
}

// batchEndpoint is a link endpoint on a packet fd (see LinkBatch).
//
// Goroutines: Attach(d) starts a reader and a writer. Attach(nil) (the stack
// removing the NIC) tells both to stop but does not wait: gVisor calls it
// with the stack's lock held, and the reader may be in the middle of
// delivering a packet whose processing needs that lock (an RST for an
// unknown connection looks up a route). Close, which gVisor calls after
// releasing the lock, waits for them and closes the fd. Detaching is final:
// the endpoint does not attach again. Both goroutines park in Go's runtime
// poller, so they cost no thread while idle, and stopping them is a
// deadline on the file, not an extra fd.
type batchEndpoint struct {
	f  *os.File // owns the fd duplicate; registered with the runtime poller
	rc syscall.RawConn

	mtu atomic.Uint32

	// vnetHdr: every packet on the fd is preceded by a virtio_net_hdr
	// (IFF_VNET_HDR), and the endpoint offers gVisor host GSO. Fixed at
	// construction.
	vnetHdr bool

	// mu serialises Attach and Close.
	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher // guarded by mu; nil when not attached
	stopped    bool                    // guarded by mu; detached or closed: final
	closed     bool                    // guarded by mu
	stopWriter chan struct{}           // guarded by mu; closed to stop the writer
	onClose    func()                  // guarded by mu
	stopping   atomic.Bool             // read by the goroutines
	wg         sync.WaitGroup

	// The writer's queue: WritePackets appends under qmu, the writer swaps
	// it with its own (empty) slice, so neither side allocates in the
	// steady state.
	qmu   sync.Mutex
	queue []*stack.PacketBuffer
	wake  chan struct{} // capacity 1: "queue is not empty"

	// Counters (Stack.Stats reports them; gVisor counts the packets).
	txDropped, txErrors atomic.Uint64
}

func (e *batchEndpoint) counters() (txDropped, txErrors uint64) {
	return e.txDropped.Load(), e.txErrors.Load()
}

var _ stack.LinkEndpoint = (*batchEndpoint)(nil)

// NewBatchEndpoint returns this package's own link endpoint on fd
// (NewLinkEndpoint(LinkBatch, fd, mtu)).
func NewBatchEndpoint(fd int, mtu uint32) (stack.LinkEndpoint, error) {
	return NewLinkEndpoint(LinkBatch, fd, mtu)
}

// newBatchEndpoint takes ownership of fd, also on error.
func newBatchEndpoint(fd int, mtu uint32, vnetHdr bool) (*batchEndpoint, error) {
	// Non-blocking before os.NewFile, so the file joins the runtime poller
	// and its deadlines work.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "netstack-link")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		// Not pollable (a regular file?): there would be no way to stop
		// the reader.
		f.Close()
		return nil, fmt.Errorf("not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	e := &batchEndpoint{
		f:       f,
		rc:      rc,
		vnetHdr: vnetHdr,
		queue:   make([]*stack.PacketBuffer, 0, 256),
		wake:    make(chan struct{}, 1),
	}
	e.mtu.Store(mtu)
	return e, nil
}

// Attach implements stack.LinkEndpoint.
func (e *batchEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d == nil {
		e.stopLocked()
		return
	}
	if e.stopped || e.dispatcher != nil {
		return
	}
	e.dispatcher = d
	e.stopWriter = make(chan struct{})
	e.wg.Add(2)
	go e.readLoop(d)
	go e.writeLoop(e.stopWriter)
}

// stopLocked tells the goroutines to stop, without waiting (see the type's
// comment). It is final.
func (e *batchEndpoint) stopLocked() {
	if e.stopped {
		return
	}
	e.stopped = true
	e.stopping.Store(true)
	if e.dispatcher == nil {
		return // never attached
	}
	e.dispatcher = nil
	// Deadlines in the past wake a reader parked in the poller and a
	// writer waiting for a full device; a reader busy draining sees
	// stopping.
	e.f.SetReadDeadline(time.Unix(1, 0))
	e.f.SetWriteDeadline(time.Unix(1, 0))
	close(e.stopWriter)
}

// IsAttached implements stack.LinkEndpoint.
func (e *batchEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// readLoop reads packets and injects them into the stack until detached.
// Delivery is inline: gVisor's TCP queues the segment to its own processor
// goroutines, so the reader goes straight back to the fd, and no extra
// goroutine hop (as in fdbased) sits on the receive path.
func (e *batchEndpoint) readLoop(d stack.NetworkDispatcher) {
	defer e.wg.Done()
	// Packets are read into a view of gVisor's buffer pool. A large one is
	// handed to the stack in that view, uncopied (bulk transfers: 64 KiB
	// segments); a small one is copied into a buffer of its size, so that
	// a short segment waiting in a receive queue does not pin 64 KiB, and
	// the view is read into again.
	view := buffer.NewViewSize(maxPacket)
	defer func() { view.Release() }()
	var hdr [vnetHdrSize]byte // offloads only: see below
	iov := make([]unix.Iovec, 0, 2)
	var rerr error
	// One closure for the goroutine's lifetime: RawConn.Read takes a func
	// and a fresh closure per call would allocate.
	read := func(fd uintptr) bool {
		// Drain everything that is ready in one poller wake-up.
		for !e.stopping.Load() {
			data := view.AsSlice()
			iov = iov[:0]
			if e.vnetHdr {
				iov = appendIovec(iov, hdr[:])
			}
			iov = appendIovec(iov, data)
			r, _, errno := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			n := int(r)
			switch {
			case errno == unix.EAGAIN:
				return false // park in the poller until readable
			case errno == unix.EINTR:
				continue
			case errno != 0:
				rerr = errno
				return true
			case n == 0:
				rerr = errors.New("end of file")
				return true
			}
			if e.vnetHdr {
				// The header only describes offloads: a coalesced
				// (GSO) segment is delivered whole, and a partial
				// checksum is fine since RX checksums are not
				// verified (see NewLinkEndpoint).
				if n <= vnetHdrSize {
					continue
				}
				n -= vnetHdrSize
			}
			if n < zeroCopyMin {
				e.deliver(d, data, buffer.MakeWithData(data[:n]))
				continue
			}
			view.CapLength(n)
			e.deliver(d, data, buffer.MakeWithView(view))
			view = buffer.NewViewSize(maxPacket)
		}
		return true
	}
	for !e.stopping.Load() {
		if err := e.rc.Read(read); err != nil {
			return // the stop deadline, or the file was closed
		}
		if rerr != nil {
			// EBADFD: the TUN was detached; anything else is just as
			// final for a device. Packets stop; the stack's dials time
			// out, which the caller sees.
			return
		}
	}
}

// maxPacket is the largest IP packet, and the largest chunk gVisor's
// buffer pool keeps.
const maxPacket = 1 << 16

// zeroCopyMin: packets from this size on are delivered in the view they
// were read into (see readLoop).
const zeroCopyMin = 16 << 10

func appendIovec(iov []unix.Iovec, b []byte) []unix.Iovec {
	var vec unix.Iovec
	vec.Base = &b[0]
	vec.SetLen(len(b))
	return append(iov, vec)
}

// deliver injects one packet; ip is its first bytes (for the version).
func (e *batchEndpoint) deliver(d stack.NetworkDispatcher, ip []byte, payload buffer.Buffer) {
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(ip) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		payload.Release()
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements stack.LinkWriter: it queues the packets for the
// writer goroutine and returns at once.
func (e *batchEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.stopping.Load() {
		return 0, &tcpip.ErrClosedForSend{}
	}
	all := pkts.AsSlice()
	n := 0
	e.qmu.Lock()
	for _, pkt := range all {
		if len(e.queue) >= batchQueueLen {
			break
		}
		e.queue = append(e.queue, pkt.IncRef())
		n++
	}
	e.qmu.Unlock()
	if n > 0 {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	if n < len(all) {
		e.txDropped.Add(uint64(len(all) - n))
		if n == 0 {
			return 0, &tcpip.ErrNoBufferSpace{}
		}
	}
	return n, nil
}

// writeLoop writes queued packets, one writev each (a TUN takes one packet
// per call), until stop is closed. Then it writes what is still queued —
// notably the RSTs of the connections Stack.Close just aborted — without
// waiting for a full device, and exits.
func (e *batchEndpoint) writeLoop(stop chan struct{}) {
	defer e.wg.Done()
	var batch []*stack.PacketBuffer
	iov := make([]unix.Iovec, 0, 16)
	scratch := make([]byte, 0, maxPacket)
	var next int
	var vhdr [vnetHdrSize]byte // one packet is written at a time
	final := false
	// One closure for the goroutine's lifetime (see readLoop). It writes
	// batch[next:], returning false to wait for writability on EAGAIN
	// (or, in the final flush, giving up on the rest).
	write := func(fd uintptr) bool {
		for next < len(batch) {
			iov = iov[:0]
			if e.vnetHdr {
				encodeVnetHdr(&vhdr, batch[next])
				var vec unix.Iovec
				vec.Base = &vhdr[0]
				vec.SetLen(vnetHdrSize)
				iov = append(iov, vec)
			}
			iov = packetIovecs(iov, batch[next], &scratch)
			_, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			switch errno {
			case 0:
			case unix.EAGAIN:
				if final {
					e.txDropped.Add(uint64(len(batch) - next))
					return true
				}
				return false
			case unix.EINTR:
				continue
			default:
				// EIO (device down), EINVAL (a packet the kernel
				// rejects): drop this packet, keep the rest.
				e.txErrors.Add(1)
			}
			next++
		}
		return true
	}
	release := func() {
		for i, pkt := range batch {
			pkt.DecRef()
			batch[i] = nil
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-e.wake:
		case <-stop:
		}
		select {
		case <-stop:
			final = true
		default:
		}
		e.qmu.Lock()
		batch, e.queue = e.queue, batch
		e.qmu.Unlock()
		next = 0
		switch {
		case len(batch) == 0:
		case final:
			// Control runs write without waiting for writability, and
			// ignores the stop deadline.
			e.rc.Control(func(fd uintptr) { write(fd) })
		default:
			if err := e.rc.Write(write); err != nil {
				// Stopped (the write deadline) while waiting for a
				// full device: the final flush retries the rest.
				e.qmu.Lock()
				e.queue = append(e.queue, batch[next:]...)
				e.qmu.Unlock()
				batch = batch[:next]
			}
		}
		release()
		if final {
			return
		}
	}
}

// packetIovecs appends iovecs for pkt's bytes (headers and payload, without
// the reserved space in front). A packet in more pieces than the kernel
// accepts in one writev is copied into scratch instead.
func packetIovecs(iov []unix.Iovec, pkt *stack.PacketBuffer, scratch *[]byte) []unix.Iovec {
	prefix := len(iov)
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off > 0 {
			if off >= len(b) {
				off -= len(b)
				continue
			}
			b, off = b[off:], 0
		}
		if len(b) == 0 {
			continue
		}
		var vec unix.Iovec
		vec.Base = &b[0]
		vec.SetLen(len(b))
		iov = append(iov, vec)
	}
	if len(iov) <= 1024 && len(iov) > prefix { // IOV_MAX
		return iov
	}
	s := (*scratch)[:0]
	for i := prefix; i < len(iov); i++ {
		s = append(s, unsafe.Slice(iov[i].Base, iov[i].Len)...)
	}
	*scratch = s
	iov = iov[:prefix]
	var vec unix.Iovec
	if len(s) > 0 {
		vec.Base = &s[0]
	}
	vec.SetLen(len(s))
	return append(iov, vec)
}

var _ stack.GSOEndpoint = (*batchEndpoint)(nil)

// GSOMaxSize implements stack.GSOEndpoint: with vnet headers TCP may hand
// over segments up to the largest IP packet, whatever the MTU.
func (e *batchEndpoint) GSOMaxSize() uint32 {
	if e.vnetHdr {
		return vnetGSOMaxSize
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint: host GSO (the kernel segments
// and checksums, as for a virtio NIC) with vnet headers, none without.
func (e *batchEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.vnetHdr {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// MTU implements stack.LinkEndpoint.
func (e *batchEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *batchEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: no link header on a TUN.
func (*batchEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a TUN has none.
func (*batchEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*batchEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint (see NewLinkEndpoint).
func (*batchEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// Wait implements stack.LinkEndpoint. The waiting happens in Close, which
// gVisor calls outside its locks; gVisor's Stack.Wait calls Wait while
// holding the stack's lock, where waiting for a reader that is delivering a
// packet could deadlock (see the type's comment). So Wait only waits after
// Close, when the goroutines are already gone.
func (e *batchEndpoint) Wait() {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		e.wg.Wait()
	}
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*batchEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*batchEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*batchEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *batchEndpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}

// Close implements stack.LinkEndpoint: it stops the goroutines if still
// running, waits for them, and closes the fd duplicate. Idempotent.
func (e *batchEndpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.stopLocked()
	onClose := e.onClose
	e.mu.Unlock()

	e.wg.Wait()
	// WritePackets racing with the stop may have queued packets after the
	// writer's last drain: release them.
	e.qmu.Lock()
	for i, pkt := range e.queue {
		pkt.DecRef()
		e.queue[i] = nil
		e.txDropped.Add(1)
	}
	e.queue = e.queue[:0]
	e.qmu.Unlock()
	if onClose != nil {
		onClose()
	}
	e.f.Close()
}
