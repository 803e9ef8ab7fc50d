package netstack

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn is a TCP connection on a Stack. It implements net.Conn, plus
// CloseWrite, CloseRead and Abort.
//
// Errors wrap syscall.Errno values (inside *net.OpError and *os.SyscallError,
// as the net package does), so errors.Is(err, syscall.ECONNRESET) works;
// a deadline gives an error that matches os.ErrDeadlineExceeded; operations
// after Close give one that matches net.ErrClosed; a FIN gives io.EOF.
//
// Read and Write may be called concurrently with each other and with Close
// and the deadline setters, as for any net.Conn. Concurrent Reads (or
// Writes) are serialised.
type Conn struct {
	st     *Stack
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	local  *net.TCPAddr
	remote *net.TCPAddr
	// release lists the NIC addresses to hand back to st on Close (see
	// Stack.dial); zero entries are unused. Accepted conns release
	// nothing: their address belongs to the listener.
	release [2]netip.Addr

	// Persistent waiter entries: registered once, so a blocking Read or
	// Write allocates nothing. Their channels have room for one token, so
	// a notification between "would block" and the select is not lost.
	readEntry  waiter.Entry
	readCh     chan struct{}
	writeEntry waiter.Entry
	writeCh    chan struct{}

	readMu  sync.Mutex
	readBuf tcpip.SliceWriter // guarded by readMu; kept here so Read does not allocate

	writeMu  sync.Mutex
	writeBuf bytes.Reader // guarded by writeMu; kept here so Write does not allocate

	rd, wd deadline

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

func newConn(st *Stack, ep tcpip.Endpoint, wq *waiter.Queue, release [2]netip.Addr) *Conn {
	c := &Conn{
		st:      st,
		ep:      ep,
		wq:      wq,
		release: release,
		readCh:  make(chan struct{}, 1),
		writeCh: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	c.rd.init()
	c.wd.init()
	// HUp and Err wake both sides: a reset or an abort must end a blocked
	// Write as well as a blocked Read.
	c.readEntry.Init(waiter.ChannelNotifier(c.readCh), waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr)
	c.writeEntry.Init(waiter.ChannelNotifier(c.writeCh), waiter.WritableEvents|waiter.EventHUp|waiter.EventErr)
	wq.EventRegister(&c.readEntry)
	wq.EventRegister(&c.writeEntry)
	return c
}

// setAddrs records the endpoint's addresses once they are final (after
// Connect or Accept), so LocalAddr and RemoteAddr do not allocate.
func (c *Conn) setAddrs() {
	if a, err := c.ep.GetLocalAddress(); err == nil {
		c.local = fullToTCPAddr(a)
	}
	if a, err := c.ep.GetRemoteAddress(); err == nil {
		c.remote = fullToTCPAddr(a)
	}
}

func fullToTCPAddr(a tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}

func (c *Conn) opError(op string, err error) error {
	e := &net.OpError{Op: op, Net: "tcp", Err: err}
	// Leave the interfaces nil rather than holding a typed nil.
	if c.local != nil {
		e.Source = c.local
	}
	if c.remote != nil {
		e.Addr = c.remote
	}
	return e
}

// Read implements net.Conn. It returns io.EOF after the peer's FIN.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		select {
		case <-c.done:
			return 0, c.opError("read", net.ErrClosed)
		case <-c.rd.expired():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		default:
		}
		if len(b) == 0 {
			return 0, nil
		}
		n, wait, err := c.tryRead(b)
		if !wait {
			return n, err
		}
		select {
		case <-c.readCh:
		case <-c.rd.expired():
		case <-c.done:
		}
	}
}

// ReadNow reads what has arrived without waiting: it returns 0, nil when
// nothing has, io.EOF after the peer's FIN. It implements replay.PollConn,
// with ReadReady.
func (c *Conn) ReadNow(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.isClosed() {
		return 0, c.opError("read", net.ErrClosed)
	}
	if len(b) == 0 {
		return 0, nil
	}
	n, _, err := c.tryRead(b)
	return n, err
}

// tryRead is one read from the endpoint; wait says nothing has arrived.
// The caller holds readMu.
func (c *Conn) tryRead(b []byte) (n int, wait bool, err error) {
	c.readBuf = b
	res, terr := c.ep.Read(&c.readBuf, tcpip.ReadOptions{})
	c.readBuf = nil
	switch terr.(type) {
	case nil:
		if res.Count > 0 {
			// Feed receive-buffer moderation (auto-tuning), as gonet
			// does: it sizes the window from what the reader consumes.
			c.ep.ModerateRecvBuf(res.Count)
		}
		return res.Count, false, nil
	case *tcpip.ErrWouldBlock:
		return 0, true, nil
	case *tcpip.ErrClosedForReceive:
		return 0, false, io.EOF
	default:
		return 0, false, c.opError("read", convertError("read", terr))
	}
}

