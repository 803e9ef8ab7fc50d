package session

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// A step table describes segments in capture order with sequence numbers
// relative to each side's ISN (1 = first data byte, as Wireshark shows
// them), and the sessions expected out.

// tuple is one connection of a table: endpoints and ISNs.
type tuple struct {
	c, s   netip.AddrPort
	ci, si uint32 // client and server ISN
}

type step struct {
	ms   int    // capture time in milliseconds from t0
	conn int    // index into the table's tuples
	dir  byte   // 'c': client → server, 's': server → client
	fl   string // S A P F R
	seq  uint32 // relative to the sender's ISN
	ack  uint32 // relative to the receiver's ISN
	data string
	miss int // bytes cut by the snap length after data
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var defaultTuple = tuple{c: ap("10.0.0.1:40000"), s: ap("10.0.0.2:80"), ci: 1000, si: 5000}

func (st step) packet(tuples []tuple) *capture.Packet {
	tp := tuples[st.conn]
	p := &capture.Packet{N: 1, Time: t0.Add(time.Duration(st.ms) * time.Millisecond), Payload: []byte(st.data), Missing: st.miss, Window: 65535}
	sendISN, recvISN := tp.ci, tp.si
	p.Src, p.Dst = tp.c, tp.s
	if st.dir == 's' {
		sendISN, recvISN = tp.si, tp.ci
		p.Src, p.Dst = tp.s, tp.c
	}
	for _, f := range st.fl {
		switch f {
		case 'S':
			p.Flags |= capture.SYN
		case 'A':
			p.Flags |= capture.ACK
		case 'P':
			p.Flags |= capture.PSH
		case 'F':
			p.Flags |= capture.FIN
		case 'R':
			p.Flags |= capture.RST
		}
	}
	p.Seq = sendISN + st.seq
	if p.Flags&capture.ACK != 0 {
		p.Ack = recvISN + st.ack
	}
	return p
}

// runSteps feeds the steps to a Builder and returns the sessions emitted,
// with the number of steps that had been added when each was emitted.
func runSteps(t testing.TB, cfg Config, tuples []tuple, steps []step) ([]*Session, []int, *Builder) {
	t.Helper()
	if tuples == nil {
		tuples = []tuple{defaultTuple}
	}
	var out []*Session
	var at []int
	added := 0
	b := NewBuilder(cfg, Collect(func(s *Session) {
		out = append(out, s)
		at = append(at, added)
	}))
	for _, st := range steps {
		p := st.packet(tuples)
		payload := p.Payload
		b.Add(p)
		added++
		// The builder must not keep the payload: scribble over it.
		for i := range payload {
			payload[i] = '#'
		}
	}
	b.Close()
	for i, s := range out {
		if s.ID != uint64(i) {
			t.Fatalf("session %d has ID %d", i, s.ID)
		}
	}
	return out, at, b
}

// want is the expected shape of a session. Chunks are written
// "ms:serverBytesBefore@streamOffset:data".
type want struct {
	client, server string // defaults: the default tuple
	chunks         []string
	serverData     string
	clientBytes    int64
	serverBytes    int64
	end            End
	flags          Flags
	holes          []Hole
	endedBefore    uint64
	start          int // ms
	duration       int // ms, -1: do not check
}

func chunkString(s *Session, c Chunk) string {
	return fmt.Sprintf("%d:%d@%d:%s", c.Offset.Milliseconds(), c.ServerBytesBefore, c.StreamOffset, c.Data)
}

func checkSession(t *testing.T, s *Session, w want) {
	t.Helper()
	var got []string
	for _, c := range s.Chunks {
		got = append(got, chunkString(s, c))
	}
	if !slices.Equal(got, w.chunks) {
		t.Errorf("session %d chunks:\n got %q\nwant %q", s.ID, got, w.chunks)
	}
	if string(s.ServerData) != w.serverData {
		t.Errorf("session %d server data %q, want %q", s.ID, s.ServerData, w.serverData)
	}
	if s.ClientBytes != w.clientBytes || s.ServerBytes != w.serverBytes {
		t.Errorf("session %d bytes client %d server %d, want %d %d", s.ID, s.ClientBytes, s.ServerBytes, w.clientBytes, w.serverBytes)
	}
	if s.End != w.end {
		t.Errorf("session %d end %v, want %v", s.ID, s.End, w.end)
	}
	if s.Flags != w.flags {
		t.Errorf("session %d flags %v, want %v", s.ID, s.Flags, w.flags)
	}
	if !slices.Equal(s.Holes, w.holes) {
		t.Errorf("session %d holes %+v, want %+v", s.ID, s.Holes, w.holes)
	}
	if s.EndedBefore != w.endedBefore {
		t.Errorf("session %d EndedBefore %d, want %d", s.ID, s.EndedBefore, w.endedBefore)
	}
	if got := s.Start.Sub(t0); got != time.Duration(w.start)*time.Millisecond {
		t.Errorf("session %d start %v, want %dms", s.ID, got, w.start)
	}
	if w.duration >= 0 && s.Duration != time.Duration(w.duration)*time.Millisecond {
		t.Errorf("session %d duration %v, want %dms", s.ID, s.Duration, w.duration)
	}
	wc, ws := w.client, w.server
	if wc == "" {
		wc, ws = defaultTuple.c.String(), defaultTuple.s.String()
	}
	if s.Client.String() != wc || s.Server.String() != ws {
		t.Errorf("session %d %v → %v, want %s → %s", s.ID, s.Client, s.Server, wc, ws)
	}
	checkInvariants(t, s)
}

// checkInvariants holds for every session: chunk times and
// ServerBytesBefore never decrease, chunks never overlap each other or a
// hole, and stream lengths account for every byte.
func checkInvariants(t testing.TB, s *Session) {
	t.Helper()
	var prev Chunk
	var end int64
	for i, c := range s.Chunks {
		if len(c.Data) == 0 {
			t.Errorf("session %d chunk %d is empty", s.ID, i)
		}
		if i > 0 && (c.Offset < prev.Offset || c.ServerBytesBefore < prev.ServerBytesBefore) {
			t.Errorf("session %d chunk %d goes back: %v/%d after %v/%d", s.ID, i, c.Offset, c.ServerBytesBefore, prev.Offset, prev.ServerBytesBefore)
		}
		if c.StreamOffset < end {
			t.Errorf("session %d chunk %d at stream offset %d overlaps the previous one (ends %d)", s.ID, i, c.StreamOffset, end)
		}
		for _, h := range s.Holes {
			if !h.Server && h.Offset < c.StreamOffset+int64(len(c.Data)) && c.StreamOffset < h.Offset+h.Len {
				t.Errorf("session %d chunk %d overlaps client hole %+v", s.ID, i, h)
			}
		}
		end = c.StreamOffset + int64(len(c.Data))
		prev = c
	}
	var clientCaptured, clientHoles, serverHoles int64
	for _, c := range s.Chunks {
		clientCaptured += int64(len(c.Data))
	}
	for _, h := range s.Holes {
		if h.Len <= 0 {
			t.Errorf("session %d empty hole %+v", s.ID, h)
		}
		if h.Server {
			serverHoles += h.Len
		} else {
			clientHoles += h.Len
		}
	}
	if clientCaptured+clientHoles != s.ClientBytes {
		t.Errorf("session %d: client chunks %d + holes %d != ClientBytes %d", s.ID, clientCaptured, clientHoles, s.ClientBytes)
	}
	if s.Flags&ServerCut == 0 && int64(len(s.ServerData))+serverHoles != s.ServerBytes {
		t.Errorf("session %d: server data %d + holes %d != ServerBytes %d", s.ID, len(s.ServerData), serverHoles, s.ServerBytes)
	}
	if (len(s.Holes) > 0) != (s.Flags&Holes != 0) {
		t.Errorf("session %d: Holes flag %v with %d holes", s.ID, s.Flags&Holes != 0, len(s.Holes))
	}
	if s.EndedBefore > s.ID {
		t.Errorf("session %d: EndedBefore %d > ID", s.ID, s.EndedBefore)
	}
}

// handshake returns the three packets opening the default connection at ms.
func handshake(ms int) []step {
	return []step{
		{ms: ms, dir: 'c', fl: "S"},
		{ms: ms, dir: 's', fl: "SA", ack: 1},
		{ms: ms, dir: 'c', fl: "A", seq: 1, ack: 1},
	}
}

func cat(parts ...[]step) []step { return slices.Concat(parts...) }

func TestBuilderSteps(t *testing.T) {
	req1, req2 := "GET /a HTTP/1.1\r\n\r\n", "GET /b HTTP/1.1\r\n\r\n"      // 19 bytes each
	resp1, resp2 := "HTTP/1.1 200 OK\r\n\r\nA", "HTTP/1.1 200 OK\r\n\r\nBB" // 20 and 21
	tests := []struct {
		name   string
		cfg    Config
		tuples []tuple
		steps  []step
		want   []want
	}{
		{
			name: "request/response turns",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: req1},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 20, data: resp1},
				{ms: 30, dir: 'c', fl: "PA", seq: 20, ack: 21, data: req2},
				{ms: 40, dir: 's', fl: "PA", seq: 21, ack: 39, data: resp2},
				{ms: 50, dir: 'c', fl: "FA", seq: 39, ack: 42},
				{ms: 51, dir: 's', fl: "FA", seq: 42, ack: 40},
				{ms: 52, dir: 'c', fl: "A", seq: 40, ack: 43},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:" + req1, "30:20@19:" + req2},
				serverData: resp1 + resp2, clientBytes: 38, serverBytes: 41,
				end: EndClientFIN, duration: 51,
			}},
		},
		{
			name: "retransmission of a client segment",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "hello"},
				{ms: 300, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "hello"},
				{ms: 301, dir: 's', fl: "PA", seq: 1, ack: 6, data: "world"},
				{ms: 310, dir: 'c', fl: "RA", seq: 6, ack: 6},
			}),
			want: []want{{
				chunks: []string{"10:0@0:hello"}, serverData: "world", clientBytes: 5, serverBytes: 5,
				end: EndClientRST, duration: 310,
			}},
		},
		{
			name: "duplicate server segments and a retransmission that grew",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "q"},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 2, data: "abc"},
				{ms: 21, dir: 's', fl: "PA", seq: 1, ack: 2, data: "abc"},
				{ms: 22, dir: 's', fl: "PA", seq: 1, ack: 2, data: "abcdef"},
				{ms: 30, dir: 's', fl: "RA", seq: 7, ack: 2},
			}),
			want: []want{{
				chunks: []string{"10:0@0:q"}, serverData: "abcdef", clientBytes: 1, serverBytes: 6,
				end: EndServerRST, duration: 30,
			}},
		},
		{
			name: "overlap: the first copy seen wins",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "ABCDEF"},
				{ms: 10, dir: 'c', fl: "PA", seq: 4, ack: 1, data: "xyzGHI"},
				// Out of order, overlapping a buffered piece and filling
				// around it: only the gaps are taken.
				{ms: 10, dir: 'c', fl: "PA", seq: 14, ack: 1, data: "NO"},
				{ms: 10, dir: 'c', fl: "PA", seq: 11, ack: 1, data: "KLMnoP"},
				{ms: 10, dir: 'c', fl: "PA", seq: 10, ack: 1, data: "J"},
			}),
			want: []want{{
				chunks:      []string{"10:0@0:ABCDEFGHIJKLMNOP"},
				clientBytes: 16, end: EndCaptureEnd, duration: 10,
			}},
		},
		{
			name: "reordered segments take the earlier time",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 4, ack: 1, data: "DEF"},
				{ms: 15, dir: 's', fl: "A", seq: 1, ack: 1},
				{ms: 20, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "ABC"},
				{ms: 25, dir: 's', fl: "PA", seq: 1, ack: 7, data: "ok"},
				{ms: 30, dir: 'c', fl: "FA", seq: 7, ack: 3},
				{ms: 30, dir: 's', fl: "FA", seq: 3, ack: 8},
			}),
			want: []want{{
				chunks: []string{"10:0@0:ABCDEF"}, serverData: "ok", clientBytes: 6, serverBytes: 2,
				end: EndClientFIN, duration: 30,
			}},
		},
		{
			name: "lost client segment: hole proven by the server's ACK",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "AAA"},
				// seq 4..6 "BBB" was never captured
				{ms: 12, dir: 'c', fl: "PA", seq: 7, ack: 1, data: "CCC"},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 10, data: "ok"},
				{ms: 30, dir: 'c', fl: "PA", seq: 10, ack: 3, data: "DD"},
				{ms: 40, dir: 'c', fl: "FA", seq: 12, ack: 3},
				{ms: 40, dir: 's', fl: "FA", seq: 3, ack: 13},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:AAA", "12:0@6:CCC", "30:2@9:DD"},
				serverData: "ok", clientBytes: 11, serverBytes: 2,
				end: EndClientFIN, flags: Holes, duration: 40,
				holes: []Hole{{Server: false, Offset: 3, Len: 3}},
			}},
		},
		{
			name: "lost server segment: hole when later data is acknowledged",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "get"},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 4, data: "0123"},
				// seq 5..8 lost, client acks it with its next request
				{ms: 30, dir: 'c', fl: "PA", seq: 4, ack: 9, data: "get"},
				{ms: 40, dir: 's', fl: "PA", seq: 9, ack: 7, data: "89"},
				{ms: 50, dir: 'c', fl: "FA", seq: 7, ack: 11},
				{ms: 50, dir: 's', fl: "FA", seq: 11, ack: 8},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:get", "30:8@3:get"},
				serverData: "012389", clientBytes: 6, serverBytes: 10,
				end: EndClientFIN, flags: Holes, duration: 50,
				holes: []Hole{{Server: true, Offset: 4, Len: 4}},
			}},
		},
		{
			name: "lost tail of the server stream before its FIN",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "get"},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 4, data: "0123"},
				{ms: 21, dir: 's', fl: "FA", seq: 9, ack: 4},
				{ms: 22, dir: 'c', fl: "FA", seq: 4, ack: 10},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:get"},
				serverData: "0123", clientBytes: 3, serverBytes: 8,
				end: EndServerFIN, flags: Holes, duration: 22,
				holes: []Hole{{Server: true, Offset: 4, Len: 4}},
			}},
		},
		{
			name: "snap length truncation",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "POST /", miss: 4},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 11, data: "HTTP/1.1", miss: 100},
				{ms: 21, dir: 's', fl: "PA", seq: 109, ack: 11, data: "more", miss: 10},
				{ms: 30, dir: 'c', fl: "FA", seq: 11, ack: 123},
				{ms: 30, dir: 's', fl: "FA", seq: 123, ack: 12},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:POST /"},
				serverData: "HTTP/1.1more", clientBytes: 10, serverBytes: 122,
				end: EndClientFIN, flags: Holes | Truncated | SnapLen, duration: 30,
				holes: []Hole{{Server: false, Offset: 6, Len: 4}, {Server: true, Offset: 8, Len: 100}, {Server: true, Offset: 112, Len: 10}},
			}},
		},
		{
			name: "pipelined requests keep equal ServerBytesBefore",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: req1},
				// Seen at the server side: the answer to req1 passes
				// before req2 arrives, but req2 acknowledges none of it.
				{ms: 11, dir: 's', fl: "PA", seq: 1, ack: 20, data: resp1},
				{ms: 12, dir: 'c', fl: "PA", seq: 20, ack: 1, data: req2},
				{ms: 13, dir: 's', fl: "PA", seq: 21, ack: 39, data: resp2},
				{ms: 14, dir: 'c', fl: "A", seq: 39, ack: 42},
			}),
			want: []want{{
				chunks:     []string{"10:0@0:" + req1, "12:0@19:" + req2},
				serverData: resp1 + resp2, clientBytes: 38, serverBytes: 41,
				end: EndCaptureEnd, duration: 14,
			}},
		},
		{
			name: "segments of one write merge, later ones do not",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "A", seq: 1, ack: 1, data: "part1-"},
				{ms: 10, dir: 'c', fl: "PA", seq: 7, ack: 1, data: "part2"},
				{ms: 15, dir: 'c', fl: "PA", seq: 12, ack: 1, data: "later"},
			}),
			want: []want{{
				chunks:      []string{"10:0@0:part1-part2", "15:0@11:later"},
				clientBytes: 16, end: EndCaptureEnd, duration: 15,
			}},
		},
		{
			name: "merging off: one chunk per segment",
			cfg:  Config{MergeWindow: -1},
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "A", seq: 1, ack: 1, data: "part1-"},
				{ms: 10, dir: 'c', fl: "PA", seq: 7, ack: 1, data: "part2"},
			}),
			want: []want{{
				chunks:      []string{"10:0@0:part1-", "10:0@6:part2"},
				clientBytes: 11, end: EndCaptureEnd, duration: 10,
			}},
		},
		{
			name:   "sequence numbers wrap around 2^32",
			tuples: []tuple{{c: defaultTuple.c, s: defaultTuple.s, ci: 0xfffffff5, si: 0xfffffff0}},
			steps: []step{
				{ms: 0, dir: 'c', fl: "S"},
				{ms: 1, dir: 's', fl: "SA", ack: 1},
				{ms: 2, dir: 'c', fl: "A", seq: 1, ack: 1},
				{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "0123456789"},
				{ms: 4, dir: 'c', fl: "PA", seq: 11, ack: 1, data: "abcdefghij"},
				{ms: 5, dir: 's', fl: "PA", seq: 1, ack: 21, data: "ABCDEFGHIJKLMNOPQRST"},
				{ms: 6, dir: 's', fl: "PA", seq: 21, ack: 21, data: "UVWXYZ"},
				{ms: 7, dir: 'c', fl: "FA", seq: 21, ack: 27},
				{ms: 8, dir: 's', fl: "FA", seq: 27, ack: 22},
			},
			want: []want{{
				chunks:     []string{"3:0@0:0123456789abcdefghij"},
				serverData: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", clientBytes: 20, serverBytes: 26,
				end: EndClientFIN, duration: 8,
			}},
		},
		{
			name: "client reset",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "x"},
				{ms: 20, dir: 'c', fl: "R", seq: 2},
				{ms: 21, dir: 's', fl: "PA", seq: 1, ack: 2, data: "late"}, // after the reset: stray
			}),
			want: []want{{chunks: []string{"10:0@0:x"}, clientBytes: 1, end: EndClientRST, duration: 20}},
		},
		{
			name: "server reset",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "x"},
				{ms: 20, dir: 's', fl: "RA", seq: 1, ack: 2},
			}),
			want: []want{{chunks: []string{"10:0@0:x"}, clientBytes: 1, end: EndServerRST, duration: 20}},
		},
		{
			name: "refused connection: RST+ACK to the SYN",
			steps: []step{
				{ms: 0, dir: 'c', fl: "S"},
				{ms: 1, dir: 's', fl: "RA", ack: 1},
			},
			want: []want{{end: EndServerRST, duration: 1}},
		},
		{
			name: "server closes first",
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "QUIT\r\n"},
				{ms: 20, dir: 's', fl: "PA", seq: 1, ack: 7, data: "221 bye\r\n"},
				{ms: 21, dir: 's', fl: "FA", seq: 10, ack: 7},
				{ms: 22, dir: 'c', fl: "A", seq: 7, ack: 11},
				{ms: 23, dir: 'c', fl: "FA", seq: 7, ack: 11},
				{ms: 24, dir: 's', fl: "A", seq: 11, ack: 8},
			}),
			want: []want{{
				chunks: []string{"10:0@0:QUIT\r\n"}, serverData: "221 bye\r\n", clientBytes: 6, serverBytes: 9,
				end: EndServerFIN, duration: 23,
			}},
		},
		{
			name: "data on the SYN (TCP Fast Open)",
			steps: []step{
				{ms: 0, dir: 'c', fl: "S", data: "GET / HTTP/1.1\r\n\r\n"},
				{ms: 1, dir: 's', fl: "SA", ack: 19},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 19, data: "HTTP/1.1 204\r\n\r\n"},
				// The client's retransmission of the SYN data is a duplicate.
				{ms: 2, dir: 'c', fl: "PA", seq: 1, ack: 17, data: "GET / HTTP/1.1\r\n\r\n"},
				{ms: 3, dir: 'c', fl: "FA", seq: 19, ack: 17},
				{ms: 4, dir: 's', fl: "FA", seq: 17, ack: 20},
			},
			want: []want{{
				chunks:     []string{"0:0@0:GET / HTTP/1.1\r\n\r\n"},
				serverData: "HTTP/1.1 204\r\n\r\n", clientBytes: 18, serverBytes: 16,
				end: EndClientFIN, duration: 4,
			}},
		},
		{
			name: "server-first protocol",
			steps: cat(handshake(0), []step{
				{ms: 5, dir: 's', fl: "PA", seq: 1, ack: 1, data: "220 mail ESMTP\r\n"},
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 17, data: "EHLO x\r\n"},
				{ms: 15, dir: 's', fl: "PA", seq: 17, ack: 9, data: "250 ok\r\n"},
				{ms: 20, dir: 'c', fl: "PA", seq: 9, ack: 25, data: "QUIT\r\n"},
			}),
			want: []want{{
				chunks:     []string{"10:16@0:EHLO x\r\n", "20:24@8:QUIT\r\n"},
				serverData: "220 mail ESMTP\r\n250 ok\r\n", clientBytes: 14, serverBytes: 24,
				end: EndCaptureEnd, flags: ServerFirst, duration: 20,
			}},
		},
		{
			name: "no handshake: partial session from the first client payload",
			steps: []step{
				// Server bytes answering a request that was not captured.
				{ms: 0, dir: 's', fl: "PA", seq: 100, ack: 50, data: "old answer"},
				{ms: 1, dir: 'c', fl: "A", seq: 50, ack: 110},
				{ms: 10, dir: 'c', fl: "PA", seq: 50, ack: 110, data: "GET /x HTTP/1.1\r\n\r\n"},
				{ms: 20, dir: 's', fl: "PA", seq: 110, ack: 69, data: "HTTP/1.1 200\r\n\r\n"},
				{ms: 30, dir: 'c', fl: "FA", seq: 69, ack: 126},
				{ms: 31, dir: 's', fl: "FA", seq: 126, ack: 70},
			},
			want: []want{{
				chunks:     []string{"0:0@0:GET /x HTTP/1.1\r\n\r\n"},
				serverData: "HTTP/1.1 200\r\n\r\n", clientBytes: 19, serverBytes: 16,
				end: EndClientFIN, flags: Partial, start: 10, duration: 21,
			}},
		},
		{
			name: "no handshake: bytes the server already acknowledged do not start the session",
			steps: []step{
				{ms: 0, dir: 's', fl: "A", seq: 300, ack: 100},
				// A keepalive probe: one old byte, already acknowledged.
				{ms: 10, dir: 'c', fl: "A", seq: 99, ack: 300, data: "x"},
				{ms: 11, dir: 's', fl: "A", seq: 300, ack: 100},
				// A retransmission overlapping new bytes: only the new part.
				{ms: 20, dir: 'c', fl: "PA", seq: 98, ack: 300, data: "xxPING\r\n"},
				{ms: 21, dir: 's', fl: "PA", seq: 300, ack: 106, data: "+PONG\r\n"},
			},
			want: []want{{
				chunks:     []string{"0:0@0:PING\r\n"},
				serverData: "+PONG\r\n", clientBytes: 6, serverBytes: 7,
				end: EndCaptureEnd, flags: Partial, start: 20, duration: 1,
			}},
		},
		{
			name: "SYN-ACK without the SYN: not partial",
			steps: []step{
				{ms: 0, dir: 's', fl: "SA", ack: 1},
				{ms: 1, dir: 'c', fl: "A", seq: 1, ack: 1},
				{ms: 2, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "hi"},
				{ms: 3, dir: 's', fl: "PA", seq: 1, ack: 3, data: "yo"},
			},
			want: []want{{
				chunks: []string{"2:0@0:hi"}, serverData: "yo", clientBytes: 2, serverBytes: 2,
				end: EndCaptureEnd, duration: 3,
			}},
		},
		{
			name: "SYN-ACK recorded before the SYN",
			steps: []step{
				{ms: 0, dir: 's', fl: "SA", ack: 1},
				{ms: 0, dir: 'c', fl: "S"},
				{ms: 1, dir: 'c', fl: "A", seq: 1, ack: 1},
				{ms: 2, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "hi"},
			},
			want: []want{{chunks: []string{"2:0@0:hi"}, clientBytes: 2, end: EndCaptureEnd, duration: 2}},
		},
		{
			name: "SYN without the SYN-ACK: server stream starts at the client's ACK",
			steps: []step{
				{ms: 0, dir: 'c', fl: "S"},
				{ms: 1, dir: 'c', fl: "A", seq: 1, ack: 1},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 1, data: "+OK hello\r\n"},
				{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 12, data: "QUIT\r\n"},
			},
			want: []want{{
				chunks: []string{"3:11@0:QUIT\r\n"}, serverData: "+OK hello\r\n", clientBytes: 6, serverBytes: 11,
				end: EndCaptureEnd, flags: ServerFirst, duration: 3,
			}},
		},
		{
			name: "out-of-order limit gives up the gap",
			cfg:  Config{OutOfOrderLimit: 8},
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "aa"},
				{ms: 11, dir: 'c', fl: "PA", seq: 5, ack: 1, data: "cccc"},
				{ms: 11, dir: 'c', fl: "PA", seq: 9, ack: 1, data: "dddd"},
				{ms: 11, dir: 'c', fl: "PA", seq: 13, ack: 1, data: "e"}, // 9 bytes buffered > 8
				{ms: 14, dir: 'c', fl: "PA", seq: 3, ack: 1, data: "bb"}, // too late
			}),
			want: []want{{
				chunks:      []string{"10:0@0:aa", "11:0@4:ccccdddde"},
				clientBytes: 13, end: EndCaptureEnd, flags: Holes, duration: 14,
				holes: []Hole{{Offset: 2, Len: 2}},
			}},
		},
		{
			name: "server data beyond the limit",
			cfg:  Config{ServerDataLimit: 4},
			steps: cat(handshake(0), []step{
				{ms: 10, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "q"},
				{ms: 11, dir: 's', fl: "PA", seq: 1, ack: 2, data: "abc"},
				{ms: 12, dir: 's', fl: "PA", seq: 4, ack: 2, data: "defgh"},
			}),
			want: []want{{
				chunks: []string{"10:0@0:q"}, serverData: "abcd", clientBytes: 1, serverBytes: 8,
				end: EndCaptureEnd, flags: Truncated | ServerCut, duration: 12,
			}},
		},
		{
			name: "deepflow l4-source-port-reuse: stale packets of the old connection after a new SYN",
			steps: []step{
				{ms: 0, dir: 'c', fl: "S"},
				{ms: 0, dir: 's', fl: "PA", seq: 1, ack: 485, data: "stale TLS alert"},
				{ms: 0, dir: 'c', fl: "R", seq: 517},
				{ms: 0, dir: 'c', fl: "R", seq: 517},
			},
			want: []want{{end: EndCaptureEnd, duration: 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, _ := runSteps(t, tt.cfg, tt.tuples, tt.steps)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sessions, want %d", len(got), len(tt.want))
			}
			for i := range got {
				checkSession(t, got[i], tt.want[i])
			}
		})
	}
}

