package replaytest_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

var t0 = time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)

// TestConvSequence checks the builder's sequence arithmetic step by step.
func TestConvSequence(t *testing.T) {
	c := rt.NewConv("10.0.0.1:1000", "10.0.0.2:80", t0).ISN(100, 5000)
	c.MSS = 4
	c.Handshake().Send("abcdefghij").Reply("xyz").Wait(time.Second).CloseClient()
	type step struct {
		client   bool
		flags    capture.Flags
		seq, ack uint32
		payload  string
	}
	A, S, F, P := capture.ACK, capture.SYN, capture.FIN, capture.PSH
	want := []step{
		{true, S, 100, 0, ""},
		{false, S | A, 5000, 101, ""},
		{true, A, 101, 5001, ""},
		{true, A, 101, 5001, "abcd"},
		{true, A, 105, 5001, "efgh"},
		{true, A | P, 109, 5001, "ij"},
		{false, A | P, 5001, 111, "xyz"},
		{true, F | A, 111, 5004, ""},
		{false, F | A, 5004, 112, ""},
		{true, A, 112, 5005, ""},
	}
	got := c.Packets()
	if len(got) != len(want) {
		t.Fatalf("%d packets, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		src := c.Server
		if w.client {
			src = c.Client
		}
		if g.Src != src || g.Flags != w.flags || g.Seq != w.seq || g.Ack != w.ack || string(g.Payload) != w.payload || g.N != i+1 {
			t.Errorf("packet %d: %v %#x seq %d ack %d %q, want from %v %#x %d %d %q", i+1, g.Src, g.Flags, g.Seq, g.Ack, g.Payload, src, w.flags, w.seq, w.ack, w.payload)
		}
	}
	if !got[7].Time.Equal(got[6].Time.Add(c.Step + time.Second)) {
		t.Errorf("Wait did not add a gap: %v then %v", got[6].Time, got[7].Time)
	}
	if c.ClientNext() != 112 || c.ServerNext() != 5005 {
		t.Errorf("next %d/%d", c.ClientNext(), c.ServerNext())
	}
}

func TestConvWrapAndReset(t *testing.T) {
	c := rt.NewConv("[fd00::1]:1000", "[fd00::2]:80", t0).ISN(0xfffffffe, 1)
	c.Handshake().Send("hello").ResetServer()
	p := c.Packets()
	if p[3].Seq != 0xffffffff || p[4].Seq != 2 || p[4].Ack != 4 || p[4].Flags != capture.RST|capture.ACK {
		t.Fatalf("wrap: %+v %+v", p[3], p[4])
	}
}

func TestMerge(t *testing.T) {
	a := rt.NewConv("10.0.0.1:1", "10.0.0.9:80", t0).Handshake().Packets()
	b := rt.NewConv("10.0.0.2:1", "10.0.0.9:80", t0.Add(150*time.Microsecond)).Handshake().Packets()
	m := rt.Merge(a, b)
	for i := 1; i < len(m); i++ {
		if m[i].Time.Before(m[i-1].Time) || m[i].N != i+1 {
			t.Fatalf("merge out of order at %d", i)
		}
	}
	if m[2].Src != b[0].Src || m[1].Src != a[1].Src {
		t.Fatalf("interleaving wrong: %v %v %v", m[0].Src, m[1].Src, m[2].Src)
	}
}

// TestEncodingWithGopacket decodes the encoders' output with gopacket, an
// independent implementation, with checksum verification.
func TestEncodingWithGopacket(t *testing.T) {
	for _, cl := range []string{"10.0.0.1:1000", "[2001:db8::1]:1000"} {
		sv := "10.0.0.2:80"
		if strings.HasPrefix(cl, "[") {
			sv = "[2001:db8::2]:80"
		}
		pkts := rt.SmallHTTP(cl, sv).Packets()
		for _, lt := range []layers.LinkType{rt.LinkEthernet, rt.LinkSLL, rt.LinkRaw, rt.LinkNull, rt.LinkLoop} {
			frames, err := rt.Frames(lt, pkts)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range frames {
				gp := gopacket.NewPacket(f.Data, lt, gopacket.Default)
				if el := gp.ErrorLayer(); el != nil {
					t.Fatalf("%v frame %d: gopacket: %v", lt, i+1, el.Error())
				}
				tcp, _ := gp.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if tcp == nil {
					t.Fatalf("%v frame %d: no TCP layer (%v)", lt, i+1, gp)
				}
				p := pkts[i]
				if tcp.Seq != p.Seq || tcp.Ack != p.Ack || uint16(tcp.SrcPort) != p.Src.Port() || !bytes.Equal(tcp.Payload, p.Payload) ||
					tcp.SYN != (p.Flags&capture.SYN != 0) || tcp.FIN != (p.Flags&capture.FIN != 0) || tcp.PSH != (p.Flags&capture.PSH != 0) {
					t.Fatalf("%v frame %d: gopacket sees %+v", lt, i+1, tcp)
				}
				if err := verifyChecksums(gp); err != nil {
					t.Fatalf("%v frame %d: %v", lt, i+1, err)
				}
			}
		}
	}
}

func verifyChecksums(gp gopacket.Packet) error {
	tcp := gp.Layer(layers.LayerTypeTCP).(*layers.TCP)
	var nl gopacket.NetworkLayer
	if ip4, ok := gp.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		want := ip4.Checksum
		buf := gopacket.NewSerializeBuffer()
		cp := *ip4
		if err := cp.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
			return err
		}
		if cp.Checksum != want {
			return fmt.Errorf("ipv4 checksum %#x, want %#x", want, cp.Checksum)
		}
		nl = ip4
	} else {
		nl = gp.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	}
	want := tcp.Checksum
	cp := *tcp
	cp.SetNetworkLayerForChecksum(nl)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &cp, gopacket.Payload(tcp.Payload)); err != nil {
		return err
	}
	if cp.Checksum != want {
		return fmt.Errorf("tcp checksum %#x, want %#x", want, cp.Checksum)
	}
	return nil
}

