package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// t0 is the capture time the fake streams count from.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// pcapHeader is a little-endian microsecond pcap header, raw IP link type.
func pcapHeader() []byte {
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h, 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 262144)
	binary.LittleEndian.PutUint32(h[20:], 101)
	return h
}

// record is one pcap record at t0+ms milliseconds holding n bytes, the
// first of which is tag (so that a test can tell frames apart).
func record(ms int, n int, tag byte) []byte {
	at := t0.Add(time.Duration(ms) * time.Millisecond)
	r := make([]byte, 16+n)
	binary.LittleEndian.PutUint32(r, uint32(at.Unix()))
	binary.LittleEndian.PutUint32(r[4:], uint32(at.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(r[8:], uint32(n))
	binary.LittleEndian.PutUint32(r[12:], uint32(n))
	for i := 16; i < len(r); i++ {
		r[i] = tag
	}
	return r
}

// fakeAgent is an agent's stream that the test writes record by record.
type fakeAgent struct {
	t *testing.T
	w *io.PipeWriter
}

func addAgent(t *testing.T, m *Merger, name string) *fakeAgent {
	t.Helper()
	r, w := io.Pipe()
	if !m.Add(name, r) {
		t.Fatalf("Add %s: merger closed", name)
	}
	a := &fakeAgent{t: t, w: w}
	a.write(pcapHeader())
	t.Cleanup(func() { w.Close() })
	return a
}

func (a *fakeAgent) write(b []byte) {
	a.t.Helper()
	if _, err := a.w.Write(b); err != nil {
		a.t.Fatalf("write: %v", err)
	}
}

// frames writes one record per ms value, tagged tag.
func (a *fakeAgent) frames(tag byte, ms ...int) {
	a.t.Helper()
	for _, v := range ms {
		a.write(record(v, 20, tag))
	}
}

func (a *fakeAgent) close() { a.w.Close() }

// got is one frame as read: its time in ms after t0 and its tag.
type got struct {
	ms  int
	tag byte
}

// read reads n frames; a merge that holds them longer than 10 s fails the
// test (the windows of these tests are a minute or a few milliseconds).
func read(t *testing.T, m *Merger, n int) []got {
	t.Helper()
	var out []got
	for len(out) < n {
		m.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := m.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d of %d: %v (stats %+v)", len(out)+1, n, err, m.Stats())
		}
		if f.N != int(m.Stats().Frames) {
			t.Errorf("frame N %d, want %d", f.N, m.Stats().Frames)
		}
		out = append(out, got{int(f.Time.Sub(t0) / time.Millisecond), f.Data[0]})
	}
	return out
}

func wantEOF(t *testing.T, m *Merger) {
	t.Helper()
	m.SetReadDeadline(time.Now().Add(10 * time.Second))
	if f, err := m.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %+v, %v; want io.EOF", f, err)
	}
}

func equal(a, b []got) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Two agents that both send are merged in timestamp order without waiting
// for the window (a minute here): a frame goes out once every other agent
// has one waiting.
func TestMergeTwoAgentsInTimeOrder(t *testing.T) {
	m := NewMerger("test", Options{Window: time.Minute})
	defer m.Close()
	a, b := addAgent(t, m, "a"), addAgent(t, m, "b")
	a.frames('a', 1, 3, 5, 8)
	b.frames('b', 2, 4, 6, 7)
	want := []got{{1, 'a'}, {2, 'b'}, {3, 'a'}, {4, 'b'}, {5, 'a'}, {6, 'b'}}
	if g := read(t, m, 6); !equal(g, want) {
		t.Fatalf("merged %v, want %v", g, want)
	}
	// 7 (b) and 8 (a) wait for nothing more once both streams end.
	a.close()
	b.close()
	if g := read(t, m, 2); !equal(g, []got{{7, 'b'}, {8, 'a'}}) {
		t.Fatalf("after the ends: %v", g)
	}
	for m.Stats().Connected > 0 { // a's end may come after its last frame went out
		time.Sleep(time.Millisecond)
	}
	m.Close()
	wantEOF(t, m)
	s := m.Stats()
	if s.Frames != 8 || s.Late != 0 || s.Accepted != 2 || s.Failed != 0 || len(s.Agents) != 2 {
		t.Errorf("stats %+v", s)
	}
	for _, as := range s.Agents {
		if as.Frames != 4 || as.End != "end of stream" || as.Ended.IsZero() {
			t.Errorf("agent %+v", as)
		}
	}
}

