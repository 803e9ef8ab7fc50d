package replay

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// memPair is an in-memory TCP connection with the parts of TCP the engine
// relies on: half-close (FIN), reset (RST), close with unread data resets,
// writes to a fully closed peer provoke a reset, and errors wrap the errno as
// the kernel's do. Buffers are unbounded, so writes never block.
type memPair struct {
	mu    sync.Mutex
	cond  *sync.Cond
	dir   [2]memDir // dir[i]: bytes written by end i, read by end 1-i
	rst   bool
	ready [2]chan struct{} // ready[i]: end i may have become readable
}

type memDir struct {
	buf    []byte
	fin    bool // the writer sent FIN
	closed bool // the reader closed its end (reads fail; writes provoke RST)
}

// memConn is one end of a memPair.
type memConn struct {
	p             *memPair
	me            int
	local, remote netip.AddrPort
}

func newMemPair(client, server netip.AddrPort) (*memConn, *memConn) {
	p := &memPair{ready: [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}}
	p.cond = sync.NewCond(&p.mu)
	return &memConn{p, 0, client, server}, &memConn{p, 1, server, client}
}

// broadcast wakes blocked Reads and gives both ends a ReadReady token.
func (p *memPair) broadcast() {
	p.cond.Broadcast()
	for _, ch := range p.ready {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// connKind is what the in-memory conns are to the engine. Tests of the
// engine run with both (forEachConnKind): the two read paths must behave
// the same.
type connKind int

const (
	// goroutineConns are plain net.Conns: the engine reads each session on
	// a reader goroutine, as with kernel sockets.
	goroutineConns connKind = iota
	// pollConns are PollConns: the session's owner goroutine reads, as
	// with the netstack.
	pollConns
)

// connKinds returns every connKind, in the order tests run them.
func connKinds() []connKind { return []connKind{goroutineConns, pollConns} }

func (k connKind) String() string {
	switch k {
	case goroutineConns:
		return "goroutine"
	case pollConns:
		return "poll"
	}
	return "connKind(" + strconv.Itoa(int(k)) + ")"
}

// forEachConnKind runs f as one subtest per connKind, named after it
// ("goroutine", "poll"). Each subtest checks for goroutine leaks
// (checkLeaks), so f runs the engine as a test of its own.
func forEachConnKind(t *testing.T, f func(t *testing.T, k connKind)) {
	t.Helper()
	for _, k := range connKinds() {
		t.Run(k.String(), func(t *testing.T) {
			checkLeaks(t)
			f(t, k)
		})
	}
}

// memPollConn is a memConn that is a PollConn. Its writes never block
// (memPair buffers are unbounded), so WriteReady never fires.
type memPollConn struct{ *memConn }

var _ PollConn = memPollConn{}

// ReadNow is Read without the wait.
func (c memPollConn) ReadNow(b []byte) (int, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	n, _, err := c.readLocked(b)
	return n, err
}

func (c memPollConn) WriteNow(b []byte) (int, error) { return c.Write(b) }
func (c memPollConn) ReadReady() <-chan struct{}     { return c.p.ready[c.me] }
func (c memPollConn) WriteReady() <-chan struct{}    { return nil }

func opErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "mem", Err: os.NewSyscallError(op, errno)}
}

func (c *memConn) in() *memDir  { return &c.p.dir[1-c.me] }
func (c *memConn) out() *memDir { return &c.p.dir[c.me] }

func (c *memConn) Read(b []byte) (int, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if n, wait, err := c.readLocked(b); !wait {
			return n, err
		}
		p.cond.Wait()
	}
}

// readLocked is one read; wait says nothing has arrived yet.
func (c *memConn) readLocked(b []byte) (n int, wait bool, err error) {
	in := c.in()
	switch {
	case in.closed:
		return 0, false, &net.OpError{Op: "read", Net: "mem", Err: net.ErrClosed}
	case len(in.buf) > 0:
		// Linux hands out data queued before an RST, then the error.
		n := copy(b, in.buf)
		in.buf = in.buf[n:]
		return n, false, nil
	case c.p.rst:
		return 0, false, opErr("read", syscall.ECONNRESET)
	case in.fin:
		return 0, false, io.EOF
	}
	return 0, true, nil
}

func (c *memConn) Write(b []byte) (int, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	out := c.out()
	switch {
	case c.in().closed:
		return 0, &net.OpError{Op: "write", Net: "mem", Err: net.ErrClosed}
	case p.rst:
		return 0, opErr("write", syscall.ECONNRESET)
	case out.fin:
		return 0, opErr("write", syscall.EPIPE)
	case out.closed:
		// The peer is gone: the segment is answered with an RST.
		p.rst = true
		p.broadcast()
		return len(b), nil
	}
	out.buf = append(out.buf, b...)
	p.broadcast()
	return len(b), nil
}

