package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// server is the bench's target: a small HTTP/1.1 server that answers the
// bench convention (httpwire.go) with keep-alive, pipelining and
// Connection: close, one goroutine per connection, using every core. It
// counts what it answered so that requests/s is measured at the target, not
// taken from the replayer's own accounting.
//
// The hot path does not allocate per request: requests are parsed in the
// bufio.Reader's buffer and bodies are written from one shared buffer.
type server struct {
	ln   net.Listener
	body []byte // shared read-only body bytes
	// think is how long the server waits before each answer: the live
	// workload's source thinks as the short capture's server did, so that
	// its sessions have the capture's shape (set before serving).
	think time.Duration

	conns, requests, bytesIn, bytesOut, bad atomic.Int64

	wg sync.WaitGroup
}

// serverStats is the server's answer to "stats" (one JSON line).
type serverStats struct {
	Conns    int64 `json:"conns"`
	Requests int64 `json:"requests"`
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	Bad      int64 `json:"bad_requests"`
}

const (
	serverBodyChunk = 1 << 20  // shared body buffer; larger bodies are written in pieces
	serverBufSize   = 32 << 10 // per-connection read and write buffers
	discardBufSize  = 256 << 10
)

func newServer(ln net.Listener, think time.Duration) *server {
	s := &server{ln: ln, think: think, body: bytes.Repeat([]byte{bodyByte}, serverBodyChunk)}
	s.wg.Add(1)
	go s.serve()
	return s
}

func (s *server) stats() serverStats {
	return serverStats{Conns: s.conns.Load(), Requests: s.requests.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Bad: s.bad.Load()}
}

// serve accepts until the listener is closed. Connection goroutines are
// not waited for: close ends the accept loop only, and the process exits
// with its connections (the bench's target lives as long as the run).
func (s *server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: keep serving what is open.
			continue
		}
		s.conns.Add(1)
		go s.handle(c)
	}
}

func (s *server) close() {
	s.ln.Close()
	s.wg.Wait()
}

// The connections' buffers are pooled, as a real server's are: fresh
// 32 KiB buffers for each of 10,000 short connections cost the target more
// in allocation and GC than the requests themselves, and the target shares
// the machine with the replayer it measures.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, serverBufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, serverBufSize) }}
)

// handle answers requests on one connection until the client closes, asks
// for Connection: close, or sends something outside the convention.
func (s *server) handle(c net.Conn) {
	defer c.Close()
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	defer func() { br.Reset(nil); readers.Put(br) }()
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c)
	defer func() { bw.Reset(nil); writers.Put(bw) }()
	var discard []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		in := int64(len(line))
		method, target, ok := parseRequestLine(line)
		// Parse the target now: line is only valid until the next read.
		size, okTarget := parseTarget(target)
		okTarget = okTarget && ok
		var clen int64
		closing := false
		for {
			h, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			in += int64(len(h))
			if len(bytes.TrimRight(h, "\r\n")) == 0 {
				break
			}
			if v, ok := headerValue(h, "content-length"); ok {
				if clen, ok = parseUint(v); !ok {
					okTarget = false
				}
			} else if v, ok := headerValue(h, "connection"); ok && bytes.EqualFold(v, []byte("close")) {
				closing = true
			}
		}
		if clen > 0 {
			n, err := s.discardBody(c, br, clen, &discard)
			in += n
			if err != nil {
				s.bytesIn.Add(in)
				return
			}
		}
		s.bytesIn.Add(in)
		s.requests.Add(1)
		if !okTarget || (method != "GET" && method != "POST" && method != "HEAD") {
			s.bad.Add(1)
			bw.WriteString(notFound)
			bw.Flush()
			return
		}
		if s.think > 0 {
			time.Sleep(s.think)
		}
		if err := s.answer(c, bw, size, closing, method == "HEAD"); err != nil {
			return
		}
		// Flush only when no further pipelined request is already here, as
		// a real server does: the answers to a pipelined batch leave
		// together.
		if br.Buffered() == 0 || closing {
			if bw.Flush() != nil {
				return
			}
		}
		if closing {
			return
		}
	}
}