// TestPortReuse: the same client ip:port connects again with a new ISN,
// once after the old connection closed (while it lingers), once while the
// old one is still open. Each connection is its own session.
func TestPortReuse(t *testing.T) {
	a := defaultTuple
	b := a
	b.ci, b.si = 900000, 7000000 // new ISNs on the same 4-tuple
	c := a
	c.ci, c.si = 3000000000, 12345
	tuples := []tuple{a, b, c}
	steps := []step{
		{ms: 0, conn: 0, dir: 'c', fl: "S"},
		{ms: 0, conn: 0, dir: 's', fl: "SA", ack: 1},
		{ms: 1, conn: 0, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "one"},
		{ms: 2, conn: 0, dir: 's', fl: "FA", seq: 1, ack: 4},
		{ms: 3, conn: 0, dir: 'c', fl: "FA", seq: 4, ack: 2},
		// TIME_WAIT: the last ACK, then the port is reused.
		{ms: 4, conn: 0, dir: 's', fl: "A", seq: 2, ack: 5},
		{ms: 100, conn: 1, dir: 'c', fl: "S"},
		{ms: 100, conn: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 101, conn: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "two"},
		// Reused again while the second one is still open (its
		// closing was not captured).
		{ms: 200, conn: 2, dir: 'c', fl: "S"},
		{ms: 200, conn: 2, dir: 's', fl: "SA", ack: 1},
		{ms: 201, conn: 2, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "three"},
		// A late retransmission of the second connection's data
		// does not fit the third.
		{ms: 202, conn: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "two"},
	}
	got, _, _ := runSteps(t, Config{}, tuples, steps)
	if len(got) != 3 {
		t.Fatalf("got %d sessions, want 3", len(got))
	}
	checkSession(t, got[0], want{chunks: []string{"1:0@0:one"}, clientBytes: 3, end: EndServerFIN, duration: 3})
	checkSession(t, got[1], want{chunks: []string{"1:0@0:two"}, clientBytes: 3, end: EndCaptureEnd, endedBefore: 1, start: 100, duration: 1})
	// The stale retransmission lands far outside the third connection's
	// sequence space: it is dropped as a duplicate of nothing, not
	// appended.
	checkSession(t, got[2], want{chunks: []string{"1:0@0:three"}, clientBytes: 5, end: EndCaptureEnd, endedBefore: 2, start: 200, duration: -1})
	for i, isn := range []uint32{a.ci, b.ci, c.ci} {
		if got[i].ISN != isn {
			t.Errorf("session %d ISN %d, want %d", i, got[i].ISN, isn)
		}
	}
}