func (c *memConn) CloseWrite() error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.out().fin = true
	p.broadcast()
	return nil
}

func (c *memConn) Close() error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	in := c.in()
	if in.closed {
		return &net.OpError{Op: "close", Net: "mem", Err: net.ErrClosed}
	}
	in.closed = true
	if len(in.buf) > 0 {
		p.rst = true // closing with unread data resets, as in Linux
	}
	c.out().fin = true
	p.broadcast()
	return nil
}

// Abort closes with an RST.
func (c *memConn) Abort() error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.in().closed = true
	p.rst = true
	p.broadcast()
	return nil
}

// buffered returns how many bytes wait to be read at this end.
func (c *memConn) buffered() int {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return len(c.in().buf)
}

func (c *memConn) LocalAddr() net.Addr                { return net.TCPAddrFromAddrPort(c.local) }
func (c *memConn) RemoteAddr() net.Addr               { return net.TCPAddrFromAddrPort(c.remote) }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// memDialer connects the engine to scripted servers.
type memDialer struct {
	clock *fakeClock
	// dial, when set, decides a dial's fate: return an error to fail it,
	// or nil to connect (then serve runs).
	dial func(ctx context.Context, d dialRec) error
	// serve is the server side of each connection, run in its own
	// goroutine; the conn is closed when it returns.
	serve func(c *memConn, d dialRec)
	kind  connKind // of the conns DialTCP returns

	mu     sync.Mutex
	recs   []dialRec
	dialed chan dialRec // every successful or failed dial attempt, in order
	wg     sync.WaitGroup
}

type dialRec struct {
	N        int // dial number from 0
	Src, Dst netip.AddrPort
	At       time.Time // fake time of the dial
}

// newMemDialerKind returns a dialer handing out conns of kind k, whose
// server goroutines the test waits for at cleanup, so none reports into a
// finished test.
func newMemDialerKind(t testing.TB, k connKind, clock *fakeClock, serve func(c *memConn, d dialRec)) *memDialer {
	d := &memDialer{clock: clock, serve: serve, kind: k, dialed: make(chan dialRec, 1<<16)}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { d.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server goroutines still running at the end of the test")
		}
	})
	return d
}

func (d *memDialer) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	rec := dialRec{N: len(d.recs), Src: src, Dst: dst, At: d.clock.Now()}
	d.recs = append(d.recs, rec)
	d.mu.Unlock()
	d.dialed <- rec
	if d.dial != nil {
		if err := d.dial(ctx, rec); err != nil {
			return nil, &net.OpError{Op: "dial", Net: "mem", Addr: net.TCPAddrFromAddrPort(dst), Err: err}
		}
	}
	cc, sc := newMemPair(src, dst)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer sc.Close()
		if d.serve != nil {
			d.serve(sc, rec)
		}
	}()
	if d.kind == pollConns {
		return memPollConn{cc}, nil
	}
	return cc, nil
}

func (d *memDialer) records() []dialRec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]dialRec(nil), d.recs...)
}

// serveEach accepts on ln until it is closed and runs handle on each conn
// in its own goroutine, closing the conn after it. The listener is closed
// and the handlers are waited for at the end of the test.
func serveEach(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// readN reads exactly n bytes or fails the test (from a server goroutine:
// Errorf, not Fatalf).
func readN(t testing.TB, c net.Conn, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Errorf("server: read %d bytes: %v", n, err)
	}
	return string(b)
}

// readEOF expects the client's FIN next.
func readEOF(t testing.TB, c net.Conn) {
	t.Helper()
	var b [1]byte
	if n, err := c.Read(b[:]); err != io.EOF {
		t.Errorf("server: want EOF, got %d bytes, err %v", n, err)
	}
}

func TestMemPairSemantics(t *testing.T) {
	a, b := newMemPair(netip.MustParseAddrPort("198.18.0.1:1000"), netip.MustParseAddrPort("10.0.0.1:80"))
	a.Write([]byte("hi"))
	a.CloseWrite()
	if got := readN(t, b, 2); got != "hi" {
		t.Errorf("read %q", got)
	}
	readEOF(t, b)
	b.Write([]byte("after fin"))
	if got := readN(t, a, 9); got != "after fin" {
		t.Errorf("half-closed peer read %q", got)
	}
	b.Write([]byte("unread"))
	a.Close() // unread data: RST
	if _, err := b.Read(make([]byte, 1)); !isErrno(err, syscall.ECONNRESET) {
		t.Errorf("after close with unread data: %v, want ECONNRESET", err)
	}
	if _, err := a.Read(make([]byte, 1)); !isErrno(err, 0) {
		t.Errorf("read after own close: %v, want net.ErrClosed", err)
	}
}

func isErrno(err error, e syscall.Errno) bool {
	if e == 0 {
		return err != nil && errors.Is(err, net.ErrClosed)
	}
	return errors.Is(err, e)
}