// answer writes the header and n body bytes; a body larger than the write
// buffer goes straight to the conn in large writes.
func (s *server) answer(c net.Conn, bw *bufio.Writer, n int64, closing, head bool) error {
	var hb [160]byte
	h := appendResponseHeader(hb[:0], n, closing)
	bw.Write(h)
	out := int64(len(h))
	if !head {
		if n <= int64(bw.Available()) {
			bw.Write(s.body[:n])
		} else {
			if err := bw.Flush(); err != nil {
				return err
			}
			for left := n; left > 0; {
				k := min(left, int64(len(s.body)))
				if _, err := c.Write(s.body[:k]); err != nil {
					s.bytesOut.Add(out + n - left)
					return err
				}
				left -= k
			}
		}
		out += n
	}
	s.bytesOut.Add(out)
	return nil
}

// discardBody reads and drops n body bytes: first what the reader holds,
// then from the conn in large reads.
func (s *server) discardBody(c net.Conn, br *bufio.Reader, n int64, buf *[]byte) (int64, error) {
	var got int64
	if k := min(int64(br.Buffered()), n); k > 0 {
		br.Discard(int(k))
		got = k
	}
	if got == n {
		return got, nil
	}
	if *buf == nil {
		*buf = make([]byte, discardBufSize)
	}
	for got < n {
		k, err := c.Read((*buf)[:min(int64(len(*buf)), n-got)])
		got += int64(k)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func parseRequestLine(line []byte) (method string, target []byte, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	m, rest, ok1 := bytes.Cut(line, []byte(" "))
	t, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || !bytes.HasPrefix(proto, []byte("HTTP/1.")) {
		return "", nil, false
	}
	// The common methods as constants, so that the string conversion does
	// not allocate.
	switch string(m) {
	case "GET":
		return "GET", t, true
	case "POST":
		return "POST", t, true
	case "HEAD":
		return "HEAD", t, true
	}
	return "OTHER", t, true
}

// headerValue returns the trimmed value of header line h if its name is
// name (lower case), case-insensitively.
func headerValue(h []byte, name string) ([]byte, bool) {
	k, v, ok := bytes.Cut(h, []byte(":"))
	if !ok || len(k) != len(name) {
		return nil, false
	}
	for i := range k {
		c := k[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return nil, false
		}
	}
	return bytes.TrimSpace(v), true
}

func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// runServe is `tcopy-tun-bench serve`: the target, started by the harness
// inside its namespace. It prints "listening ADDR" once it accepts, answers
// "stats" lines on standard input with one JSON line on standard output,
// and exits when standard input ends (the harness is gone) or on SIGTERM.
func runServe(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tcopy-tun-bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	think := fs.Duration("think", 0, "wait this long before each answer")
	certFile := fs.String("tls-cert", "", "serve HTTPS with this certificate `FILE` (PEM; with -tls-key)")
	keyFile := fs.String("tls-key", "", "the certificate's key `FILE` (PEM)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if (*certFile == "") != (*keyFile == "") {
		fmt.Fprintln(stderr, "tcopy-tun-bench serve: -tls-cert and -tls-key go together")
		return exitUsage
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "tcopy-tun-bench serve: %v\n", err)
		return exitFailure
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "tcopy-tun-bench serve: %v\n", err)
			return exitFailure
		}
		// The server counts plaintext: what the replay's requests are.
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	s := newServer(ln, *think)
	defer s.close()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sig)
	lines := make(chan string)
	go func() {
		// Ends with standard input; the process exits right after.
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	enc := json.NewEncoder(stdout)
	for {
		select {
		case <-sig:
			return exitOK
		case l, ok := <-lines:
			if !ok {
				return exitOK
			}
			switch l {
			case "stats":
				if err := enc.Encode(s.stats()); err != nil {
					return exitFailure
				}
			case "quit":
				return exitOK
			default:
				fmt.Fprintf(stderr, "tcopy-tun-bench serve: unknown command %q\n", l)
			}
		}
	}
}