// TestDemo checks the demo capture's promises: 20 sessions to the server,
// several clients, the response convention, ~2 s.
func TestDemo(t *testing.T) {
	sessions := rt.DemoSessions()
	if len(sessions) != 20 {
		t.Fatalf("%d sessions", len(sessions))
	}
	clients := map[string]bool{}
	var closes, posts, pipelined, keepalive int
	for _, s := range sessions {
		clients[s.Client.Addr().String()] = true
		if s.Pipelined {
			pipelined++
		}
		if len(s.Requests) > 1 {
			keepalive++
		}
		for _, r := range s.Requests {
			if r.Close {
				closes++
			}
			if r.Method == "POST" {
				posts++
				if !strings.HasSuffix(r.Response(), "got "+strconv.Itoa(len(r.Body))+" bytes\n") {
					t.Errorf("POST response %q", r.Response())
				}
			} else if !strings.HasSuffix(r.Response(), "\r\n\r\nhello "+r.Path+"\n") {
				t.Errorf("GET response %q", r.Response())
			}
			if strings.Contains(r.Response(), "Connection: close") != r.Close {
				t.Errorf("Connection: close mismatch for %+v", r)
			}
		}
	}
	if len(clients) < 3 || closes < 5 || posts < 1 || pipelined != 1 || keepalive < 5 {
		t.Errorf("clients %d closes %d posts %d pipelined %d keepalive %d", len(clients), closes, posts, pipelined, keepalive)
	}
	pkts := rt.DemoPackets()
	span := pkts[len(pkts)-1].Time.Sub(pkts[0].Time)
	if span < 1500*time.Millisecond || span > 3*time.Second {
		t.Errorf("capture spans %v, want about 2 s", span)
	}
	if got := rt.HTTPResponse("GET", "/a", 0, true); got != "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nhello /a\n" {
		t.Errorf("HTTPResponse = %q", got)
	}
	// The server's byte stream of each session is exactly its responses.
	for _, s := range sessions {
		var want, got strings.Builder
		for _, r := range s.Requests {
			want.WriteString(r.Response())
		}
		for _, p := range pkts {
			if p.Src == rt.DemoServer() && p.Dst == s.Client {
				got.Write(p.Payload)
			}
		}
		if got.String() != want.String() {
			t.Errorf("session %v: server stream %q, want %q", s.Client, got.String(), want.String())
		}
	}
}
