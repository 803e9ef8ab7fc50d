package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// demoServer is the bundled target of `tcopy-tun demo`: a small HTTP/1.1
// server that answers exactly as the server in testdata/demo-http.pcap did
// (testdata/README.md, "Response convention"), so that a replay can match
// the capture byte for byte, and that counts what arrived so the demo shows
// the server's side, not just the replayer's. It supports keep-alive and
// pipelining (requests are answered in order from one buffered reader).
type demoServer struct {
	ln net.Listener
	wg sync.WaitGroup

	// tweak, when set, changes an answer: a test's candidate build that
	// answers a route differently, or later. nil for the demo.
	tweak func(method, target, body string) (string, time.Duration)

	mu       sync.Mutex
	conns    int
	requests map[string]int // "METHOD path" → count
	bodyLen  int64
}

func newDemoServer(ln net.Listener) *demoServer { return newTweakedDemoServer(ln, nil) }

// newTweakedDemoServer serves with tweak changing the answers (nil: none).
func newTweakedDemoServer(ln net.Listener, tweak func(method, target, body string) (string, time.Duration)) *demoServer {
	s := &demoServer{ln: ln, requests: map[string]int{}, tweak: tweak}
	s.wg.Add(1)
	go s.serve()
	return s
}

// serve accepts until the listener is closed.
func (s *demoServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(c)
		}()
	}
}

// handle answers requests on one connection until the client closes, a
// request asks for Connection: close, or a request is malformed.
func (s *demoServer) handle(c net.Conn) {
	r := textproto.NewReader(bufio.NewReader(c))
	w := bufio.NewWriter(c)
	for {
		line, err := r.ReadLine()
		if err != nil {
			return
		}
		method, target, ok := parseRequestLine(line)
		if !ok {
			return
		}
		hdr, err := r.ReadMIMEHeader()
		if err != nil {
			return
		}
		n, _ := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
		if n < 0 {
			return
		}
		if _, err := io.CopyN(io.Discard, r.R, n); err != nil {
			return
		}
		s.mu.Lock()
		s.requests[method+" "+target]++
		s.bodyLen += n
		s.mu.Unlock()

		body := "hello " + target + "\n"
		if method == "POST" {
			body = fmt.Sprintf("got %d bytes\n", n)
		}
		if s.tweak != nil {
			var delay time.Duration
			body, delay = s.tweak(method, target, body)
			time.Sleep(delay)
		}
		closing := strings.EqualFold(hdr.Get("Connection"), "close")
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n", len(body))
		if closing {
			w.WriteString("Connection: close\r\n")
		}
		w.WriteString("\r\n")
		w.WriteString(body)
		// Flush only when no further pipelined request is already buffered,
		// as a real server does: answers to a pipelined batch leave together.
		if r.R.Buffered() == 0 || closing {
			if w.Flush() != nil {
				return
			}
		}
		if closing {
			return
		}
	}
}

func parseRequestLine(line string) (method, target string, ok bool) {
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !strings.HasPrefix(proto, "HTTP/1.") {
		return "", "", false
	}
	return method, target, true
}

// close stops the server and waits for its connections to end.
func (s *demoServer) close() {
	s.ln.Close()
	s.wg.Wait()
}

// stats returns connections, requests and a sorted per-request listing.
func (s *demoServer) stats() (conns, requests int, lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.requests {
		requests += v
		lines = append(lines, fmt.Sprintf("%4d  %s", v, k))
	}
	sort.Strings(lines)
	return s.conns, requests, lines
}