// TestEndedBefore: sessions that started after another ended count it;
// overlapping ones do not.
func TestEndedBefore(t *testing.T) {
	tp := func(port uint16) tuple {
		return tuple{c: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), s: defaultTuple.s, ci: 100, si: 200}
	}
	tuples := []tuple{tp(40001), tp(40002), tp(40003), tp(40004)}
	open := func(ms, conn int) []step {
		return []step{
			{ms: ms, conn: conn, dir: 'c', fl: "S"},
			{ms: ms, conn: conn, dir: 's', fl: "SA", ack: 1},
			{ms: ms + 1, conn: conn, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "x"},
		}
	}
	closeC := func(ms, conn int) []step {
		return []step{
			{ms: ms, conn: conn, dir: 'c', fl: "FA", seq: 2, ack: 1},
			{ms: ms, conn: conn, dir: 's', fl: "FA", seq: 1, ack: 3},
		}
	}
	steps := cat(
		open(0, 0),    // A
		open(5, 1),    // B overlaps A
		closeC(10, 0), // A ends: emitted first
		open(20, 2),   // C starts after A ended
		closeC(30, 1), // B ends
		closeC(31, 2), // C ends
		open(40, 3),   // D starts after all three ended
		closeC(50, 3), // D ends
	)
	got, _, _ := runSteps(t, Config{}, tuples, steps)
	if len(got) != 4 {
		t.Fatalf("got %d sessions, want 4", len(got))
	}
	type idEB struct {
		client string
		eb     uint64
	}
	var have []idEB
	for _, s := range got {
		have = append(have, idEB{s.Client.String(), s.EndedBefore})
		checkInvariants(t, s)
	}
	wantEB := []idEB{{"10.0.0.1:40001", 0}, {"10.0.0.1:40002", 0}, {"10.0.0.1:40003", 1}, {"10.0.0.1:40004", 3}}
	if !slices.Equal(have, wantEB) {
		t.Errorf("emission order and EndedBefore:\n got %v\nwant %v", have, wantEB)
	}
}

