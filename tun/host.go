package tun

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// host is the seam between the device's logic and the kernel: every query
// and every change Open and Close make goes through it. netlinkHost is the
// real one; tests use a fake that records each change as a line of text.
//
// Sysctl keys are /proc/sys paths with slashes ("net/ipv4/conf/tcopy0/
// route_localnet"), which keeps interface names with dots unambiguous.
type host interface {
	// links lists the interfaces.
	links() ([]link, error)
	// addrs lists every address on every interface.
	addrs() ([]addr, error)
	// routes lists the routes of one table, both families.
	routes(table int) ([]route, error)
	// routeGet asks the kernel how it routes a packet to dst, from src
	// when valid, as if received on interface iif when not 0.
	routeGet(dst, src netip.Addr, iif int) (route, error)
	// sysctl reads a sysctl; ok is false when it does not exist.
	sysctl(key string) (value string, ok bool, err error)

	// createTUN creates a non-persistent TUN device named name and returns
	// its fd (non-blocking) and interface index. With vnetHdr, every
	// packet on the fd carries a virtio_net_hdr and the device takes and
	// gives checksum and TSO offloads (see Config.VnetHdr).
	createTUN(name string, vnetHdr bool) (f *os.File, index int, err error)
	// closeTUN closes the fd createTUN returned; the kernel then removes
	// the device and everything attached to it.
	closeTUN(f *os.File) error
	setMTU(index, mtu int) error
	setTxQueueLen(index, n int) error
	setUp(index int) error
	addRoute(r route) error
	delRoute(r route) error
	setSysctl(key, value string) error

	// close releases the host's own resources (netlink sockets).
	close() error
}

type link struct {
	Index int
	Name  string
}

type addr struct {
	Prefix netip.Prefix // address and its prefix length
	Link   string
}

// route is the part of a kernel route that tun reads or writes.
type route struct {
	Dst   netip.Prefix
	Link  int // output interface index; 0 when none (unreachable, multipath)
	Gw    netip.Addr
	Table int
	Type  int // unix.RTN_*

	linkName string // for messages only
}

func (r route) String() string {
	var b strings.Builder
	switch r.Type {
	case unix.RTN_UNICAST, 0:
	case unix.RTN_LOCAL:
		b.WriteString("local ")
	case unix.RTN_BLACKHOLE:
		b.WriteString("blackhole ")
	case unix.RTN_UNREACHABLE:
		b.WriteString("unreachable ")
	case unix.RTN_PROHIBIT:
		b.WriteString("prohibit ")
	case unix.RTN_THROW:
		b.WriteString("throw ")
	default:
		fmt.Fprintf(&b, "type %d ", r.Type)
	}
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	switch {
	case r.linkName != "":
		b.WriteString(" dev " + r.linkName)
	case r.Link != 0:
		fmt.Fprintf(&b, " dev #%d", r.Link)
	}
	switch r.Table {
	case unix.RT_TABLE_MAIN, 0:
	case unix.RT_TABLE_LOCAL:
		b.WriteString(" table local")
	default:
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	return b.String()
}

// conf returns the sysctl key of an interface setting, e.g.
// conf(4, "tcopy0", "route_localnet") = "net/ipv4/conf/tcopy0/route_localnet".
func conf(family int, iface, name string) string {
	return fmt.Sprintf("net/ipv%d/conf/%s/%s", family, iface, name)
}
