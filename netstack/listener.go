package netstack

import (
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog matches Linux's default somaxconn: a burst of replayed
// sessions must not see SYNs dropped by a short accept queue.
const listenBacklog = 4096

// Listener is a TCP listener on a Stack. It implements net.Listener; Accept
// returns *Conn values (owned by the caller).
type Listener struct {
	st      *Stack
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	addr    *net.TCPAddr
	release netip.Addr

	entry waiter.Entry
	ch    chan struct{}

	done      chan struct{}
	closeOnce sync.Once
}

// ListenTCP listens on addr. A specific address is assigned to the NIC (like
// a dialled source, see DialTCP) for as long as the listener is open. An
// unspecified address listens on every address: 0.0.0.0 for IPv4 only, ::
// or the zero Addr for IPv4 and IPv6; since the NIC is promiscuous, that
// accepts connections to any destination address. Port 0 picks a free port
// (see Addr).
func (st *Stack) ListenTCP(addr netip.AddrPort) (*Listener, error) {
	ip := addr.Addr().Unmap()
	fail := func(err error) error {
		return &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.closed {
		return nil, fail(ErrClosed)
	}

	proto := header.IPv6ProtocolNumber
	if ip.Is4() {
		proto = header.IPv4ProtocolNumber
	}
	var local tcpip.FullAddress
	local.Port = addr.Port()
	var release netip.Addr
	if ip.IsValid() && !ip.IsUnspecified() {
		if err := st.acquireAddr(ip); err != nil {
			return nil, fail(err)
		}
		release = ip
		local.Addr = tcpAddr(ip)
		local.NIC = nicID
	}
	l := &Listener{st: st, wq: new(waiter.Queue), release: release, ch: make(chan struct{}, 1), done: make(chan struct{})}
	ep, terr := st.s.NewEndpoint(tcp.ProtocolNumber, proto, l.wq)
	if terr != nil {
		if release.IsValid() {
			st.releaseAddr(release)
		}
		return nil, fail(convertError("socket", terr))
	}
	l.ep = ep
	l.entry.Init(waiter.ChannelNotifier(l.ch), waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr)
	l.wq.EventRegister(&l.entry)
	if !ip.IsValid() || ip == netip.IPv6Unspecified() {
		// Dual stack, as a Go listener on ":port" is.
		ep.SocketOptions().SetV6Only(false)
	}
	// Restarting a server on the same port must not wait for TIME_WAIT.
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(local); terr != nil {
		l.Close()
		return nil, fail(convertError("bind", terr))
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		l.Close()
		return nil, fail(convertError("listen", terr))
	}
	if a, terr := ep.GetLocalAddress(); terr == nil {
		l.addr = fullToTCPAddr(a)
	} else {
		l.addr = net.TCPAddrFromAddrPort(addr)
	}
	return l, nil
}

// Accept implements net.Listener. After Close it returns an error matching
// net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		select {
		case <-l.done:
			return nil, l.opError(net.ErrClosed)
		default:
		}
		ep, wq, terr := l.ep.Accept(nil)
		switch terr.(type) {
		case nil:
			c := newConn(l.st, ep, wq, [2]netip.Addr{})
			c.setAddrs()
			return c, nil
		case *tcpip.ErrWouldBlock:
			select {
			case <-l.ch:
			case <-l.done:
			}
		default:
			return nil, l.opError(convertError("accept", terr))
		}
	}
}

func (l *Listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
}

// Close stops listening; connections already accepted stay open. It is
// idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.wq.EventUnregister(&l.entry)
		l.ep.Close()
		if l.release.IsValid() {
			l.st.releaseAddr(l.release)
		}
	})
	return nil
}

// Addr implements net.Listener; the port is the one actually bound.
func (l *Listener) Addr() net.Addr { return l.addr }