// TestIdleFlush: a connection silent for longer than IdleTimeout (capture
// time) is emitted while the capture goes on, and a later packet on its
// 4-tuple starts a new partial session.
func TestIdleFlush(t *testing.T) {
	other := tuple{c: ap("10.0.0.9:50000"), s: defaultTuple.s, ci: 1, si: 1}
	tuples := []tuple{defaultTuple, other}
	steps := cat(handshake(0), []step{
		{ms: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "first"},
		{ms: 2000, conn: 1, dir: 'c', fl: "S"},
		{ms: 2001, conn: 1, dir: 'c', fl: "S"}, // activity elsewhere: time goes on
		{ms: 5000, conn: 1, dir: 'c', fl: "S"},
		{ms: 5001, dir: 'c', fl: "PA", seq: 6, ack: 1, data: "second"},
	})
	got, at, _ := runSteps(t, Config{IdleTimeout: 3 * time.Second}, tuples, steps)
	if len(got) != 3 {
		t.Fatalf("got %d sessions, want 3", len(got))
	}
	// Emitted while adding the packet at 5000 ms (step index 6 → 7 added before).
	if at[0] != 6 {
		t.Errorf("idle session emitted after %d packets, want 6", at[0])
	}
	checkSession(t, got[0], want{chunks: []string{"1:0@0:first"}, clientBytes: 5, end: EndCaptureEnd, duration: 1})
	// Close emits the least recently active first: the SYN-only
	// connection (5000 ms) before the resumed one (5001 ms).
	checkSession(t, got[1], want{client: "10.0.0.9:50000", server: "10.0.0.2:80", end: EndCaptureEnd, start: 2000, duration: 3000})
	checkSession(t, got[2], want{chunks: []string{"0:0@0:second"}, clientBytes: 6, end: EndCaptureEnd, flags: Partial, endedBefore: 1, start: 5001, duration: 0})
}

