package capture_test

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

// fragStep is one fragment fed to the decoder and what must come out.
type fragStep struct {
	frag []byte
	dt   time.Duration // capture time after t0
	want capture.Kind
}

func runFrags(t *testing.T, d *capture.Decoder, steps []fragStep) *capture.Packet {
	t.Helper()
	var p capture.Packet
	var last *capture.Packet
	for i, s := range steps {
		f := capture.Frame{N: i + 1, Time: t0.Add(s.dt), LinkType: rt.LinkRaw, Data: s.frag, Len: len(s.frag)}
		kind, err := d.Decode(&f, &p)
		if kind != s.want {
			t.Fatalf("step %d: Decode = %v, %v; want %v", i+1, kind, err, s.want)
		}
		if kind == capture.KindTCP {
			c := p
			c.Payload = bytes.Clone(p.Payload)
			last = &c
		}
	}
	return last
}

func bigSeg(v6 bool, n int) (capture.Packet, []byte) {
	src, dst := "10.0.0.1:5555", "10.0.0.2:80"
	if v6 {
		src, dst = "[fd00::1]:5555", "[fd00::2]:80"
	}
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 10))
	}
	p := seg(src, dst, b.String()[:n])
	return p, rt.IPPacket(&p, 0x4242)
}

func TestDefrag(t *testing.T) {
	p4, ip4 := bigSeg(false, 3000)
	p6, ip6 := bigSeg(true, 3000)
	f4 := rt.FragmentIPv4(ip4, 800) // 4 fragments
	f6 := rt.FragmentIPv6(ip6, 800, 77)
	const F, T = capture.KindFragment, capture.KindTCP
	// overlap4 re-sends bytes 400.. of the second fragment's range with
	// different content: the first copy must win.
	overlap := func(frags [][]byte) []byte {
		o := bytes.Clone(frags[1])
		for i := 20 + 400; i < len(o); i++ {
			o[i] = '#'
		}
		return o
	}
	tests := []struct {
		name  string
		steps []fragStep
		want  capture.Packet
		stats capture.FragStats
	}{
		{"ipv4 in order", []fragStep{{f4[0], 0, F}, {f4[1], 0, F}, {f4[2], 0, F}, {f4[3], 0, T}}, p4, capture.FragStats{Fragments: 4, Reassembled: 1}},
		{"ipv4 reversed", []fragStep{{f4[3], 0, F}, {f4[2], 0, F}, {f4[1], 0, F}, {f4[0], 0, T}}, p4, capture.FragStats{Fragments: 4, Reassembled: 1}},
		{"ipv4 duplicates and overlap", []fragStep{{f4[1], 0, F}, {f4[0], 0, F}, {f4[1], 0, F}, {overlap(f4), 0, F}, {f4[3], 0, F}, {f4[2], 0, T}}, p4, capture.FragStats{Fragments: 6, Reassembled: 1}},
		{"ipv6 shuffled", []fragStep{{f6[2], 0, F}, {f6[0], 0, F}, {f6[3], 0, F}, {f6[1], 0, T}}, p6, capture.FragStats{Fragments: 4, Reassembled: 1}},
		{"interleaved v4 v6", []fragStep{{f6[0], 0, F}, {f4[0], 0, F}, {f6[1], 0, F}, {f4[1], 0, F}, {f6[2], 0, F}, {f4[2], 0, F}, {f4[3], 0, T}, {f6[3], 0, T}}, p6, capture.FragStats{Fragments: 8, Reassembled: 2}},
		{"timeout", []fragStep{{f4[0], 0, F}, {f4[1], 0, F}, {f4[2], 61 * time.Second, F}, {f4[3], 61 * time.Second, F}}, capture.Packet{}, capture.FragStats{Fragments: 4, Dropped: 1}},
		{"within timeout", []fragStep{{f4[0], 0, F}, {f4[1], 0, F}, {f4[2], 59 * time.Second, F}, {f4[3], 59 * time.Second, T}}, p4, capture.FragStats{Fragments: 4, Reassembled: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := capture.NewDecoder()
			got := runFrags(t, d, tc.steps)
			if st := d.FragStats(); st != tc.stats {
				t.Errorf("stats %+v, want %+v", st, tc.stats)
			}
			if tc.want.Src.IsValid() {
				if got == nil {
					t.Fatal("no segment")
				}
				w := tc.want
				w.N, w.Time = got.N, got.Time
				if err := samePackets([]capture.Packet{w}, []capture.Packet{*got}, 0); err != nil {
					t.Fatal(err)
				}
				if last := tc.steps[len(tc.steps)-1]; got.N != len(tc.steps) || !got.Time.Equal(t0.Add(last.dt)) {
					t.Errorf("segment N %d time %v: want the completing frame's", got.N, got.Time)
				}
			}
		})
	}
}