// An agent that sends nothing holds the others back by the window only.
func TestMergeIdleAgentDelaysByWindowOnly(t *testing.T) {
	m := NewMerger("test", Options{Window: 20 * time.Millisecond})
	defer m.Close()
	a := addAgent(t, m, "a")
	addAgent(t, m, "idle")
	a.frames('a', 1, 2)
	if g := read(t, m, 2); !equal(g, []got{{1, 'a'}, {2, 'a'}}) {
		t.Fatalf("got %v", g)
	}
	if s := m.Stats(); s.Connected != 2 {
		t.Errorf("connected %d, want 2", s.Connected)
	}
}

// A frame older than one already delivered (an agent that connects late,
// or whose clock is behind) is delivered, its time raised, and counted.
func TestMergeLateFrameCountedNotLost(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	m := NewMerger("test", Options{Window: 5 * time.Millisecond, Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(f, a...))
	}})
	defer m.Close()
	a := addAgent(t, m, "a")
	a.frames('a', 100)
	if g := read(t, m, 1); !equal(g, []got{{100, 'a'}}) {
		t.Fatalf("got %v", g)
	}
	b := addAgent(t, m, "late")
	b.frames('b', 50)
	a.frames('a', 101)
	g := read(t, m, 2)
	if !equal(g, []got{{100, 'b'}, {101, 'a'}}) {
		t.Fatalf("got %v, want the late frame at 100 ms, then 101", g)
	}
	s := m.Stats()
	if s.Late != 1 || s.Agents[1].Late != 1 || s.Agents[0].Late != 0 {
		t.Errorf("late %d (agents %+v), want 1, of the late agent", s.Late, s.Agents)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(logs, "\n"), "agent late connected (2 connected), after the merge began: its frames older than 2026-01-02T03:04:05.1Z are delivered late") {
		t.Errorf("logs %q", logs)
	}
}

// An agent whose stream is not a capture, or breaks off inside a record,
// is reported and dropped; the other goes on.
func TestMergeFailingAgentDoesNotStopOthers(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	m := NewMerger("test", Options{Window: time.Minute, Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(f, a...))
	}})
	defer m.Close()
	good := addAgent(t, m, "good")
	junk, jw := io.Pipe()
	m.Add("junk", junk)
	go func() {
		jw.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		jw.Close()
	}()
	cut := addAgent(t, m, "cut")
	cut.frames('c', 2)
	cut.write(record(3, 20, 'c')[:10])
	cut.close()
	good.frames('g', 1, 4)
	good.close()
	if g := read(t, m, 3); !equal(g, []got{{1, 'g'}, {2, 'c'}, {4, 'g'}}) {
		t.Fatalf("got %v", g)
	}
	// Each end is logged once its agent has gone (after Stats shows it).
	ends := func() int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(strings.Join(logs, "\n"), "disconnected after")
	}
	for deadline := time.Now().Add(10 * time.Second); ends() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	m.Close()
	wantEOF(t, m)
	s := m.Stats()
	if s.Failed != 1 {
		t.Errorf("failed %d, want 1 (the junk stream)", s.Failed)
	}
	how := map[string]string{}
	for _, a := range s.Agents {
		how[a.Name] = a.End
	}
	if !strings.Contains(how["junk"], "not a pcap") || !strings.Contains(how["cut"], "disconnected") || how["good"] != "end of stream" {
		t.Errorf("ends %q", how)
	}
	if n := ends(); n != 3 {
		t.Errorf("%d end lines logged, want 3: %q", n, logs)
	}
}

// An agent cannot make the merge hold more than AgentBuffer bytes of its
// frames: past it the merge moves on (the frames stay in order) and the
// agent's reader waits.
func TestMergeAgentBufferBound(t *testing.T) {
	const n, size = 50, 20
	m := NewMerger("test", Options{Window: time.Minute, AgentBuffer: 3 * size})
	defer m.Close()
	a := addAgent(t, m, "a")
	addAgent(t, m, "idle") // without it nothing would wait
	go func() {
		for i := range n {
			if _, err := a.w.Write(record(i, size, 'a')); err != nil {
				return
			}
		}
	}()
	// The last three frames (the buffer's worth) wait for the window: the
	// idle agent could still send an earlier one. The others went out
	// under the buffer's bound.
	g := read(t, m, n-3)
	for i := range g {
		if g[i].ms != i {
			t.Fatalf("frame %d at %d ms, want %d", i, g[i].ms, i)
		}
	}
	if s := m.Stats(); s.MaxHeld > 3*size || s.MaxHeld == 0 {
		t.Errorf("held %d bytes at most, want 1 to %d", s.MaxHeld, 3*size)
	}
}

