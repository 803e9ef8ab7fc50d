package replaytest

import (
	"net/netip"
	"sort"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// Conv builds one TCP conversation as a consistent packet sequence: every
// segment carries the sender's next sequence number and acknowledges all
// that the peer has sent, SYN and FIN take one sequence number each.
//
// Methods append packets and return the Conv, so a conversation reads as a
// chain:
//
//	c := replaytest.NewConv("10.0.0.1:40000", "10.1.0.1:8080", t0).
//		Handshake().Send("GET / HTTP/1.1\r\n\r\n").Reply(resp).CloseClient()
//
// Each packet is stamped with the Conv's clock, which then advances by Step;
// Wait adds think time. Addresses may be IPv4 or IPv6 (both the same family).
type Conv struct {
	Client, Server netip.AddrPort
	// MSS is the largest payload per segment; Send and Reply split longer
	// data. 0 means 1460.
	MSS int
	// Step is the time between consecutive packets (default 100µs).
	Step time.Duration
	// Window is the advertised window (default 65535).
	Window uint16

	now        time.Time
	cnext      uint32 // client's next sequence number
	snext      uint32 // server's next sequence number
	cISN, sISN uint32
	pkts       []capture.Packet
}

// NewConv starts a conversation at time start. client and server are
// "ip:port" strings (it panics on a malformed one: it is for tests). The
// initial sequence numbers default to values derived from the ports; use
// ISN to choose them (before the first segment).
func NewConv(client, server string, start time.Time) *Conv {
	c := netip.MustParseAddrPort(client)
	s := netip.MustParseAddrPort(server)
	return NewConvAddr(c, s, start)
}

// NewConvAddr is NewConv with parsed addresses.
func NewConvAddr(client, server netip.AddrPort, start time.Time) *Conv {
	conv := &Conv{Client: client, Server: server, now: start, Step: 100 * time.Microsecond, Window: 65535}
	// Deterministic but distinct per connection, and far from 0 so that
	// an off-by-one in someone's arithmetic does not hide behind zeros.
	h := uint64(client.Port())<<16 | uint64(server.Port())
	for _, b := range client.Addr().As16() {
		h = h*131 + uint64(b)
	}
	conv.ISN(mix(h), mix(h^0x5bd1e995))
	return conv
}

// mix is splitmix64's finaliser: a cheap, well-spread hash.
func mix(x uint64) uint32 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return uint32(x)
}

// ISN sets both initial sequence numbers. Call it before the first segment.
func (c *Conv) ISN(client, server uint32) *Conv {
	c.cISN, c.sISN = client, server
	c.cnext, c.snext = client, server
	return c
}

// ClientISN and ServerISN return the initial sequence numbers.
func (c *Conv) ClientISN() uint32 { return c.cISN }
func (c *Conv) ServerISN() uint32 { return c.sISN }

// ClientNext and ServerNext return the next sequence number each side will
// send.
func (c *Conv) ClientNext() uint32 { return c.cnext }
func (c *Conv) ServerNext() uint32 { return c.snext }

// Now is the time the next packet will carry.
func (c *Conv) Now() time.Time { return c.now }

// Wait advances the clock by d (think time, a network delay).
func (c *Conv) Wait(d time.Duration) *Conv { c.now = c.now.Add(d); return c }

// At sets the clock (it may go backwards, for reordering tests).
func (c *Conv) At(t time.Time) *Conv { c.now = t; return c }