func TestDefragEdges(t *testing.T) {
	_, ip4 := bigSeg(false, 3000)
	f4 := rt.FragmentIPv4(ip4, 800)

	t.Run("incomplete at end", func(t *testing.T) {
		d := capture.NewDecoder()
		runFrags(t, d, []fragStep{{f4[0], 0, capture.KindFragment}, {f4[2], 0, capture.KindFragment}})
		d.Flush()
		if st := d.FragStats(); st.Dropped != 1 || st.Reassembled != 0 {
			t.Fatalf("stats %+v, want 1 dropped", st)
		}
	})

	t.Run("udp fragments are not kept", func(t *testing.T) {
		d := capture.NewDecoder()
		u := bytes.Clone(f4[0])
		u[9] = 17
		runFrags(t, d, []fragStep{{u, 0, capture.KindNotTCP}})
		if st := d.FragStats(); st.Fragments != 0 {
			t.Fatalf("stats %+v", st)
		}
	})

	t.Run("cut by snap length", func(t *testing.T) {
		d := capture.NewDecoder()
		var p capture.Packet
		f := capture.Frame{N: 1, LinkType: rt.LinkRaw, Data: f4[0][:100], Len: len(f4[0])}
		if k, err := d.Decode(&f, &p); k != capture.KindTruncated {
			t.Fatalf("Decode = %v, %v", k, err)
		}
	})

	t.Run("bad fragment length", func(t *testing.T) {
		d := capture.NewDecoder()
		b := bytes.Clone(f4[0][:20+13]) // 13 bytes with more-fragments set
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		var p capture.Packet
		f := capture.Frame{N: 1, LinkType: rt.LinkRaw, Data: b, Len: len(b)}
		k, err := d.Decode(&f, &p)
		if k != capture.KindMalformed {
			t.Fatalf("Decode = %v, %v", k, err)
		}
		wantKind(t, err, capture.ErrMalformed, "ipv4 non-final fragment of 13 bytes (not a multiple of 8)")
	})

	t.Run("past 64k", func(t *testing.T) {
		d := capture.NewDecoder()
		b := bytes.Clone(f4[3])
		binary.BigEndian.PutUint16(b[6:], 0x1fff) // offset 65528
		var p capture.Packet
		f := capture.Frame{N: 1, LinkType: rt.LinkRaw, Data: b, Len: len(b)}
		k, err := d.Decode(&f, &p)
		if k != capture.KindMalformed {
			t.Fatalf("Decode = %v, %v", k, err)
		}
		wantKind(t, err, capture.ErrMalformed, "ipv4 fragment at offset 65528")
	})

	t.Run("conflicting ends", func(t *testing.T) {
		d := capture.NewDecoder()
		early := bytes.Clone(f4[1])
		binary.BigEndian.PutUint16(early[6:], binary.BigEndian.Uint16(early[6:])&^0x2000) // last fragment, too early
		runFrags(t, d, []fragStep{{f4[0], 0, capture.KindFragment}, {f4[3], 0, capture.KindFragment}, {early, 0, capture.KindFragment}})
		if st := d.FragStats(); st.Dropped != 1 {
			t.Fatalf("stats %+v, want the datagram dropped", st)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		// 1500 datagrams that never complete: state stays at 1024, the
		// oldest are dropped, and a complete one still reassembles.
		d := capture.NewDecoder()
		var p capture.Packet
		for i := 0; i < 1500; i++ {
			b := bytes.Clone(f4[0])
			binary.BigEndian.PutUint16(b[4:], uint16(i))
			f := capture.Frame{N: i + 1, Time: t0.Add(time.Duration(i) * time.Millisecond), LinkType: rt.LinkRaw, Data: b, Len: len(b)}
			if k, err := d.Decode(&f, &p); k != capture.KindFragment {
				t.Fatalf("fragment %d: %v %v", i, k, err)
			}
		}
		if st := d.FragStats(); st.Dropped != 1500-1024 {
			t.Fatalf("stats %+v, want %d dropped", st, 1500-1024)
		}
		got := runFrags(t, d, []fragStep{{f4[0], 2 * time.Second, capture.KindFragment}, {f4[1], 2 * time.Second, capture.KindFragment},
			{f4[2], 2 * time.Second, capture.KindFragment}, {f4[3], 2 * time.Second, capture.KindTCP}})
		if got == nil || len(got.Payload) != 3000 {
			t.Fatal("no reassembly after eviction")
		}
	})
}

// TestDefragByteBound: datagrams whose buffers would together pass 32 MiB
// push the oldest out.
func TestDefragByteBound(t *testing.T) {
	// A last fragment at offset 64000 makes a datagram of 64000+len bytes.
	_, ip := bigSeg(false, 100)
	last := bytes.Clone(ip)
	binary.BigEndian.PutUint16(last[6:], 64000/8)
	size := 64000 + len(last) - 20
	d := capture.NewDecoder()
	var p capture.Packet
	const n = 600
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint16(last[4:], uint16(i))
		f := capture.Frame{N: i + 1, Time: t0, LinkType: rt.LinkRaw, Data: last, Len: len(last)}
		if k, err := d.Decode(&f, &p); k != capture.KindFragment {
			t.Fatalf("fragment %d: %v %v", i, k, err)
		}
	}
	// The allocator rounds a buffer up to its size class.
	buf := cap(make([]byte, 0, size))
	if st, want := d.FragStats(), int64(n-(32<<20)/buf); st.Dropped != want {
		t.Fatalf("dropped %d datagrams, want %d (32 MiB / %d-byte buffers kept)", st.Dropped, want, buf)
	}
}

