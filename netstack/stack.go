package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Defaults for Options.
const (
	// DefaultTimeWait is how long a closed connection stays in TIME_WAIT.
	// gVisor's default (60 s) costs about 7.5 KiB per closed endpoint, which
	// at 10 k sessions/s is gigabytes. TIME_WAIT only has to outlive the
	// peer's retransmission of its FIN should our last ACK be lost; on a
	// host-local path with a sub-millisecond RTT and Linux's 200 ms minimum
	// RTO, 2 s covers several retransmissions.
	DefaultTimeWait = 2 * time.Second

	// DefaultFinWait2Timeout bounds how long a closed connection whose peer
	// never sends its FIN lingers in FIN_WAIT_2 (Linux tcp_fin_timeout is
	// 60 s, gVisor's default too). A replayed target that does not close
	// within 10 s of our close is not going to; holding the endpoint longer
	// only costs memory.
	DefaultFinWait2Timeout = 10 * time.Second
)

// nicID is the only NIC of a Stack.
const nicID tcpip.NICID = 1

// Options configures a Stack. The zero value is valid.
type Options struct {
	// MTU, if non-zero, overrides the link endpoint's MTU. The stack derives
	// its MSS from it (MTU 65535 gives 64 KiB segments: packet count is the
	// cost on this path, see DESIGN.md).
	MTU uint32

	// TimeWait is the TIME_WAIT duration (DefaultTimeWait if zero).
	TimeWait time.Duration

	// FinWait2Timeout bounds FIN_WAIT_2 for closed connections
	// (DefaultFinWait2Timeout if zero).
	FinWait2Timeout time.Duration

	// ConnectTimeout, if non-zero, fails a dial whose handshake has not
	// completed within it with ETIMEDOUT. Zero leaves gVisor's own limit:
	// SYNs at 1, 2, 4, ... s until the backoff passes 60 s, about 127 s in
	// all, like Linux's default 6 SYN retries. (gVisor's TCPSynRetriesOption
	// is not consulted by the active handshake, so this is the knob.)
	// Callers usually bound each dial with a context as well.
	ConnectTimeout time.Duration

	// Logf receives rare diagnostic messages (never per packet). Nil
	// discards them.
	Logf func(format string, args ...any)
}

// Stack is a gVisor TCP/IP stack with one NIC on a link endpoint. It dials
// from arbitrary (spoofed) source addresses and accepts packets for any
// destination address.
//
// All methods may be called concurrently. Close releases everything; after
// Close, DialTCP and ListenTCP return ErrClosed.
type Stack struct {
	s    *stack.Stack
	ep   stack.LinkEndpoint
	logf func(format string, args ...any)

	connectTimeout time.Duration

	// mu guards closed. DialTCP and ListenTCP hold it for reading while
	// they create endpoints, so Close (which takes it for writing) never
	// races with an endpoint being created.
	mu     sync.RWMutex
	closed bool

	// addrMu guards addrs. It is separate from mu so that conns closing
	// (which release addresses) never wait behind a Close holding mu.
	addrMu sync.Mutex
	// addrs counts, per local address, the users (conns, listeners) that
	// need it assigned to the NIC. See acquireAddr.
	addrs map[netip.Addr]int

	closeOnce sync.Once
}