// Seg appends one segment with the given flags and payload from the client
// (fromClient) or the server, with the current sequence numbers; ACK
// segments acknowledge everything the peer has sent. It advances the
// sender's sequence number by the payload, plus one for SYN and FIN.
func (c *Conv) Seg(fromClient bool, flags capture.Flags, payload []byte) *Conv {
	p := capture.Packet{Time: c.now, Flags: flags, Window: c.Window}
	if len(payload) > 0 {
		p.Payload = append([]byte(nil), payload...)
	}
	adv := uint32(len(payload))
	if flags&capture.SYN != 0 {
		adv++
	}
	if flags&capture.FIN != 0 {
		adv++
	}
	if fromClient {
		p.Src, p.Dst, p.Seq = c.Client, c.Server, c.cnext
		if flags&capture.ACK != 0 {
			p.Ack = c.snext
		}
		c.cnext += adv
	} else {
		p.Src, p.Dst, p.Seq = c.Server, c.Client, c.snext
		if flags&capture.ACK != 0 {
			p.Ack = c.cnext
		}
		c.snext += adv
	}
	c.pkts = append(c.pkts, p)
	c.now = c.now.Add(c.Step)
	return c
}

// Handshake appends SYN, SYN-ACK and ACK.
func (c *Conv) Handshake() *Conv {
	return c.Seg(true, capture.SYN, nil).Seg(false, capture.SYN|capture.ACK, nil).Seg(true, capture.ACK, nil)
}

func (c *Conv) mss() int {
	if c.MSS > 0 {
		return c.MSS
	}
	return 1460
}

func (c *Conv) data(fromClient bool, data []byte) *Conv {
	m := c.mss()
	for len(data) > 0 {
		n := min(len(data), m)
		f := capture.ACK
		if n == len(data) {
			f |= capture.PSH
		}
		c.Seg(fromClient, f, data[:n])
		data = data[n:]
	}
	return c
}

// Send appends the client's data in segments of at most MSS bytes (ACK, and
// PSH on the last).
func (c *Conv) Send(data string) *Conv { return c.data(true, []byte(data)) }

// SendBytes is Send for a byte slice.
func (c *Conv) SendBytes(data []byte) *Conv { return c.data(true, data) }

// Reply appends the server's data like Send.
func (c *Conv) Reply(data string) *Conv { return c.data(false, []byte(data)) }

// ReplyBytes is Reply for a byte slice.
func (c *Conv) ReplyBytes(data []byte) *Conv { return c.data(false, data) }

// ClientAck and ServerAck append a pure ACK.
func (c *Conv) ClientAck() *Conv { return c.Seg(true, capture.ACK, nil) }
func (c *Conv) ServerAck() *Conv { return c.Seg(false, capture.ACK, nil) }

// CloseClient appends a close initiated by the client: FIN, the server's
// FIN, the client's last ACK.
func (c *Conv) CloseClient() *Conv {
	return c.Seg(true, capture.FIN|capture.ACK, nil).Seg(false, capture.FIN|capture.ACK, nil).Seg(true, capture.ACK, nil)
}

// CloseServer appends a close initiated by the server.
func (c *Conv) CloseServer() *Conv {
	return c.Seg(false, capture.FIN|capture.ACK, nil).Seg(true, capture.FIN|capture.ACK, nil).Seg(false, capture.ACK, nil)
}

// ResetClient and ResetServer append an RST (with ACK) from that side.
func (c *Conv) ResetClient() *Conv { return c.Seg(true, capture.RST|capture.ACK, nil) }
func (c *Conv) ResetServer() *Conv { return c.Seg(false, capture.RST|capture.ACK, nil) }

// Packets returns a copy of the packets so far, numbered 1.. in order (N).
func (c *Conv) Packets() []capture.Packet {
	out := make([]capture.Packet, len(c.pkts))
	for i, p := range c.pkts {
		p.N = i + 1
		p.Payload = append([]byte(nil), p.Payload...)
		out[i] = p
	}
	return out
}

// Merge interleaves the packets of several conversations by time (stable:
// equal times keep argument order) and renumbers them 1.. (N).
func Merge(convs ...[]capture.Packet) []capture.Packet {
	var all []capture.Packet
	for _, c := range convs {
		all = append(all, c...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	for i := range all {
		all[i].N = i + 1
	}
	return all
}