// TestDefragHoles: a datagram in hundreds of separate pieces is given up.
func TestDefragHoles(t *testing.T) {
	_, ip := bigSeg(false, 100)
	d := capture.NewDecoder()
	var p capture.Packet
	for i := 0; i < 300; i++ {
		b := bytes.Clone(ip[:20+8])
		binary.BigEndian.PutUint16(b[2:], 28)
		binary.BigEndian.PutUint16(b[6:], 0x2000|uint16(i*2)) // every other 8-byte unit
		f := capture.Frame{N: i + 1, Time: t0, LinkType: rt.LinkRaw, Data: b, Len: len(b)}
		if k, err := d.Decode(&f, &p); k != capture.KindFragment {
			t.Fatalf("fragment %d: %v %v", i, k, err)
		}
	}
	if st := d.FragStats(); st.Dropped != 1 {
		t.Fatalf("stats %+v, want the datagram dropped after 256 pieces", st)
	}
}

// TestDefragAllocs: reassembly reuses its buffers once warm.
func TestDefragAllocs(t *testing.T) {
	_, ip4 := bigSeg(false, 3000)
	f4 := rt.FragmentIPv4(ip4, 800)
	d := capture.NewDecoder()
	var p capture.Packet
	frames := make([]capture.Frame, len(f4))
	for i := range f4 {
		frames[i] = capture.Frame{N: i + 1, Time: t0, LinkType: rt.LinkRaw, Data: f4[i], Len: len(f4[i])}
	}
	allocs := testing.AllocsPerRun(50, func() {
		for i := range frames {
			d.Decode(&frames[i], &p)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per reassembled datagram, want 0 once warm", allocs)
	}
}
