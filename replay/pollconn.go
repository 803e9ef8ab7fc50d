package replay

import (
	"errors"
	"net"
	"sync"
)

// pollAdapter makes a plain conn (kernel sockets, net.Pipe in tests) a
// PollConn, so the session engine has one owner loop for every conn: a
// reader goroutine fills a bounded queue that ReadNow empties, and WriteNow
// writes (blocking: the reader goroutine keeps reading meanwhile, so a
// target that answers as it reads does not stall the upload).
type pollAdapter struct {
	net.Conn
	ready chan struct{} // ReadReady
	wr    chan struct{} // WriteReady: always a token
	done  chan struct{} // closed when the reader goroutine has ended

	mu    sync.Mutex
	q     []byte // q[head:] are bytes read and not yet taken
	head  int
	err   error // the read side's end (io.EOF for the peer's FIN)
	room  *sync.Cond
	close bool
}

// pollQueueLimit bounds the bytes the reader goroutine holds: past it, it
// stops reading and TCP flow control slows the target down.
const pollQueueLimit = 256 << 10

var _ PollConn = (*pollAdapter)(nil)

// asPollConn returns c itself if it is a PollConn, else an adapter.
func asPollConn(c net.Conn) PollConn {
	if pc, ok := c.(PollConn); ok {
		return pc
	}
	a := &pollAdapter{Conn: c, ready: make(chan struct{}, 1), wr: make(chan struct{}, 1), done: make(chan struct{})}
	a.room = sync.NewCond(&a.mu)
	a.wr <- struct{}{}
	go a.read()
	return a
}

func (a *pollAdapter) read() {
	defer close(a.done)
	growStack()
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := a.Conn.Read(buf)
		a.mu.Lock()
		if a.head == len(a.q) {
			a.q, a.head = a.q[:0], 0
		}
		a.q = append(a.q, buf[:n]...)
		if err != nil {
			a.err = err
		}
		for err == nil && len(a.q)-a.head >= pollQueueLimit && !a.close {
			a.room.Wait()
		}
		stop := err != nil || a.close
		a.mu.Unlock()
		select {
		case a.ready <- struct{}{}:
		default:
		}
		if stop {
			return
		}
	}
}

func (a *pollAdapter) ReadNow(b []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head == len(a.q) {
		if a.err != nil {
			return 0, a.err
		}
		return 0, nil
	}
	n := copy(b, a.q[a.head:])
	a.head += n
	if a.head == len(a.q) {
		// Taken whole: start again at the front (no copying of what
		// is left, as shifting the queue on every read would).
		a.q, a.head = a.q[:0], 0
		if cap(a.q) > 2*pollQueueLimit {
			a.q = nil
		}
	} else if a.head >= pollQueueLimit {
		// Taken in part for a while: move the rest down once the taken
		// part is as large as the bound (amortized: each byte moves at
		// most once per bound's worth of reads).
		m := copy(a.q, a.q[a.head:])
		a.q, a.head = a.q[:m], 0
	}
	a.room.Signal()
	return n, nil
}

func (a *pollAdapter) WriteNow(b []byte) (int, error) { return a.Conn.Write(b) }

func (a *pollAdapter) ReadReady() <-chan struct{}  { return a.ready }
func (a *pollAdapter) WriteReady() <-chan struct{} { return a.wr }

// Close closes the conn and waits for the reader goroutine to end.
func (a *pollAdapter) Close() error {
	a.mu.Lock()
	a.close = true
	a.room.Signal()
	a.mu.Unlock()
	err := a.Conn.Close()
	<-a.done
	return err
}

// errNoCloseWrite: the conn cannot half-close; its Close sends the FIN.
var errNoCloseWrite = errors.New("conn cannot half-close")

// CloseWrite and Abort pass through to the conn where it has them.
func (a *pollAdapter) CloseWrite() error {
	if cw, ok := a.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoCloseWrite
}

func (a *pollAdapter) Abort() error {
	if ab, ok := a.Conn.(interface{ Abort() error }); ok {
		ab.Abort()
	} else if tc, ok := a.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
		tc.Close()
	} else {
		a.Conn.Close()
	}
	return nil
}