// Write implements net.Conn. It returns after all of b is in the send buffer
// or with an error; n counts the bytes accepted before the error.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n := 0
	for {
		select {
		case <-c.done:
			return n, c.opError("write", net.ErrClosed)
		case <-c.wd.expired():
			return n, c.opError("write", os.ErrDeadlineExceeded)
		default:
		}
		if n == len(b) {
			return n, nil
		}
		m, wait, err := c.tryWrite(b[n:])
		n += m
		if err != nil {
			return n, err
		}
		if wait {
			select {
			case <-c.writeCh:
			case <-c.wd.expired():
			case <-c.done:
			}
		}
	}
}

// WriteNow writes as much of b as the send buffer takes, without waiting:
// it may return less than len(b) (0, nil when the buffer is full). It
// implements replay.PollConn, with WriteReady.
func (c *Conn) WriteNow(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.isClosed() {
		return 0, c.opError("write", net.ErrClosed)
	}
	if len(b) == 0 {
		return 0, nil
	}
	n, _, err := c.tryWrite(b)
	return n, err
}

// tryWrite is one write to the endpoint; wait says the send buffer is full
// (after n bytes). The caller holds writeMu.
func (c *Conn) tryWrite(b []byte) (n int, wait bool, err error) {
	c.writeBuf.Reset(b)
	m, terr := c.ep.Write(&c.writeBuf, tcpip.WriteOptions{})
	c.writeBuf.Reset(nil)
	switch terr.(type) {
	case nil:
		return int(m), false, nil
	case *tcpip.ErrWouldBlock:
		return int(m), true, nil
	default:
		return int(m), false, c.opError("write", convertError("write", terr))
	}
}

// ReadReady receives a token when the conn may have become readable, or
// hung up. Tokens may be stale, none is lost; a blocked Read consumes them
// too, so use either ReadReady or Read.
func (c *Conn) ReadReady() <-chan struct{} { return c.readCh }

// WriteReady is ReadReady for writability.
func (c *Conn) WriteReady() <-chan struct{} { return c.writeCh }

// CloseWrite sends a FIN after the queued data; reading continues.
func (c *Conn) CloseWrite() error {
	if c.isClosed() {
		return c.opError("close", net.ErrClosed)
	}
	if err := c.ep.Shutdown(tcpip.ShutdownWrite); err != nil {
		return c.opError("close", convertError("shutdown", err))
	}
	return nil
}

// CloseRead shuts the receiving side: further Reads return io.EOF.
func (c *Conn) CloseRead() error {
	if c.isClosed() {
		return c.opError("close", net.ErrClosed)
	}
	if err := c.ep.Shutdown(tcpip.ShutdownRead); err != nil {
		return c.opError("close", convertError("shutdown", err))
	}
	return nil
}

// Abort closes the connection with an RST instead of a FIN (SO_LINGER 0),
// discarding unsent data.
func (c *Conn) Abort() error {
	if c.isClosed() {
		return c.opError("close", net.ErrClosed)
	}
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	return c.Close()
}

// Close closes the connection (FIN, or RST if unread data is pending, as on
// Linux). Blocked Reads and Writes return net.ErrClosed. A second Close
// returns an error matching net.ErrClosed.
func (c *Conn) Close() error {
	closed := false
	c.closeOnce.Do(func() {
		closed = true
		close(c.done)
		c.wq.EventUnregister(&c.readEntry)
		c.wq.EventUnregister(&c.writeEntry)
		c.ep.Close()
		c.rd.stop()
		c.wd.stop()
		for _, a := range c.release {
			if a.IsValid() {
				c.st.releaseAddr(a)
			}
		}
	})
	if !closed {
		return c.opError("close", net.ErrClosed)
	}
	return nil
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr {
	if c.local == nil {
		return nil
	}
	return c.local
}

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote == nil {
		return nil
	}
	return c.remote
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

// deadline is one direction's deadline: a channel that is closed when the
// deadline passes. A blocked operation selects on it; moving a deadline that
// has not yet passed keeps the channel (so a blocked operation sees the new
// time), and moving one that has passed makes a fresh channel. The timer is
// reused, so setting a deadline per operation allocates nothing after the
// first.
type deadline struct {
	mu    sync.Mutex
	when  time.Time
	ch    chan struct{}
	fired bool // ch is closed
	timer *time.Timer
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

func (d *deadline) expired() <-chan struct{} {
	d.mu.Lock()
	ch := d.ch
	d.mu.Unlock()
	return ch
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.when = t
	if d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		if d.timer != nil {
			d.timer.Stop()
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if d.timer != nil {
			d.timer.Stop()
		}
		close(d.ch)
		d.fired = true
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(dur, d.fire)
	} else {
		d.timer.Reset(dur)
	}
}

// fire runs on the timer. A stale firing (the deadline moved later or was
// cleared after the timer had already started this function) finds the
// deadline not yet passed and does nothing; the re-armed timer fires again.
func (d *deadline) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fired || d.when.IsZero() || time.Now().Before(d.when) {
		return
	}
	close(d.ch)
	d.fired = true
}

func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
}
