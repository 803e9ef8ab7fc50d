package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// What one peer can make the endpoint hold. A scrape is one small GET; a
// Prometheus server scrapes every few seconds over one kept-alive
// connection.
const (
	// MaxConns bounds the connections open at once; more wait in the
	// kernel's accept queue.
	MaxConns = 8
	// MaxHeaderBytes bounds a request's header (http.Server's default is
	// 1 MiB).
	MaxHeaderBytes = 8 << 10
	// ReadHeaderTimeout bounds the wait for a request's header, so an
	// idle or trickling peer does not hold a connection.
	ReadHeaderTimeout = 5 * time.Second
	// ReadTimeout, WriteTimeout and IdleTimeout bound a request's body,
	// its answer, and a kept-alive connection between scrapes.
	ReadTimeout  = 10 * time.Second
	WriteTimeout = 30 * time.Second
	IdleTimeout  = 2 * time.Minute
	// maxScrapes bounds the scrapes gathered at once (promhttp answers
	// 503 past it).
	maxScrapes = 2
)

// ListenAddr completes a --metrics address: a port alone ("9090" or
// ":9090") binds the loopback address 127.0.0.1; "IP:PORT", "[IPv6]:PORT"
// or "HOST:PORT" bind where they say (0.0.0.0:9090 on every interface).
func ListenAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty address: want PORT, :PORT or IP:PORT")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if _, perr := strconv.ParseUint(s, 10, 16); perr == nil {
			return net.JoinHostPort("127.0.0.1", s), nil
		}
		return "", fmt.Errorf("%q: want PORT, :PORT or IP:PORT ([IPv6]:PORT for IPv6)", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q: port %q: want a number from 0 to 65535", s, port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// ParseAllow parses a --metrics-allow argument: a prefix (10.0.0.0/8) or
// one address.
func ParseAllow(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			// Peers are compared unmapped: ::ffff:10.0.0.0/104 is 10.0.0.0/8.
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want a prefix such as 10.0.0.0/8, or an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ServerOptions configure Listen.
type ServerOptions struct {
	// Allow, when not empty, is the peers that may connect; the others are
	// closed at once, before a byte is read, and counted.
	Allow []netip.Prefix
	// ErrorLog receives the HTTP server's own errors (nil: discarded).
	ErrorLog *log.Logger
}

// Server serves the Exporter's metrics over HTTP at /metrics.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error // Serve's, once done is closed
}

// Listen binds addr (see ListenAddr) and serves x's metrics until Close.
func (x *Exporter) Listen(addr string, opts ServerOptions) (*Server, error) {
	a, err := ListenAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, err
	}
	errLog := opts.ErrorLog
	if errLog == nil {
		errLog = log.New(io.Discard, "", 0)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(x.reg, promhttp.HandlerOpts{
		ErrorLog:            errLog,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             WriteTimeout / 2,
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "tcopy-tun: metrics at /metrics")
	})
	s := &Server{
		ln: &limitListener{Listener: ln, allow: opts.Allow, refused: x.refused.Inc, sem: make(chan struct{}, MaxConns)},
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: ReadHeaderTimeout,
			ReadTimeout:       ReadTimeout,
			WriteTimeout:      WriteTimeout,
			IdleTimeout:       IdleTimeout,
			MaxHeaderBytes:    MaxHeaderBytes,
			ErrorLog:          errLog,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr is the address the server listens on (with the port chosen for
// port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, lets the scrapes in flight finish for up to a
// second, then closes every connection. It returns Serve's error, if any.
// Idempotent.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
	return s.err
}

// limitListener accepts only allowed peers, and at most cap(sem)
// connections at once.
type limitListener struct {
	net.Listener
	allow   []netip.Prefix
	refused func()
	sem     chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		l.sem <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.sem
			return nil, err
		}
		if !l.allowed(c.RemoteAddr()) {
			c.Close()
			<-l.sem
			l.refused()
			continue
		}
		return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
	}
}

func (l *limitListener) allowed(a net.Addr) bool {
	if len(l.allow) == 0 {
		return true
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	for _, p := range l.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// limitConn gives its slot back once, at its first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