// New creates a stack with one NIC on ep.
//
// Ownership: the Stack takes ep over. Close removes the NIC, which stops
// ep's goroutines and calls ep.Close; the caller must not attach ep to
// anything else. Whether a file descriptor under ep is closed then is the
// endpoint's business (see NewLinkEndpoint).
//
// On error, ep has been closed too, so the caller has nothing to undo.
func New(ep stack.LinkEndpoint, opts Options) (*Stack, error) {
	if ep.Capabilities()&stack.CapabilityTXChecksumOffload != 0 {
		// A TUN hands packets to the kernel as if they came off a wire:
		// without a checksum the kernel drops every one of them (the
		// first symptom is a dial that never completes).
		ep.Close()
		return nil, errors.New("netstack: link endpoint claims tx checksum offload: a tun needs real checksums")
	}
	if opts.TimeWait <= 0 {
		opts.TimeWait = DefaultTimeWait
	}
	if opts.FinWait2Timeout <= 0 {
		opts.FinWait2Timeout = DefaultFinWait2Timeout
	}
	if opts.ConnectTimeout < 0 {
		ep.Close()
		return nil, fmt.Errorf("netstack: negative connect timeout %v", opts.ConnectTimeout)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			// Packets from a loopback target (127.0.0.1) arrive on the TUN
			// with a 127/8 source; gVisor drops such "martians" unless told
			// otherwise, which looks exactly like a dial timeout.
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			// The zero ipv6.Options keep the NIC silent: no DAD (a DAD'ed
			// address is tentative, i.e. unusable, for a second after it is
			// added — every dial would wait for it), no router
			// solicitations, no SLAAC, no MLD reports. ::1 is refused in
			// DialTCP, so external loopback stays off for IPv6.
			ipv6.NewProtocolWithOptions(ipv6.Options{}),
		},
		// CUBIC, as on the Linux targets we talk to, so bulk behaviour is
		// comparable with the kernel-socket baseline. (Tailscale pins Reno
		// because of a congestion-window overflow, gvisor#11632; the pinned
		// gVisor has the fix, snd.go computes that limit in uint64.)
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocolCUBIC},
		// HandleLocal off: a packet to an address this stack owns (say a
		// session dialling another session's client address) must still go
		// out through the link like a real client's packet, not be short
		// circuited inside the process.
		HandleLocal: false,
	})

	st := &Stack{s: s, ep: ep, logf: logf, connectTimeout: opts.ConnectTimeout, addrs: make(map[netip.Addr]int)}
	if err := st.configure(opts); err != nil {
		// RemoveNIC (if the NIC was created) stops and closes ep outside
		// the stack's lock, as Close does; otherwise close ep ourselves.
		if s.HasNIC(nicID) {
			s.RemoveNIC(nicID)
		} else {
			ep.Close()
		}
		s.Destroy()
		return nil, err
	}
	return st, nil
}

func (st *Stack) configure(opts Options) error {
	s := st.s
	tcpOpts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		// SACK is off by default in gVisor and on in Linux. The kernel
		// target offers it; with it a drop on the way into the TUN costs
		// one retransmission instead of a go-back-N.
		{"sack", ptr(tcpip.TCPSACKEnabled(true))},
		// RACK off (gVisor enables it by default). Its tail-loss probe
		// fires after 2*SRTT with no floor; on an in-process or
		// host-local path SRTT is tens of microseconds, so every ACK
		// delayed by goroutine scheduling triggered a spurious
		// retransmission (measured: one per 6 to 12 short sessions, each
		// answered by an RST from a peer that had already closed; none
		// with RACK off — sessions/s moved within this machine's noise).
		// Tailscale's netstack turns it off for the same reason. Loss
		// recovery falls back to SACK-based fast retransmit and RTO.
		{"recovery", ptr(tcpip.TCPRecovery(0))},
		// Receive-buffer moderation (auto-tuning): start from the default
		// and grow towards Max while the application keeps up, so bulk
		// responses are not window limited while thousands of short
		// sessions stay small. Conn.Read feeds it (ModerateRecvBuf).
		{"moderate receive buffer", ptr(tcpip.TCPModerateReceiveBufferOption(true))},
		// Buffer ranges. gVisor allocates buffer memory lazily, so these
		// cap how much may queue per endpoint rather than what each
		// endpoint costs. Receive: 1 MiB initially (so the advertised
		// window and its scale let a bulk response flow at full speed from
		// the first RTT), growing to 8 MiB under moderation (the
		// 65535-byte TUN MTU moves well over 1 GB/s: a few ms of that is
		// MiBs). Send: 1 MiB default, 6 MiB max, so a replayed bulk upload
		// is never window limited by our side on a path this short. The
		// same numbers tailscale's netstack settled on after measuring.
		{"receive buffer", &tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}},
		{"send buffer", &tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 6 << 20}},
		// Nagle off (gVisor's default, stated explicitly): a replayed
		// client chunk must leave when it is written, with the captured
		// segmentation as far as possible, not wait for an ACK.
		{"delay", ptr(tcpip.TCPDelayEnabled(false))},
		// Short TIME_WAIT and FIN_WAIT_2: see DefaultTimeWait and
		// DefaultFinWait2Timeout.
		{"time wait", ptr(tcpip.TCPTimeWaitTimeoutOption(opts.TimeWait))},
		{"fin wait 2", ptr(tcpip.TCPLingerTimeoutOption(opts.FinWait2Timeout))},
	}
	for _, o := range tcpOpts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack: set tcp option %s: %s", o.name, err)
		}
	}

	if err := s.CreateNICWithOptions(nicID, st.ep, stack.NICOptions{Name: "tcopy"}); err != nil {
		return fmt.Errorf("netstack: create nic: %s", err)
	}
	if opts.MTU != 0 {
		if err := s.SetNICMTU(nicID, opts.MTU); err != nil {
			return fmt.Errorf("netstack: set mtu %d: %s", opts.MTU, err)
		}
	}
	// Spoofing: send from any source address, not only assigned ones. We
	// assign every source we dial from (acquireAddr), but a connection that
	// outlives its address's assignment (TIME_WAIT after the last conn on
	// that address closed) must still be able to ACK.
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("netstack: enable spoofing: %s", err)
	}
	// Promiscuous: accept packets for any destination address, so a late
	// segment to a released client address still reaches its endpoint (or
	// is answered with RST instead of being silently dropped while the
	// target retransmits), and so a listener on 0.0.0.0 accepts
	// connections to any target address (the in-memory twin's server).
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("netstack: enable promiscuous mode: %s", err)
	}
	// Everything leaves through the one NIC: there is no gateway on a
	// point-to-point TUN.
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return nil
}

