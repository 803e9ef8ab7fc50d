package session

import (
	"strings"
	"testing"
)

// TestCaptureLoss: connections whose packets the capture lost (a live
// capture's kernel drops) are told apart from what the protocol did. A lost
// request is a client hole, not a server-first protocol; a lost FIN is taken
// from the peer's closing acknowledgment, so the session ends when the
// connection did (not at the end of the capture) and as it did; a lost
// handshake makes a partial session that starts at the first client byte; a
// server that really speaks first stays server-first.
func TestCaptureLoss(t *testing.T) {
	req := strings.Repeat("q", 91)
	resp := strings.Repeat("r", 235)
	tests := []struct {
		name  string
		steps []step
		end   End
		flags Flags
		cb    int64
		holes []Hole
		// closed: the session is emitted by the step that closed it, not
		// by Close at the end of the capture.
		closed bool
	}{
		{
			name: "request lost",
			steps: cat(handshake(0), []step{
				{ms: 2, dir: 's', fl: "A", seq: 1, ack: 92},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 92, data: resp},
				{ms: 2, dir: 's', fl: "FA", seq: 236, ack: 92},
				{ms: 3, dir: 'c', fl: "A", seq: 92, ack: 237},
				{ms: 3, dir: 'c', fl: "FA", seq: 92, ack: 237},
				{ms: 3, dir: 's', fl: "A", seq: 237, ack: 93},
			}),
			end: EndServerFIN, flags: Holes, cb: 91, holes: []Hole{{Server: false, Offset: 0, Len: 91}}, closed: true,
		},
		{
			name: "server FIN lost, the client's FIN acknowledges it",
			steps: cat(handshake(0), []step{
				{ms: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: req},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 92, data: resp},
				{ms: 3, dir: 'c', fl: "FA", seq: 92, ack: 237},
				{ms: 3, dir: 's', fl: "A", seq: 237, ack: 93},
			}),
			end: EndServerFIN, cb: 91, closed: true,
		},
		{
			name: "client FIN lost, the server's last ACK acknowledges it",
			steps: cat(handshake(0), []step{
				{ms: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: req},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 92, data: resp},
				{ms: 2, dir: 's', fl: "FA", seq: 236, ack: 92},
				{ms: 3, dir: 's', fl: "A", seq: 237, ack: 93},
			}),
			end: EndServerFIN, cb: 91, closed: true,
		},
		{
			// Everything but the handshake and the client's FIN lost: the
			// FIN's sequence number still says 91 bytes were sent, so the
			// replay knows there was a request it cannot send. (Whether
			// the acknowledged 236th server byte was a FIN cannot be told:
			// it is counted as a byte.)
			name: "request, answer and server FIN lost",
			steps: cat(handshake(0), []step{
				{ms: 3, dir: 'c', fl: "FA", seq: 92, ack: 237},
			}),
			end: EndClientFIN, flags: Holes, cb: 91,
			holes: []Hole{{Server: false, Offset: 0, Len: 91}, {Server: true, Offset: 0, Len: 236}},
		},
		{
			name: "handshake lost: partial from the first client byte",
			steps: []step{
				{ms: 1, dir: 'c', fl: "PA", seq: 1, ack: 1, data: req},
				{ms: 2, dir: 's', fl: "PA", seq: 1, ack: 92, data: resp},
				{ms: 2, dir: 's', fl: "FA", seq: 236, ack: 92},
				{ms: 3, dir: 'c', fl: "FA", seq: 92, ack: 237},
				{ms: 3, dir: 's', fl: "A", seq: 237, ack: 93},
			},
			end: EndServerFIN, flags: Partial, cb: 91, closed: true,
		},
		{
			name: "a greeting: the server speaks first",
			steps: cat(handshake(0), []step{
				{ms: 1, dir: 's', fl: "PA", seq: 1, ack: 1, data: "220 hello\r\n"},
				{ms: 2, dir: 'c', fl: "PA", seq: 1, ack: 12, data: "QUIT\r\n"},
				{ms: 3, dir: 's', fl: "FA", seq: 12, ack: 7},
				{ms: 3, dir: 'c', fl: "FA", seq: 7, ack: 13},
				{ms: 3, dir: 's', fl: "A", seq: 13, ack: 8},
			}),
			end: EndServerFIN, flags: ServerFirst, cb: 6, closed: true,
		},
		{
			name: "a greeting whose answer was lost stays server-first",
			steps: cat(handshake(0), []step{
				{ms: 1, dir: 's', fl: "PA", seq: 1, ack: 1, data: "220 hello\r\n"},
				{ms: 3, dir: 's', fl: "FA", seq: 12, ack: 7},
				{ms: 3, dir: 'c', fl: "FA", seq: 7, ack: 13},
				{ms: 3, dir: 's', fl: "A", seq: 13, ack: 8},
			}),
			end: EndServerFIN, flags: ServerFirst | Holes, cb: 6, holes: []Hole{{Offset: 0, Len: 6}}, closed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss, at, _ := runSteps(t, Config{}, nil, tt.steps)
			if len(ss) != 1 {
				t.Fatalf("%d sessions, want 1", len(ss))
			}
			s := ss[0]
			if s.End != tt.end || s.Flags != tt.flags || s.ClientBytes != tt.cb {
				t.Errorf("end %v flags %v client bytes %d; want %v %v %d", s.End, s.Flags, s.ClientBytes, tt.end, tt.flags, tt.cb)
			}
			if len(s.Holes) != len(tt.holes) {
				t.Errorf("holes %v, want %v", s.Holes, tt.holes)
			}
			for i := range min(len(s.Holes), len(tt.holes)) {
				if s.Holes[i] != tt.holes[i] {
					t.Errorf("hole %d: %+v, want %+v", i, s.Holes[i], tt.holes[i])
				}
			}
			if tt.closed && at[0] >= len(tt.steps) {
				t.Errorf("emitted by Close, after all %d steps: the connection's close was not seen", len(tt.steps))
			}
			checkInvariants(t, s)
		})
	}
}