// TestServerSelection: Servers and Keep decide which connections become
// sessions and, without a handshake, which side is the server.
func TestServerSelection(t *testing.T) {
	web := tuple{c: ap("10.0.0.1:40000"), s: ap("10.0.0.2:80"), ci: 1, si: 1}
	db := tuple{c: ap("10.0.0.1:40001"), s: ap("10.0.0.3:5432"), ci: 1, si: 1}
	// Both ports high: only the selection can tell the server.
	odd := tuple{c: ap("10.0.0.1:40002"), s: ap("10.0.0.4:45000"), ci: 1, si: 1}
	tuples := []tuple{web, db, odd}
	steps := []step{
		{ms: 0, conn: 0, dir: 'c', fl: "S"},
		{ms: 1, conn: 0, dir: 'c', fl: "PA", seq: 1, data: "GET"},
		{ms: 2, conn: 1, dir: 'c', fl: "S"},
		{ms: 3, conn: 1, dir: 'c', fl: "PA", seq: 1, data: "Q"},
		{ms: 4, conn: 2, dir: 'c', fl: "PA", seq: 1, data: "hello"},
		{ms: 5, conn: 2, dir: 's', fl: "PA", seq: 1, ack: 6, data: "world"},
	}
	servers := func(ss []*Session) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Client.String()+">"+s.Server.String())
		}
		return out
	}
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		// Without a selection the lower port is taken for the server:
		// backwards for the odd connection, whose "client" is then the
		// side that answered.
		{"all, ports decide", Config{}, []string{"10.0.0.1:40000>10.0.0.2:80", "10.0.0.1:40001>10.0.0.3:5432", "10.0.0.4:45000>10.0.0.1:40002"}},
		{"explicit server", Config{Servers: []netip.AddrPort{ap("10.0.0.4:45000")}}, []string{"10.0.0.1:40002>10.0.0.4:45000"}},
		{"any address, one port", Config{Servers: []netip.AddrPort{ap("0.0.0.0:5432")}}, []string{"10.0.0.1:40001>10.0.0.3:5432"}},
		{"keep filter", Config{Keep: func(s netip.AddrPort) bool { return s.Port() == 80 || s.Port() == 45000 }},
			[]string{"10.0.0.1:40000>10.0.0.2:80", "10.0.0.1:40002>10.0.0.4:45000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, _, b := runSteps(t, tc.cfg, tuples, steps)
			if g := servers(got); !slices.Equal(g, tc.want) {
				t.Errorf("sessions %v, want %v", g, tc.want)
			}
			if st := b.Stats(); int(st.Sessions) != len(tc.want) || st.Ignored != uint64(len(steps))-packetsOf(tc.want, tuples, steps) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func packetsOf(sessions []string, tuples []tuple, steps []step) uint64 {
	var n uint64
	for _, st := range steps {
		tp := tuples[st.conn]
		for _, s := range sessions {
			if strings.Contains(s, tp.s.String()) && strings.Contains(s, tp.c.String()) {
				n++
			}
		}
	}
	return n
}

// TestListenerInference: an endpoint seen accepting a handshake earlier in
// the capture is the server of a later connection without one, even when
// ports would say otherwise.
func TestListenerInference(t *testing.T) {
	grpc := ap("10.0.0.2:50051")
	tuples := []tuple{
		{c: ap("10.0.0.1:40000"), s: grpc, ci: 1, si: 1},
		// Client port lower than the server's: the port rule alone
		// would get this one backwards.
		{c: ap("10.0.0.7:33000"), s: grpc, ci: 1, si: 1},
	}
	steps := []step{
		{ms: 0, conn: 0, dir: 'c', fl: "S"},
		{ms: 0, conn: 0, dir: 's', fl: "SA", ack: 1},
		{ms: 1, conn: 1, dir: 's', fl: "PA", seq: 10, ack: 10, data: "resp"},
		{ms: 2, conn: 1, dir: 'c', fl: "PA", seq: 10, ack: 14, data: "req"},
	}
	got, _, _ := runSteps(t, Config{}, tuples, steps)
	if len(got) != 2 {
		t.Fatalf("got %d sessions, want 2", len(got))
	}
	p := got[1]
	if got[0].Flags&Partial != 0 || p.Flags&Partial == 0 {
		t.Fatalf("partial flags: %v %v", got[0].Flags, p.Flags)
	}
	if p.Server != grpc || p.Client != ap("10.0.0.7:33000") || len(p.Chunks) != 1 || string(p.Chunks[0].Data) != "req" {
		t.Errorf("partial session %v → %v chunks %d", p.Client, p.Server, len(p.Chunks))
	}
}

// TestNoClientData: a connection without a handshake that never carries
// client payload is not a session; one with a handshake is.
func TestNoClientData(t *testing.T) {
	steps := []step{
		{ms: 0, dir: 's', fl: "PA", seq: 1, ack: 1, data: "push"},
		{ms: 1, dir: 'c', fl: "A", seq: 1, ack: 5},
		{ms: 2, dir: 's', fl: "FA", seq: 5, ack: 1},
		{ms: 3, dir: 'c', fl: "FA", seq: 1, ack: 6},
	}
	got, _, b := runSteps(t, Config{}, nil, steps)
	if len(got) != 0 {
		t.Fatalf("got %d sessions, want none", len(got))
	}
	if st := b.Stats(); st.NoClientData != 1 {
		t.Errorf("NoClientData %d, want 1", st.NoClientData)
	}
}

// TestServerSegments maps ServerData back to stream offsets around holes.
func TestServerSegments(t *testing.T) {
	s := &Session{
		ServerData: []byte("abcdefgh"),
		Holes:      []Hole{{Server: true, Offset: 3, Len: 2}, {Server: false, Offset: 0, Len: 9}, {Server: true, Offset: 7, Len: 1}},
	}
	var got []string
	s.ServerSegments(func(off int64, data []byte) { got = append(got, fmt.Sprintf("%d:%s", off, data)) })
	if want := []string{"0:abc", "5:de", "8:fgh"}; !slices.Equal(got, want) {
		t.Errorf("segments %v, want %v", got, want)
	}
}

func TestFlagsString(t *testing.T) {
	if got := (Partial | Holes | SnapLen | Truncated).String(); got != "partial,holes,truncated,snaplen" {
		t.Errorf("got %q", got)
	}
	if got := Flags(0).String(); got != "-" {
		t.Errorf("got %q", got)
	}
}

// TestBoundedState: memory follows the connections open at a point of the
// capture, not its length. 20,000 short sessions, one every 10 ms, each
// handed on as it closes; closed ones are remembered for Linger only, and
// ones that never close go after IdleTimeout.
func TestBoundedState(t *testing.T) {
	const n = 20000
	for _, closeThem := range []bool{true, false} {
		cfg := Config{Linger: time.Second, IdleTimeout: 2 * time.Second}
		emitted := 0
		b := NewBuilder(cfg, Collect(func(s *Session) {
			emitted++
			if len(s.Chunks) != 1 || string(s.Chunks[0].Data) != "ping" {
				t.Fatalf("session %d chunks %+v", s.ID, s.Chunks)
			}
		}))
		maxClosed := 0
		for i := 0; i < n; i++ {
			tp := tuple{
				c:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(1024+i%60000)),
				s:  defaultTuple.s,
				ci: uint32(i) * 7919, si: uint32(i) * 104729,
			}
			steps := cat(handshake(0), []step{
				{ms: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "ping"},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 5, data: "pong"},
			})
			if closeThem {
				steps = append(steps, step{ms: 3, dir: 'c', fl: "FA", seq: 5, ack: 5}, step{ms: 4, dir: 's', fl: "FA", seq: 5, ack: 6})
			}
			for _, st := range steps {
				st.ms += i * 10
				b.Add(st.packet([]tuple{tp}))
			}
			maxClosed = max(maxClosed, b.Stats().Closed)
		}
		st := b.Stats()
		if closeThem && (st.MaxOpen > 2 || maxClosed > 102 || emitted != n) {
			t.Errorf("closing sessions: max open %d, max closed %d, emitted %d before Close", st.MaxOpen, maxClosed, emitted)
		}
		if !closeThem && (st.MaxOpen > 202 || emitted < n-201) {
			t.Errorf("idle sessions: max open %d, emitted %d before Close", st.MaxOpen, emitted)
		}
		b.Close()
		if emitted != n {
			t.Errorf("emitted %d sessions, want %d", emitted, n)
		}
	}
}

