package replaytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// DemoServer returns the server address of the demo capture, 10.1.0.1:8080.
func DemoServer() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, 1}), 8080)
}

// DemoStart is the capture time of the demo's first packet.
func DemoStart() time.Time { return time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC) }

// HTTPResponse is the response convention of the demo capture and of the
// built-in demo server: for GET the body is "hello <path>\n", for POST
// "got <n> bytes\n" (n = request body length); headers exactly
//
//	HTTP/1.1 200 OK\r\n
//	Content-Type: text/plain\r\n
//	Content-Length: <len(body)>\r\n
//	Connection: close\r\n          (only if the request had Connection: close)
//	\r\n
func HTTPResponse(method, path string, bodyLen int, close bool) string {
	var body string
	if method == "POST" {
		body = "got " + strconv.Itoa(bodyLen) + " bytes\n"
	} else {
		body = "hello " + path + "\n"
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	b.WriteString("\r\n")
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

// DemoRequest is one HTTP request of a demo session.
type DemoRequest struct {
	Method, Path string
	Body         string // POST body
	Close        bool   // carries Connection: close
}

// Raw returns the request as sent.
func (r DemoRequest) Raw() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 10.1.0.1:8080\r\nUser-Agent: demo-client/1.0\r\nAccept: */*\r\n", r.Method, r.Path)
	if r.Method == "POST" {
		fmt.Fprintf(&b, "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n", len(r.Body))
	}
	if r.Close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(r.Body)
	return b.String()
}

// Response returns the demo server's answer to r.
func (r DemoRequest) Response() string { return HTTPResponse(r.Method, r.Path, len(r.Body), r.Close) }

// DemoSession describes one connection of the demo capture.
type DemoSession struct {
	Client    netip.AddrPort
	Start     time.Duration // from DemoStart
	Requests  []DemoRequest
	Pipelined bool // all requests written back to back before any response
}

// DemoSessions returns the sessions of the demo capture: 20 connections
// from five client addresses to 10.1.0.1:8080 within about 2 s. Sessions
// 0-7 make one GET with Connection: close (the server closes first);
// 8-15 are keep-alive with 2-4 GETs each, the client closing at the end
// (the last request of sessions 12-13 asks Connection: close instead);
// 16 pipelines three GETs; 17 POSTs a form body then GETs; 18 POSTs with
// Connection: close; 19 is a keep-alive session with 6 GETs.
func DemoSessions() []DemoSession {
	rng := rand.New(rand.NewPCG(2024, 5))
	var out []DemoSession
	port := uint16(40000)
	client := func(i int) netip.AddrPort {
		port += uint16(7 + i%5)
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i%5)}), port)
	}
	paths := []string{"/", "/index.html", "/api/users", "/api/users/42", "/static/app.js", "/static/style.css",
		"/search?q=tcp", "/health", "/api/orders?page=2", "/img/logo.png", "/about", "/api/items/7"}
	path := func() string { return paths[rng.IntN(len(paths))] }
	start := func(i int) time.Duration {
		// Spread over ~1.8 s, with jitter, so the capture lasts about 2 s
		// and sessions overlap.
		return time.Duration(i)*90*time.Millisecond + time.Duration(rng.IntN(40))*time.Millisecond
	}
	for i := 0; i < 20; i++ {
		s := DemoSession{Client: client(i), Start: start(i)}
		switch {
		case i < 8:
			s.Requests = []DemoRequest{{Method: "GET", Path: path(), Close: true}}
		case i < 16:
			n := 2 + rng.IntN(3)
			for j := 0; j < n; j++ {
				s.Requests = append(s.Requests, DemoRequest{Method: "GET", Path: path()})
			}
			if i == 12 || i == 13 {
				s.Requests[n-1].Close = true
			}
		case i == 16:
			s.Pipelined = true
			s.Requests = []DemoRequest{{Method: "GET", Path: "/p/1"}, {Method: "GET", Path: "/p/2"}, {Method: "GET", Path: "/p/3"}}
		case i == 17:
			s.Requests = []DemoRequest{
				{Method: "POST", Path: "/api/login", Body: "user=alice&password=s3cret&remember=1"},
				{Method: "GET", Path: "/api/users/alice"},
			}
		case i == 18:
			s.Requests = []DemoRequest{{Method: "POST", Path: "/api/upload", Body: strings.Repeat("data=0123456789abcdef&", 100), Close: true}}
		default:
			for j := 0; j < 6; j++ {
				s.Requests = append(s.Requests, DemoRequest{Method: "GET", Path: fmt.Sprintf("/api/items/%d", j+1)})
			}
		}
		out = append(out, s)
	}
	return out
}

// DemoPackets builds the demo capture's packets, interleaved by time and
// numbered from 1. Round trips are 0.3-1.2 ms, server think time 0.2-3 ms,
// client think time 20-120 ms between keep-alive requests.
func DemoPackets() []capture.Packet {
	rng := rand.New(rand.NewPCG(7, 11))
	// Whole microseconds: the pcap keeps no more, and the packets should
	// equal what reading the file back gives.
	dur := func(lo, hi time.Duration) time.Duration {
		return (lo + time.Duration(rng.Int64N(int64(hi-lo)))).Truncate(time.Microsecond)
	}
	var convs [][]capture.Packet
	for _, s := range DemoSessions() {
		c := NewConvAddr(s.Client, DemoServer(), DemoStart().Add(s.Start))
		rtt := dur(300*time.Microsecond, 1200*time.Microsecond)
		c.Step = (rtt / 2).Truncate(time.Microsecond)
		c.Handshake()
		closing := false
		if s.Pipelined {
			var all string
			for _, r := range s.Requests {
				all += r.Raw()
			}
			c.Send(all).Wait(dur(200*time.Microsecond, 3*time.Millisecond))
			for _, r := range s.Requests {
				c.Reply(r.Response())
			}
			c.ClientAck()
		} else {
			for j, r := range s.Requests {
				if j > 0 {
					c.Wait(dur(20*time.Millisecond, 120*time.Millisecond))
				}
				c.Send(r.Raw()).Wait(dur(200*time.Microsecond, 3*time.Millisecond)).Reply(r.Response())
				if r.Close {
					closing = true
					break
				}
				c.ClientAck()
			}
		}
		if closing {
			// The server closes right after a Connection: close response.
			c.CloseServer()
		} else {
			c.Wait(dur(5*time.Millisecond, 50*time.Millisecond)).CloseClient()
		}
		convs = append(convs, c.Packets())
	}
	return Merge(convs...)
}

// DemoPcap returns the demo capture as an Ethernet pcap file with
// microsecond timestamps (testdata/demo-http.pcap).
func DemoPcap() []byte {
	frames, err := Frames(LinkEthernet, DemoPackets())
	if err != nil {
		panic(err)
	}
	return Pcap(PcapOptions{LinkType: LinkEthernet}, frames)
}

// HTTPLoad describes a synthetic HTTP/1.1 keep-alive load capture, for
// benchmarks: Sessions connections to 10.1.0.1:8080 from Clients addresses
// (10.2.x.y), each with a handshake, Requests GETs answered with BodySize-byte
// bodies (split at 1460 bytes), client ACKs, and a client close. A session
// starts every 500µs; requests within a session are 2 ms apart.
type HTTPLoad struct {
	Sessions, Requests, BodySize, Clients int
}

// Packets builds the load's packets, interleaved by time and numbered.
func (l HTTPLoad) Packets() []capture.Packet {
	clients := max(l.Clients, 1)
	body := strings.Repeat("x", l.BodySize)
	convs := make([][]capture.Packet, 0, l.Sessions)
	for i := 0; i < l.Sessions; i++ {
		ci := i % clients
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(ci >> 8), byte(ci)}), uint16(10000+i/clients%50000))
		c := NewConvAddr(client, DemoServer(), DemoStart().Add(time.Duration(i)*500*time.Microsecond))
		c.Step = 50 * time.Microsecond
		c.Handshake()
		for j := 0; j < l.Requests; j++ {
			path := "/item/" + strconv.Itoa(j)
			c.Send("GET " + path + " HTTP/1.1\r\nHost: 10.1.0.1:8080\r\nUser-Agent: load/1.0\r\n\r\n")
			c.Reply("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
			c.ClientAck().Wait(2 * time.Millisecond)
		}
		c.CloseClient()
		convs = append(convs, c.Packets())
	}
	return Merge(convs...)
}

// Pcap returns the load as an Ethernet pcap with nanosecond timestamps.
func (l HTTPLoad) Pcap() []byte {
	frames, err := Frames(LinkEthernet, l.Packets())
	if err != nil {
		panic(err)
	}
	return Pcap(PcapOptions{LinkType: LinkEthernet, Nano: true}, frames)
}
