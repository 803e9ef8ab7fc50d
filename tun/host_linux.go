package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkHost is the real host: rtnetlink through one netlink.Handle (its
// sockets belong to the network namespace they were opened in, whatever
// thread later uses them) and sysctls through /proc/sys.
//
// /proc/sys/net and /dev/net/tun resolve against the calling thread's
// network namespace, not the Handle's. So the host records the namespace it
// was made in and checks, on a locked thread, before each sysctl access and
// the device's creation that the thread is there: a Close called from a
// goroutine locked into another namespace must not restore values over that
// namespace's settings.
//
// songgao/water is not used for the device: it hides the fd in an
// io.ReadWriteCloser, leaks it when TUNSETIFF fails (the very EPERM path we
// must report), and has no IFF_TUN_EXCL or IFF_VNET_HDR. The three ioctls
// are simpler done here with x/sys/unix.
type netlinkHost struct {
	nl    *netlink.Handle
	netns uint64 // inode of the network namespace the host was made in
}

func newNetlinkHost() (*netlinkHost, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := threadNetns()
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return &netlinkHost{nl: h, netns: ns}, nil
}

func threadNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("stat /proc/thread-self/ns/net: %w", err)
	}
	return st.Ino, nil
}

func (h *netlinkHost) close() error {
	h.nl.Close()
	return nil
}

func (h *netlinkHost) links() ([]link, error) {
	ls, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make([]link, 0, len(ls))
	for _, l := range ls {
		out = append(out, link{Index: l.Attrs().Index, Name: l.Attrs().Name})
	}
	return out, nil
}

func (h *netlinkHost) addrs() ([]addr, error) {
	ls, err := h.links()
	if err != nil {
		return nil, err
	}
	names := make(map[int]string, len(ls))
	for _, l := range ls {
		names[l.Index] = l.Name
	}
	as, err := h.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	out := make([]addr, 0, len(as))
	for _, a := range as {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, addr{Prefix: netip.PrefixFrom(ip.Unmap(), ones), Link: names[a.LinkIndex]})
	}
	return out, nil
}

func (h *netlinkHost) routes(table int) ([]route, error) {
	rs, err := h.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", table, err)
	}
	out := make([]route, 0, len(rs))
	for _, r := range rs {
		out = append(out, fromNetlink(r))
	}
	return out, nil
}

func fromNetlink(r netlink.Route) route {
	out := route{Link: r.LinkIndex, Table: r.Table, Type: r.Type}
	if r.Dst != nil {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out.Dst = netip.PrefixFrom(ip.Unmap(), ones)
	} else if r.Family == unix.AF_INET6 {
		out.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		out.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		out.Gw = gw.Unmap()
	}
	if out.Link == 0 && len(r.MultiPath) > 0 {
		out.Link = r.MultiPath[0].LinkIndex
	}
	return out
}

func (h *netlinkHost) routeGet(dst, src netip.Addr, iif int) (route, error) {
	opts := &netlink.RouteGetOptions{IifIndex: iif}
	if src.IsValid() {
		opts.SrcAddr = net.IP(src.AsSlice())
	}
	rs, err := h.nl.RouteGetWithOptions(net.IP(dst.AsSlice()), opts)
	if err != nil {
		return route{}, err
	}
	if len(rs) == 0 {
		return route{}, fmt.Errorf("no answer")
	}
	return fromNetlink(rs[0]), nil
}

func (h *netlinkHost) createTUN(name string, vnetHdr bool) (f *os.File, index int, err error) {
	err = h.inOwnNetns(func() error {
		f, index, err = h.createTUNHere(name, vnetHdr)
		return err
	})
	return f, index, err
}

// TUNSETOFFLOAD flags (linux/if_tun.h; not in x/sys/unix): the reader of the
// fd accepts packets with partial checksums and TCP segments beyond the MTU.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

func (h *netlinkHost) createTUNHere(name string, vnetHdr bool) (*os.File, int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, 0, &PermissionError{Op: "open /dev/net/tun", Err: err, Path: "/dev/net/tun"}
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, 0, fmt.Errorf("open /dev/net/tun: %w (load the tun module: modprobe tun)", err)
		}
		return nil, 0, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("create tun %q: %w", name, err)
	}
	// IFF_TUN_EXCL: fail rather than attach to an existing device of that
	// name, which we did not create and could not remove. No TUNSETPERSIST:
	// the device lives exactly as long as this fd.
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, 0, fmt.Errorf("create tun %q: a device of that name exists (another tcopy-tun running? choose another name)", name)
		}
		return nil, 0, permErr(fmt.Sprintf("create tun %q", name), err)
	}
	if vnetHdr {
		// The kernel then hands over its own TCP segments unsegmented
		// (up to 64 KiB whatever the MTU) and without computing their
		// checksums, and takes ours the same way.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
			unix.Close(fd)
			return nil, 0, fmt.Errorf("create tun %q: set offloads: %w", name, err)
		}
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name) // non-blocking: goes to the runtime poller
	l, err := h.nl.LinkByName(name)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("find created tun %q: %w", name, err)
	}
	return f, l.Attrs().Index, nil
}

func (h *netlinkHost) closeTUN(f *os.File) error { return f.Close() }

func linkRef(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

func (h *netlinkHost) setMTU(index, mtu int) error { return h.nl.LinkSetMTU(linkRef(index), mtu) }
func (h *netlinkHost) setTxQueueLen(index, n int) error {
	return h.nl.LinkSetTxQLen(linkRef(index), n)
}
func (h *netlinkHost) setUp(index int) error { return h.nl.LinkSetUp(linkRef(index)) }

func toNetlink(r route) *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: r.Link,
		Dst:       &net.IPNet{IP: net.IP(r.Dst.Addr().AsSlice()), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Table:     r.Table,
		Type:      r.Type,
		Protocol:  unix.RTPROT_STATIC,
	}
	if nr.Table == 0 {
		nr.Table = unix.RT_TABLE_MAIN
	}
	if nr.Type == 0 {
		nr.Type = unix.RTN_UNICAST
	}
	if r.Dst.Addr().Is4() && !r.Gw.IsValid() {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Gw.IsValid() {
		nr.Gw = net.IP(r.Gw.AsSlice())
	}
	return nr
}

func (h *netlinkHost) addRoute(r route) error { return h.nl.RouteAdd(toNetlink(r)) }
func (h *netlinkHost) delRoute(r route) error { return h.nl.RouteDel(toNetlink(r)) }

func (h *netlinkHost) sysctl(key string) (string, bool, error) {
	var (
		b   []byte
		err error
	)
	if err := h.inOwnNetns(func() error { b, err = os.ReadFile("/proc/sys/" + key); return nil }); err != nil {
		return "", false, err
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

func (h *netlinkHost) setSysctl(key, value string) error {
	return h.inOwnNetns(func() error {
		f, err := os.OpenFile("/proc/sys/"+key, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString(value + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// inOwnNetns runs fn on a locked thread after checking that the thread is in
// the namespace the host was made in.
func (h *netlinkHost) inOwnNetns(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := threadNetns()
	if err != nil {
		return err
	}
	if ns != h.netns {
		return fmt.Errorf("calling thread is not in the network namespace the device was opened in: %w", syscall.EXDEV)
	}
	return fn()
}