// Frames longer than the snap length are cut, counted, and keep their
// wire length.
func TestMergeSnapLen(t *testing.T) {
	m := NewMerger("test", Options{SnapLen: 8})
	defer m.Close()
	a := addAgent(t, m, "a")
	a.write(record(1, 20, 'a'))
	m.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := m.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Data) != 8 || f.Len != 20 || m.Stats().Cut != 1 {
		t.Errorf("frame of %d bytes (wire %d), cut %d; want 8 (20), 1", len(f.Data), f.Len, m.Stats().Cut)
	}
}

// Close delivers what waits, then io.EOF; a deadline on a quiet merge is
// os.ErrDeadlineExceeded and the merge goes on.
func TestMergeDeadlineAndCloseDrains(t *testing.T) {
	m := NewMerger("test", Options{Window: time.Minute})
	a := addAgent(t, m, "a")
	addAgent(t, m, "idle")
	m.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	if _, err := m.ReadFrame(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("quiet merge: %v, want os.ErrDeadlineExceeded", err)
	}
	a.frames('a', 1, 2)
	for m.Stats().Agents[0].Frames < 2 {
		time.Sleep(time.Millisecond)
	}
	m.Close()
	m.Close() // idempotent
	if g := read(t, m, 2); !equal(g, []got{{1, 'a'}, {2, 'a'}}) {
		t.Fatalf("got %v", g)
	}
	wantEOF(t, m)
	if m.Add("after", strings.NewReader("")) {
		t.Error("Add after Close accepted an agent")
	}
}

// An agent silent for StallAfter is reported once, then again as sending.
func TestMergeStallReported(t *testing.T) {
	var mu sync.Mutex
	var logs []string
	m := NewMerger("test", Options{Window: time.Millisecond, StallAfter: 20 * time.Millisecond, Logf: func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(f, a...))
	}})
	defer m.Close()
	a := addAgent(t, m, "a")
	for m.Stats().Stalls == 0 {
		m.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		if _, err := m.ReadFrame(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
	}
	a.frames('a', 1)
	read(t, m, 1)
	s := m.Stats()
	if s.Stalls != 1 || s.Agents[0].Stalls != 1 {
		t.Errorf("stalls %d (agent %d), want 1", s.Stalls, s.Agents[0].Stalls)
	}
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(logs, "\n")
	if !strings.Contains(all, "stalled") || !strings.Contains(all, "sending again") {
		t.Errorf("logs %q", logs)
	}
}

// Listen takes agents from the peers allowed, at most MaxAgents at once.
func TestListenAllowAndMaxAgents(t *testing.T) {
	dial := func(addr net.Addr) net.Conn {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	waitRefused := func(m *Merger, n int) {
		for deadline := time.Now().Add(10 * time.Second); m.Stats().Refused < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("refused %d, want %d", m.Stats().Refused, n)
			}
		}
	}

	// Only 10.0.0.0/8 allowed: a loopback peer is refused.
	m, err := Listen("127.0.0.1:0", Options{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	dial(m.Addr())
	waitRefused(m, 1)
	if s := m.Stats(); s.Accepted != 0 {
		t.Errorf("accepted %d", s.Accepted)
	}
	m.Close()

	// Default (loopback peers), one agent at most: it sends, a second is
	// refused.
	m, err = Listen("127.0.0.1:0", Options{MaxAgents: 1, Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := dial(m.Addr())
	c.Write(append(pcapHeader(), record(7, 20, 'x')...))
	if g := read(t, m, 1); !equal(g, []got{{7, 'x'}}) {
		t.Fatalf("got %v", g)
	}
	dial(m.Addr())
	waitRefused(m, 1)
	if s := m.Stats(); s.Accepted != 1 || s.Connected != 1 {
		t.Errorf("stats %+v", s)
	}
}

// Dial reads one agent's stream to its end.
func TestDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(append(append(pcapHeader(), record(1, 20, 'd')...), record(2, 20, 'd')...))
		c.Close()
	}()
	m, err := Dial(context.Background(), ln.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if g := read(t, m, 2); !equal(g, []got{{1, 'd'}, {2, 'd'}}) {
		t.Fatalf("got %v", g)
	}
	wantEOF(t, m)
	var _ capture.Source = m
}
