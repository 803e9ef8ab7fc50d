package session

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// streamByte is the byte every generated segment carries at sequence number
// seq of one direction of one 4-tuple, whatever incarnation of the 4-tuple
// sends it. A chunk byte that differs from it was invented or misplaced.
func streamByte(tuple int, server bool, seq uint32) byte {
	x := uint32(tuple)*0x9e3779b9 ^ seq*0x85ebca6b
	if server {
		x ^= 0xc2b2ae35
	}
	x ^= x >> 15
	x *= 0x27d4eb2d
	x ^= x >> 13
	return byte(x)
}

// fuzzTuples are the 4-tuples a fuzz input plays with: two share a server,
// one has both ports high (direction by inference).
var fuzzTuples = [...]struct{ c, s netip.AddrPort }{
	{netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")},
	{netip.MustParseAddrPort("10.0.0.3:40001"), netip.MustParseAddrPort("10.0.0.2:80")},
	{netip.MustParseAddrPort("[2001:db8::1]:50000"), netip.MustParseAddrPort("[2001:db8::2]:45000")},
}

// fuzzPackets turns fuzz input into a packet sequence: segments cut from
// per-direction streams at positions near each incarnation's ISNs, with
// retransmissions, overlaps, reordering, losses, snap-length cuts, stray
// flags and timing jumps.
func fuzzPackets(data []byte) (Config, []capture.Packet) {
	rd := func(n int) uint64 {
		var v uint64
		for i := 0; i < n; i++ {
			v <<= 8
			if len(data) > 0 {
				v |= uint64(data[0])
				data = data[1:]
			}
		}
		return v
	}
	var cfg Config
	switch rd(1) % 4 {
	case 1:
		cfg.OutOfOrderLimit = 64
	case 2:
		cfg.ServerDataLimit = 16
		cfg.MergeWindow = -1
	case 3:
		cfg.IdleTimeout = time.Second
		cfg.Linger = 100 * time.Millisecond
	}
	type inc struct{ ci, si uint32 } // ISNs of the current incarnation
	var incs [len(fuzzTuples)]inc
	for i := range incs {
		incs[i] = inc{uint32(rd(4)), uint32(rd(4))}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var pkts []capture.Packet
	for len(data) > 0 && len(pkts) < 400 {
		op := rd(1)
		t := int(op>>4) % len(fuzzTuples)
		server := op&8 != 0
		in := &incs[t]
		p := capture.Packet{N: len(pkts) + 1, Src: fuzzTuples[t].c, Dst: fuzzTuples[t].s, Window: 65535}
		send, recv := in.ci, in.si
		if server {
			p.Src, p.Dst = p.Dst, p.Src
			send, recv = recv, send
		}
		switch op & 7 {
		case 0: // handshake packet of this incarnation, or a new one
			if rd(1)%4 == 0 {
				in.ci, in.si = uint32(rd(4)), uint32(rd(4))
				send, recv = in.ci, in.si
				if server {
					send, recv = recv, send
				}
			}
			p.Flags = capture.SYN
			p.Seq = send
			if server {
				p.Flags |= capture.ACK
				p.Ack = recv + 1 + uint32(rd(1)%4)
			}
		case 1, 2, 3: // data near the start of the stream
			off := uint32(rd(2) % 2048)
			n := int(rd(1) % 200)
			p.Seq = send + 1 + off
			p.Flags = capture.ACK | capture.PSH
			p.Ack = recv + 1 + uint32(rd(2)%2048)
			if op&7 == 3 {
				p.Missing = int(rd(1) % 64)
			}
			p.Payload = make([]byte, n)
			for i := range p.Payload {
				p.Payload[i] = streamByte(t, server, p.Seq+uint32(i))
			}
		case 4: // FIN
			p.Flags = capture.FIN | capture.ACK
			p.Seq = send + 1 + uint32(rd(2)%2048)
			p.Ack = recv + 1 + uint32(rd(2)%2048)
		case 5: // RST, sometimes out of window
			p.Flags = capture.RST
			p.Seq = send + 1 + uint32(rd(2)%4096)
			if rd(1)%2 == 0 {
				p.Flags |= capture.ACK
				p.Ack = recv + 1 + uint32(rd(2)%2048)
			}
		case 6: // pure ACK
			p.Flags = capture.ACK
			p.Seq = send + 1 + uint32(rd(2)%2048)
			p.Ack = recv + 1 + uint32(rd(2)%2048)
		case 7: // a data segment from an unrelated sequence space
			p.Seq = uint32(rd(4))
			p.Ack = uint32(rd(4))
			p.Flags = capture.Flags(rd(1)) &^ (capture.SYN | capture.RST)
			p.Payload = make([]byte, rd(1)%64)
			for i := range p.Payload {
				p.Payload[i] = streamByte(t, server, p.Seq+uint32(i))
			}
		}
		// Time mostly advances a little, sometimes a lot, sometimes back.
		switch d := rd(1); {
		case d < 200:
			now = now.Add(time.Duration(d) * 100 * time.Microsecond)
		case d < 250:
			now = now.Add(time.Duration(d) * 100 * time.Millisecond)
		default:
			now = now.Add(-time.Duration(d) * time.Millisecond)
		}
		p.Time = now
		pkts = append(pkts, p)
	}
	return cfg, pkts
}

// FuzzBuilder feeds random packet sequences and checks the invariants: no
// panic; IDs dense; chunk times and ServerBytesBefore never decrease;
// chunks and holes account for the stream; nothing invented (every chunk
// byte and every kept server byte is the byte sent at that sequence
// number).
func FuzzBuilder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0, 0x08, 0, 0x01, 0, 5, 10, 0, 1, 0x09, 0, 0, 40, 0, 9, 1})
	f.Add(binary.BigEndian.AppendUint64(nil, 0xfffffff0fffffff8))
	seed := []byte{1, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for i := 0; i < 40; i++ {
		seed = append(seed, byte(i*37), byte(i), byte(i*3), byte(i*11), byte(100+i), byte(i*5), byte(i*7))
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, pkts := fuzzPackets(data)
		var got []*Session
		// The stream contract is checked as the events come (logSink),
		// then the events are rebuilt into sessions (Collect).
		l := newLogSink(t)
		l.after = Collect(func(s *Session) { got = append(got, s) })
		b := NewBuilder(cfg, l)
		for i := range pkts {
			p := pkts[i]
			b.Add(&p)
		}
		b.Close()
		b.Close() // idempotent

		// The same packets as a live capture (PSH and capture time seal
		// chunks, a ticker advances time between packets): the stream
		// contract and the session invariants hold there too.
		lcfg := cfg
		lcfg.Live = true
		ll := newLogSink(t)
		ll.after = Collect(func(s *Session) { checkInvariants(t, s) })
		lb := NewBuilder(lcfg, ll)
		for i := range pkts {
			p := pkts[i]
			lb.Add(&p)
			if i%3 == 0 {
				lb.Advance(p.Time.Add(time.Duration(i%7) * time.Millisecond))
			}
		}
		lb.Close()
		if st := lb.Stats(); st.Sessions != ll.nextEQ || st.Open != 0 {
			t.Fatalf("live: stats %+v after %d ends", st, ll.nextEQ)
		}
		for i, s := range got {
			if s.ID != uint64(i) {
				t.Fatalf("session %d has ID %d", i, s.ID)
			}
			checkInvariants(t, s)
			tuple := -1
			for j, tp := range fuzzTuples {
				if (s.Client == tp.c && s.Server == tp.s) || (s.Client == tp.s && s.Server == tp.c) {
					tuple = j
				}
			}
			if tuple < 0 {
				t.Fatalf("session %d: unknown endpoints %v %v", i, s.Client, s.Server)
			}
			// The generator's "server" is the tuple's s side: if the
			// builder inferred the other way round, its client stream is
			// the generator's server stream.
			clientIsServer := s.Client == fuzzTuples[tuple].s
			for k, c := range s.Chunks {
				for j, x := range c.Data {
					seq := s.ISN + 1 + uint32(c.StreamOffset) + uint32(j)
					if want := streamByte(tuple, clientIsServer, seq); x != want {
						t.Fatalf("session %d chunk %d byte %d (seq %d) is %#x, was sent as %#x", i, k, j, seq, x, want)
					}
				}
			}
			s.ServerSegments(func(off int64, data []byte) {
				for j, x := range data {
					seq := s.ServerISN + 1 + uint32(off) + uint32(j)
					if want := streamByte(tuple, !clientIsServer, seq); x != want {
						t.Fatalf("session %d server byte at offset %d (seq %d) is %#x, was sent as %#x", i, off+int64(j), seq, x, want)
					}
				}
			})
		}
		if st := b.Stats(); st.Sessions != uint64(len(got)) || st.Open != 0 {
			t.Fatalf("stats after Close: %+v with %d sessions", st, len(got))
		}
	})
}
