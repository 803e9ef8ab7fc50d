package capture_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// readAll reads every TCP segment of a capture held in memory; the packets
// are copies (Payload included).
func readAll(t testing.TB, data []byte, name string) ([]capture.Packet, capture.Stats, error) {
	t.Helper()
	src, err := capture.NewSource(bytes.NewReader(data), name)
	if err != nil {
		return nil, capture.Stats{}, err
	}
	return drain(src, name)
}

func drain(src capture.Source, name string) ([]capture.Packet, capture.Stats, error) {
	r := capture.NewReader(src, name)
	defer r.Close()
	var out []capture.Packet
	for {
		p, err := r.Next()
		if err == io.EOF {
			return out, r.Stats(), nil
		}
		if err != nil {
			return out, r.Stats(), err
		}
		c := *p
		c.Payload = append([]byte(nil), p.Payload...)
		out = append(out, c)
	}
}

// samePackets compares decoded packets with the builder's, field by field;
// times must agree within prec (the file format's resolution; 0 = exact).
func samePackets(want, got []capture.Packet, prec time.Duration) error {
	if len(want) != len(got) {
		return fmt.Errorf("got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		d := w.Time.Sub(g.Time)
		if d < 0 {
			d = -d
		}
		switch {
		case d > prec:
			return fmt.Errorf("packet %d: time %v, want %v (±%v)", i+1, g.Time, w.Time, prec)
		case w.N != g.N:
			return fmt.Errorf("packet %d: N %d, want %d", i+1, g.N, w.N)
		case w.Src != g.Src || w.Dst != g.Dst:
			return fmt.Errorf("packet %d: %v > %v, want %v > %v", i+1, g.Src, g.Dst, w.Src, w.Dst)
		case w.Seq != g.Seq || w.Ack != g.Ack:
			return fmt.Errorf("packet %d: seq/ack %d/%d, want %d/%d", i+1, g.Seq, g.Ack, w.Seq, w.Ack)
		case w.Flags != g.Flags || w.Window != g.Window:
			return fmt.Errorf("packet %d: flags %#x window %d, want %#x %d", i+1, g.Flags, g.Window, w.Flags, w.Window)
		case !bytes.Equal(w.Payload, g.Payload):
			return fmt.Errorf("packet %d: payload %q, want %q", i+1, g.Payload, w.Payload)
		case w.Missing != g.Missing:
			return fmt.Errorf("packet %d: missing %d, want %d", i+1, g.Missing, w.Missing)
		}
	}
	return nil
}

// wantKind asserts errors.Is(err, kind) and that the message is one line
// starting with prefix.
func wantKind(t *testing.T, err, kind error, prefix string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q does not match %v", err, kind)
	}
	msg := err.Error()
	if bytes.ContainsAny([]byte(msg), "\n\r") {
		t.Errorf("error is not one line: %q", msg)
	}
	if prefix != "" && !bytes.HasPrefix([]byte(msg), []byte(prefix)) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
}