// TestServerBytesAfterClose: a client that sends its request with FIN
// (half-close) has received nothing of the answer when it closes; the replay
// must not wait for the answer before closing. A client that closes after the
// answer has received all of it.
func TestServerBytesAfterClose(t *testing.T) {
	hs := []step{
		{ms: 0, dir: 'c', fl: "S"},
		{ms: 1, dir: 's', fl: "SA", ack: 1},
		{ms: 2, dir: 'c', fl: "A", seq: 1, ack: 1},
	}
	cases := []struct {
		name  string
		steps []step
		end   End
		after int64
	}{
		{"half-close", append(slices.Clone(hs),
			step{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "QUIT\n"},
			step{ms: 4, dir: 'c', fl: "FA", seq: 6, ack: 1},
			step{ms: 9, dir: 's', fl: "PA", seq: 1, ack: 7, data: "bye bye\n"},
			step{ms: 10, dir: 's', fl: "FA", seq: 9, ack: 7},
			step{ms: 11, dir: 'c', fl: "A", seq: 7, ack: 10},
		), EndClientFIN, 8},
		{"close-after-answer", append(slices.Clone(hs),
			step{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "GET\n"},
			step{ms: 4, dir: 's', fl: "PA", seq: 1, ack: 5, data: "answer\n"},
			step{ms: 5, dir: 'c', fl: "FA", seq: 5, ack: 8},
			step{ms: 6, dir: 's', fl: "FA", seq: 8, ack: 6},
		), EndClientFIN, 0},
		{"rst-before-answer", append(slices.Clone(hs),
			step{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "GET\n"},
			step{ms: 4, dir: 's', fl: "PA", seq: 1, ack: 5, data: "partial"},
			step{ms: 5, dir: 'c', fl: "RA", seq: 5, ack: 1},
		), EndClientRST, 7},
		{"server-close", append(slices.Clone(hs),
			step{ms: 3, dir: 'c', fl: "PA", seq: 1, ack: 1, data: "GET\n"},
			step{ms: 4, dir: 's', fl: "FPA", seq: 1, ack: 5, data: "answer\n"},
			step{ms: 5, dir: 'c', fl: "FA", seq: 5, ack: 9},
		), EndServerFIN, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, _ := runSteps(t, Config{}, nil, tc.steps)
			if len(out) != 1 {
				t.Fatalf("got %d sessions, want 1", len(out))
			}
			s := out[0]
			if s.End != tc.end || s.ServerBytesAfterClose != tc.after {
				t.Errorf("end %v, ServerBytesAfterClose %d; want %v, %d (ServerBytes %d)", s.End, s.ServerBytesAfterClose, tc.end, tc.after, s.ServerBytes)
			}
		})
	}
}

