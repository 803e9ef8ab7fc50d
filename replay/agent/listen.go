package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// Listen accepts agents on addr (HOST:PORT, the host an IP address) until
// the returned Merger is closed. A peer outside opt.Allow (loopback only
// when Allow is empty), or one beyond opt.MaxAgents connected at once, is
// closed at once, counted (Stats.Refused) and logged.
func Listen(addr string, opt Options) (*Merger, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := NewMerger("agents on "+ln.Addr().String(), opt)
	m.closers = append(m.closers, ln)
	go m.accept(ln)
	return m, nil
}

// Addr is the listening address, or nil for a Merger that does not listen.
func (m *Merger) Addr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.closers {
		if ln, ok := c.(net.Listener); ok {
			return ln.Addr()
		}
	}
	return nil
}

// accept is the accept loop; it ends when Close closes ln.
func (m *Merger) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: the listener is still
			// there, so wait a little instead of spinning.
			m.opt.Logf("%s: accept: %v", m.name, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		peer := c.RemoteAddr().String()
		if !m.allowed(c.RemoteAddr()) {
			c.Close()
			if n := m.refused(); n <= 10 || n%1000 == 0 {
				m.opt.Logf("agent %s refused: not in --pcap-allow (%d refused so far)", peer, n)
			}
			continue
		}
		if m.count() >= m.opt.MaxAgents {
			c.Close()
			if n := m.refused(); n <= 10 || n%1000 == 0 {
				m.opt.Logf("agent %s refused: %d agents are connected, the most allowed (--pcap-max-agents; %d refused so far)", peer, m.opt.MaxAgents, n)
			}
			continue
		}
		if !m.Add(peer, c) {
			c.Close()
			return
		}
	}
}

// allowed reports whether a peer may send captures.
func (m *Merger) allowed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	if len(m.opt.Allow) == 0 {
		return ip.IsLoopback()
	}
	for _, p := range m.opt.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// DialTimeout bounds Dial's connection attempt.
const DialTimeout = 10 * time.Second

// Dial connects to an agent that serves a capture stream on addr
// (nc -N -l PORT behind tcpdump -U --immediate-mode -w -). The Merger ends (io.EOF) when
// the stream ends.
func Dial(ctx context.Context, addr string, opt Options) (*Merger, error) {
	d := net.Dialer{Timeout: DialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	m := NewMerger("tcp://"+addr, opt)
	m.noMore = true
	m.Add(addr, c)
	return m, nil
}