func ptr[T any](v T) *T { return &v }

// acquireAddr makes addr a permanent address of the NIC (a /32 or /128) for
// one more user. gVisor resolves the local address of every incoming packet
// and every route: for an assigned address that is a map lookup, for a
// spoofed one it scans the NIC's whole address list and creates a temporary
// address each time (55 % of CPU at 512 sessions, DESIGN.md). Assigning each
// source address used keeps lookups exact.
//
// Callers hold st.mu for reading (so the stack is not closed under them).
func (st *Stack) acquireAddr(addr netip.Addr) error {
	st.addrMu.Lock()
	defer st.addrMu.Unlock()
	if n := st.addrs[addr]; n > 0 {
		st.addrs[addr] = n + 1
		return nil
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          protocolOf(addr),
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(addr), PrefixLen: addr.BitLen()},
	}
	// NeverPrimaryEndpoint: these are client identities, never a source
	// gVisor should pick on its own for some other packet.
	if err := st.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{PEB: stack.NeverPrimaryEndpoint}); err != nil {
		return convertError("bind", err)
	}
	st.addrs[addr] = 1
	return nil
}

// releaseAddr undoes one acquireAddr. When the last user is gone the address
// is removed from the NIC. Endpoints still holding a route through it (a
// connection in TIME_WAIT, say) keep it alive inside gVisor as an expired
// address that still matches exactly, and acquiring it again promotes it back
// to permanent, so removal never breaks a live connection.
func (st *Stack) releaseAddr(addr netip.Addr) {
	st.addrMu.Lock()
	defer st.addrMu.Unlock()
	n := st.addrs[addr]
	switch {
	case n > 1:
		st.addrs[addr] = n - 1
		return
	case n == 1:
		delete(st.addrs, addr)
	default:
		st.logf("netstack: release of unassigned address %s", addr)
		return
	}
	if err := st.s.RemoveAddress(nicID, tcpAddr(addr)); err != nil {
		// After Close the NIC is gone, and with it the address.
		if _, gone := err.(*tcpip.ErrUnknownNICID); !gone {
			st.logf("netstack: remove address %s: %s", addr, err)
		}
	}
}

// Close aborts every connection (an RST for each established one), removes
// the NIC (stopping the link endpoint's goroutines and closing it), destroys
// the stack and waits for all of gVisor's goroutines to exit. It is
// idempotent and always returns nil; it exists as io.Closer.
//
// Conns and listeners from this stack stay valid objects: their operations
// fail (ECONNABORTED, net.ErrClosed) and their Close is still safe to call.
func (st *Stack) Close() error {
	st.closeOnce.Do(func() {
		st.mu.Lock()
		st.closed = true
		st.mu.Unlock()

		// Abort endpoints first, while the link can still carry their RSTs
		// and wake blocked readers and writers.
		st.s.Close()
		// Then the NIC: Attach(nil) stops the link's goroutines, Close
		// releases it.
		if err := st.s.RemoveNIC(nicID); err != nil {
			st.logf("netstack: remove nic: %s", err)
		}
		// Wait for transport endpoints and protocol workers to stop.
		st.s.Wait()
	})
	return nil
}

// protocolOf returns the network protocol number for addr.
func protocolOf(addr netip.Addr) tcpip.NetworkProtocolNumber {
	if addr.Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}

// tcpAddr converts a netip.Addr (already unmapped) to a tcpip.Address.
func tcpAddr(addr netip.Addr) tcpip.Address {
	if addr.Is4() {
		return tcpip.AddrFrom4(addr.As4())
	}
	return tcpip.AddrFrom16(addr.As16())
}