// A burst larger than maxChunkBytes within the merge window (a bulk upload)
// becomes back-to-back chunks of at most maxChunkBytes, contiguous in the
// stream, with the burst's bytes intact.
func TestMergeBoundsChunkSize(t *testing.T) {
	const seg = 60000
	total := 0
	var want []byte
	steps := handshake(0)
	for i := 0; total < 3*maxChunkBytes+12345; i++ {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, seg)
		steps = append(steps, step{ms: 10, dir: 'c', fl: "A", seq: uint32(1 + total), ack: 1, data: string(data)})
		want = append(want, data...)
		total += seg
	}
	sessions, _, _ := runSteps(t, Config{}, nil, steps)
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	s := sessions[0]
	checkInvariants(t, s)
	if len(s.Chunks) < 4 {
		t.Errorf("%d chunks for %d bytes, want at least 4", len(s.Chunks), total)
	}
	var got []byte
	for i, c := range s.Chunks {
		if len(c.Data) > maxChunkBytes {
			t.Errorf("chunk %d: %d bytes, more than %d", i, len(c.Data), maxChunkBytes)
		}
		if c.StreamOffset != int64(len(got)) || c.ServerBytesBefore != 0 || c.Offset != 10*time.Millisecond {
			t.Errorf("chunk %d: stream offset %d (want %d), server bytes before %d, offset %v",
				i, c.StreamOffset, len(got), c.ServerBytesBefore, c.Offset)
		}
		got = append(got, c.Data...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the chunks hold %d bytes, not the %d sent", len(got), len(want))
	}
}
