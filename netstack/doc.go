// Package netstack is the userspace TCP/IP stack of tcopy-tun: gVisor's
// netstack (gvisor.dev/gvisor/pkg/tcpip, version pinned in go.mod) with one
// NIC on a link endpoint, from which the replayer dials captured sessions
// from their mapped client addresses. Responses that the kernel routes back
// into the TUN land in these connections: they are the intercept sink.
//
// # What it owns
//
//   - Stack (New): IPv4 + IPv6 + TCP, spoofing and promiscuous mode, default
//     routes through the NIC, TCP tuning (SACK, buffer sizes, receive-buffer
//     moderation, short TIME_WAIT and FIN_WAIT_2), each knob commented
//     where it is set (stack.go). Every source address in use is assigned
//     to the NIC as a /32 or /128 and reference counted, so gVisor's
//     address lookups stay exact (DESIGN.md measured the linear scan for
//     spoofed addresses at 55 % CPU).
//   - Stack.DialTCP, the replay.Dialer implementation, and Stack.ListenTCP.
//     Both return this package's Conn and Listener rather than gonet's, so
//     that gVisor's tcpip.Error is converted exactly once, here, into
//     errno-wrapping errors (errors.go): errors.Is(err, syscall.ECONNREFUSED),
//     ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ... work above this package, the
//     same as for kernel sockets. Conn adds CloseWrite (FIN), CloseRead and
//     Abort (RST). A ::1 destination is refused (ErrIPv6Loopback).
//   - Link endpoints on a packet fd (NewLinkEndpoint, NewTUNEndpoint):
//     gVisor's fdbased (LinkFdbased) and this package's batching endpoint
//     (LinkBatch, batchlink.go). Both claim RX checksum offload and never TX
//     checksum offload (the kernel drops a TUN's packets without checksums;
//     with vnet headers partial checksums are flagged for the kernel to
//     complete instead).
//   - NewTapEndpoint wraps a link endpoint so that a Tap sees every packet
//     both ways (gVisor's sniffer without its synchronous writes): the seam
//     of --write-pcap. The tap copies and must not block; an endpoint that
//     is not wrapped pays nothing.
//   - nstest: two Stacks joined by an in-memory wire with drop/delay/sniff
//     hooks, for testing the whole replay engine without privileges.
//
// # What it must not know
//
// pcap, sessions, replay (it matches replay.Dialer's method, it does not
// import it), intercept, and TUN devices: it takes a link endpoint or a file
// descriptor, never a device name, and never configures the host.
//
// # Concurrency and shutdown
//
// All Stack, Conn and Listener methods are safe for concurrent use.
// Stack.Close is idempotent and ordered: it refuses new dials, aborts every
// endpoint (an RST for each connection, which also wakes blocked Reads and
// Writes with ECONNABORTED), removes the NIC (which stops the link
// endpoint's goroutines and closes it), and waits for gVisor's protocol
// goroutines; after it returns no goroutine of the stack is left. Conns and
// listeners stay safe to use and to Close afterwards.
//
// Ownership: New takes the link endpoint over (Close closes it). The link
// endpoint constructors duplicate the fd they are given; the caller keeps
// and closes its own fd whenever it likes, the endpoint closes its
// duplicate (fdbased additionally leaks one eventfd per endpoint, a gVisor
// limitation). A TUN device lives while any descriptor for it is open.
//
// # Choosing the link endpoint
//
// DefaultLink (LinkBatch) is decided by BenchmarkPrivilegedTUN
// (bench_test.go), which runs the same workloads through kernel sockets and
// both endpoints in one private network namespace; the numbers are recorded
// with DefaultLink. On this 2-core machine the netstack path reaches about
// 0.8 of the kernel's own short-session rate (17 k against 21 k sessions/s),
// its upload rate, and 0.45 of its download rate; BenchmarkNstestDial (both
// ends gVisor, no system calls) does about 12 k sessions/s.
//
// LinkOptions.VnetHdr (batch only) adds host GSO through virtio_net_hdr on a
// TUN opened with IFF_VNET_HDR and TSO offloads, which keeps a realistic MTU
// of 1500 as fast as 65535 (see BenchmarkPrivilegedTUNGSO).
package netstack
