package nstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tcopy-tun/tcopy-tun/netstack"
)

// Dir is the direction a packet travels on the in-memory wire.
type Dir int

const (
	// ClientToServer: sent by Pair.Client, received by Pair.Server.
	ClientToServer Dir = iota
	// ServerToClient: sent by Pair.Server, received by Pair.Client.
	ServerToClient
)

func (d Dir) String() string {
	switch d {
	case ClientToServer:
		return "client->server"
	case ServerToClient:
		return "server->client"
	}
	return fmt.Sprintf("Dir(%d)", int(d))
}

// Verdict is a Hook's decision about one packet. The zero Verdict passes the
// packet on at once.
type Verdict struct {
	// Drop discards the packet.
	Drop bool
	// Delay holds the packet back before delivery. Packets delayed by
	// different amounts may overtake each other, as on a real network.
	Delay time.Duration
}

// Hook sees every packet on the wire before it is delivered. pkt is a
// complete IP packet (IPv4 or IPv6, checksums filled in) that is valid only
// during the call: copy what you keep (ParseTCP copies nothing it returns
// a reference to). A Hook is called from both directions' goroutines at
// once, so it must be safe for concurrent use, and it must not block.
type Hook func(dir Dir, pkt []byte) Verdict

// Options configures a Pair. The zero value is valid.
type Options struct {
	// MTU of the wire (65535 if zero, like the product's TUN).
	MTU uint32
	// Client and Server configure the two stacks. A nil Logf logs to the
	// test's log.
	Client, Server netstack.Options
	// Hook, if set, is installed from the start (see Pair.SetHook).
	Hook Hook
	// QueueLen is each direction's queue length in packets (8192 if zero).
	// A full queue drops packets, as a full device queue does.
	QueueLen int
	// ClientTap, if set, sees every packet of the client stack through
	// netstack.NewTapEndpoint, as --write-pcap does on the TUN.
	ClientTap netstack.Tap
}

// Pair is two netstack stacks joined by an in-memory wire. The replayer
// dials through Client (any source address, any destination address); the
// test's servers listen on Server (Listen), which accepts connections from
// any client address to any address it listens on. Packets are real IP
// packets: hooks can sniff, drop and delay them.
//
// Close (also registered with t.Cleanup) stops the wire and closes both
// stacks; it leaves no goroutines behind.
type Pair struct {
	Client *netstack.Stack
	Server *netstack.Stack

	hook      atomic.Pointer[Hook]
	clientEP  *channel.Endpoint
	serverEP  *channel.Endpoint
	cancel    context.CancelFunc
	ctx       context.Context
	wg        sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once
}

// NewPair builds a Pair and registers its Close with t.Cleanup. It fails the
// test if a stack cannot be built.
func NewPair(t testing.TB, opts Options) *Pair {
	t.Helper()
	if opts.MTU == 0 {
		opts.MTU = 65535
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = 8192
	}
	p := &Pair{}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if opts.Hook != nil {
		p.SetHook(opts.Hook)
	}
	logf := func(format string, args ...any) {
		// t.Logf panics once the test has finished; stop logging at Close.
		if !p.closed.Load() {
			t.Logf(format, args...)
		}
	}
	if opts.Client.Logf == nil {
		opts.Client.Logf = logf
	}
	if opts.Server.Logf == nil {
		opts.Server.Logf = logf
	}

	p.clientEP = newWireEndpoint(opts.QueueLen, opts.MTU)
	p.serverEP = newWireEndpoint(opts.QueueLen, opts.MTU)
	var err error
	var clientEP stack.LinkEndpoint = p.clientEP
	if opts.ClientTap != nil {
		clientEP = netstack.NewTapEndpoint(clientEP, opts.ClientTap)
	}
	if p.Client, err = netstack.New(clientEP, opts.Client); err != nil {
		t.Fatalf("nstest: client stack: %v", err)
	}
	if p.Server, err = netstack.New(p.serverEP, opts.Server); err != nil {
		p.Client.Close()
		t.Fatalf("nstest: server stack: %v", err)
	}
	p.wg.Add(2)
	go p.relay(p.clientEP, p.serverEP, ClientToServer)
	go p.relay(p.serverEP, p.clientEP, ServerToClient)
	t.Cleanup(p.Close)
	return p
}

func newWireEndpoint(queueLen int, mtu uint32) *channel.Endpoint {
	ep := channel.New(queueLen, mtu, "")
	// Like the product's TUN endpoints: packets arriving from the wire
	// carry valid checksums (the sender computed them: TX offload is never
	// claimed), so verifying them again is skipped.
	ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	return ep
}

// Listen listens on the server stack; see netstack.Stack.ListenTCP. A
// specific address becomes one of the server's addresses; 0.0.0.0:port (or
// [::]:port) accepts connections to any destination address.
func (p *Pair) Listen(addr netip.AddrPort) (net.Listener, error) {
	l, err := p.Server.ListenTCP(addr)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// SetHook replaces the hook (nil removes it). Packets already delayed keep
// their delay.
func (p *Pair) SetHook(h Hook) {
	if h == nil {
		p.hook.Store(nil)
		return
	}
	p.hook.Store(&h)
}

// Inject delivers pkt (a complete IP packet, copied) as if it had travelled
// in dir: ClientToServer delivers it to the server stack. It bypasses the
// hook. Tests use it to forge ICMP errors or stray segments.
func (p *Pair) Inject(dir Dir, pkt []byte) {
	to := p.serverEP
	if dir == ServerToClient {
		to = p.clientEP
	}
	deliver(to, buffer.NewViewWithData(pkt))
}

// relay moves packets from one stack's outbound queue to the other's
// inbound side until Close.
func (p *Pair) relay(from, to *channel.Endpoint, dir Dir) {
	defer p.wg.Done()
	for {
		pkt := from.ReadContext(p.ctx)
		if pkt == nil {
			return // Close
		}
		// A copy, so the two stacks never share packet memory, as across
		// a real device.
		v := pkt.ToView()
		pkt.DecRef()
		var verdict Verdict
		if h := p.hook.Load(); h != nil {
			verdict = (*h)(dir, v.AsSlice())
		}
		switch {
		case verdict.Drop:
			v.Release()
		case verdict.Delay > 0:
			p.wg.Add(1)
			go p.deliverLater(to, v, verdict.Delay)
		default:
			deliver(to, v)
		}
	}
}

func (p *Pair) deliverLater(to *channel.Endpoint, v *buffer.View, d time.Duration) {
	defer p.wg.Done()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		deliver(to, v)
	case <-p.ctx.Done():
		v.Release()
	}
}

// deliver hands a packet to a stack; it takes ownership of v.
func deliver(to *channel.Endpoint, v *buffer.View) {
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(v.AsSlice()) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		v.Release()
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	to.InjectInbound(proto, pkt)
	pkt.DecRef()
}

// Close stops the wire (delayed packets are dropped), then closes both
// stacks. It is idempotent.
func (p *Pair) Close() {
	p.closeOnce.Do(func() {
		p.cancel()
		p.wg.Wait()
		p.Client.Close()
		p.Server.Close()
		p.closed.Store(true)
	})
}
