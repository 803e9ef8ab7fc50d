package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// lookupFunc resolves a host name to its addresses (net.Resolver's
// LookupNetIP with network "ip"); tests pass their own.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func systemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// resolveTimeout bounds one host name lookup.
const resolveTimeout = 5 * time.Second

// resolveAddrPort reads HOST:PORT where people type addresses (--target,
// --server, --map, --pcap tcp://, --pcap-listen): an IP address as is, or
// a host name resolved once, now. "localhost" is 127.0.0.1 without a
// lookup, since ::1 cannot work through a TUN (the kernel never routes
// loopback traffic from a device); of a name's addresses the first IPv4
// one is taken, else the first. The error is one line that names the
// input.
func resolveAddrPort(s string, lookup lookupFunc) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil // as typed: selections compare unmapped addresses
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return netip.AddrPort{}, fmt.Errorf("%q: want HOST:PORT (IP:PORT, [IPv6]:PORT or NAME:PORT)", s)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: port %q: want a number from 0 to 65535", s, portStr)
	}
	addr, err := resolveHost(host, lookup)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// resolveHost is resolveAddrPort's host part.
func resolveHost(host string, lookup lookupFunc) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	if lookup == nil {
		lookup = systemLookup
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			return netip.Addr{}, fmt.Errorf("resolve %q: no such host", host)
		case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
			return netip.Addr{}, fmt.Errorf("resolve %q: no answer within %v", host, resolveTimeout)
		case errors.As(err, &de):
			return netip.Addr{}, fmt.Errorf("resolve %q: %s", host, de.Err)
		}
		return netip.Addr{}, fmt.Errorf("resolve %q: %v", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %q: no addresses", host)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return addrs[0], nil
}

// parseMapping reads --map CAPTURED=TARGET, each side resolved as
// resolveAddrPort does.
func parseMapping(s string, lookup lookupFunc) (captured, target netip.AddrPort, err error) {
	a, b, ok := strings.Cut(s, "=")
	if !ok {
		return captured, target, fmt.Errorf("%q: want CAPTURED=TARGET (HOST:PORT=HOST:PORT)", s)
	}
	if captured, err = resolveAddrPort(strings.TrimSpace(a), lookup); err != nil {
		return captured, target, fmt.Errorf("%q: captured: %w", s, err)
	}
	if target, err = resolveAddrPort(strings.TrimSpace(b), lookup); err != nil {
		return captured, target, fmt.Errorf("%q: target: %w", s, err)
	}
	unmap := func(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }
	return unmap(captured), unmap(target), nil
}
