package tun

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Device is an open TUN device and the host changes made for it.
//
// The Device owns the fd: use File or Fd to read and write packets, never
// close them. Close undoes the host changes in reverse order and closes the
// fd last; the kernel then removes the device and its routes. The kernel
// does that too when the process dies, even by SIGKILL, which is why Open
// keeps its changes on the device itself wherever it can: those vanish with
// it. Only the outside interface's forwarding switch (Config.Forward)
// outlives a killed process.
type Device struct {
	name    string
	index   int
	mtu     int
	file    *os.File
	vnetHdr bool

	h    host
	logf Logf

	mu     sync.Mutex
	undo   []undoStep // in the order done; Close runs them backwards
	closed bool
}

// undoStep reverts one host change.
type undoStep struct {
	what string // "route del 198.18.0.0/15 dev tcopy0", for errors
	fn   func() error
}

// Name is the device's interface name.
func (d *Device) Name() string { return d.name }

// Index is the device's interface index.
func (d *Device) Index() int { return d.index }

// MTU is the device's MTU: the largest IP packet it carries.
func (d *Device) MTU() int { return d.mtu }

// VnetHdr reports whether packets on the device's fd carry a virtio_net_hdr
// (Config.VnetHdr).
func (d *Device) VnetHdr() bool { return d.vnetHdr }

// File is the device's fd, in non-blocking mode and registered with the Go
// runtime poller: Read returns one IP packet, Write sends one (no packet
// information header). The Device owns it; it is valid until Close.
func (d *Device) File() *os.File { return d.file }

// Fd is the device's raw fd number for code that does its own system calls
// (a gVisor link endpoint). It is non-blocking; unlike os.File.Fd this does
// not switch it to blocking mode. The Device owns it; it is valid until Close.
func (d *Device) Fd() int {
	fd := -1
	if sc, err := d.file.SyscallConn(); err == nil {
		_ = sc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// Close undoes every host change Open made, in reverse order, then closes
// the fd (the kernel removes the device and its routes). Each undo is
// attempted even when an earlier one failed; the errors are joined. A
// sysctl that someone else changed after Open is left as they set it.
// Close is idempotent: later calls do nothing and return nil. Close the
// packet readers and writers (the netstack) before, not after.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.undoAll()
	if cerr := d.h.close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

func (d *Device) push(what string, fn func() error) {
	d.undo = append(d.undo, undoStep{what: what, fn: fn})
}

func (d *Device) undoAll() error {
	var errs []error
	for i := len(d.undo) - 1; i >= 0; i-- {
		if err := d.undo[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", d.undo[i].what, err))
		}
	}
	d.undo = nil
	if len(errs) > 0 {
		return fmt.Errorf("close tun %q: %w", d.name, errors.Join(errs...))
	}
	return nil
}

// Open creates a non-persistent TUN device (IFF_TUN|IFF_NO_PI) and
// prepares the host so that the kernel delivers packets from the client
// ranges to the targets and routes the targets' replies back into it:
//
//  1. checks, before changing anything: the config, that no client range
//     overlaps a local address, an existing route (except a default route)
//     or a target; that a remote target is allowed (Forward);
//  2. creates the device, sets its MTU and txqueuelen; for IPv6 client
//     ranges enables IPv6 on it (disable_ipv6=0) and turns off its
//     link-local address (addr_gen_mode=1: nothing of its own to send);
//     for a 127.0.0.0/8 target sets route_localnet=1 on it; brings it up;
//  3. routes each client range into it;
//  4. with Forward and a remote target: enables forwarding on the device
//     and on the interface that leads to the target, per family;
//  5. verifies, for each target and client range, that the kernel routes
//     the target's reply into the device (ErrConflict naming the route
//     that wins otherwise).
//
// Every change is logged through cfg.Logf and recorded with its undo. When
// a step fails, what was done is undone in reverse order before Open
// returns. A missing privilege is a *PermissionError (errors.Is
// ErrPermission); a clash is errors.Is ErrConflict.
func Open(cfg Config) (*Device, error) {
	h, err := newNetlinkHost()
	if err != nil {
		return nil, err
	}
	d, err := open(cfg, h)
	if err != nil {
		h.close()
		return nil, err
	}
	return d, nil
}

func open(cfg Config, h host) (_ *Device, err error) {
	cfg, defaulted := cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open tun: %w", err)
	}
	p, err := prepare(cfg, defaulted, h)
	if err != nil {
		return nil, fmt.Errorf("open tun %q: %w", cfg.Name, err)
	}
	cfg = p.cfg
	for _, w := range p.warnings {
		cfg.Logf("tun: warning: %s", w)
	}

	d := &Device{name: cfg.Name, mtu: cfg.MTU, h: h, logf: cfg.Logf}
	defer func() {
		if err != nil {
			if uerr := d.undoAll(); uerr != nil {
				err = fmt.Errorf("%w; %w", err, uerr)
			}
		}
	}()
	wrap := func(format string, args ...any) error {
		return fmt.Errorf("open tun %q: "+format, append([]any{cfg.Name}, args...)...)
	}

	f, index, err := h.createTUN(cfg.Name, cfg.VnetHdr)
	if err != nil {
		var pe *PermissionError
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, fmt.Errorf("open tun: %w", err)
	}
	d.file, d.index, d.vnetHdr = f, index, cfg.VnetHdr
	cfg.Logf("tun: created %s (index %d, not persistent: it goes away with this process)", cfg.Name, index)
	d.push("close tun "+cfg.Name, func() error {
		err := h.closeTUN(f)
		cfg.Logf("tun: closed %s: the kernel removes it with its routes", cfg.Name)
		return err
	})

	// MTU and txqueuelen belong to the device and vanish with it: no undo
	// of their own. Its sysctls vanish too, but are restored anyway, so
	// that Close logs and undoes exactly what Open did.
	if err := h.setMTU(index, cfg.MTU); err != nil {
		return nil, wrap("set mtu %d: %w", cfg.MTU, err)
	}
	cfg.Logf("tun: set %s mtu %d", cfg.Name, cfg.MTU)
	if err := h.setTxQueueLen(index, cfg.TxQueueLen); err != nil {
		return nil, wrap("set txqueuelen %d: %w", cfg.TxQueueLen, err)
	}
	cfg.Logf("tun: set %s txqueuelen %d", cfg.Name, cfg.TxQueueLen)

	if p.ipv6 {
		// A new device copies net.ipv6.conf.default; on hosts that disable
		// IPv6 by default, routes into it would be refused.
		if err := d.setSysctl(conf(6, cfg.Name, "disable_ipv6"), "0"); err != nil {
			return nil, wrap("%w", err)
		}
		// No link-local address: the device then sends no router
		// solicitations or MLD reports into the netstack.
		if err := d.setSysctl(conf(6, cfg.Name, "addr_gen_mode"), "1"); err != nil {
			return nil, wrap("%w", err)
		}
	}
	if p.localnet {
		// Packets to 127.0.0.0/8 arriving on a device other than lo are
		// martians, and replies from 127.0.0.0/8 may not leave through one,
		// unless route_localnet is set on that device (or on "all", which we
		// leave alone).
		if err := d.setSysctl(conf(4, cfg.Name, "route_localnet"), "1"); err != nil {
			return nil, wrap("%w", err)
		}
	}
	if len(p.remote) > 0 {
		if err := d.enableForwarding(p); err != nil {
			return nil, wrap("%w", err)
		}
	}

	if err := h.setUp(index); err != nil {
		return nil, wrap("set link up: %w", err)
	}
	cfg.Logf("tun: set %s up", cfg.Name)

	for _, pfx := range cfg.ClientPrefixes {
		r := route{Dst: pfx, Link: index, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST, linkName: cfg.Name}
		if err := h.addRoute(r); err != nil {
			return nil, wrap("add route %s: %w", r, err)
		}
		cfg.Logf("tun: added route %s", r)
		d.push("route del "+r.String(), func() error {
			err := h.delRoute(r)
			if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENODEV) {
				return nil // already gone with the device, or removed by someone
			}
			if err == nil {
				cfg.Logf("tun: deleted route %s", r)
			}
			return err
		})
	}

	if err := verify(p, index, h); err != nil {
		return nil, fmt.Errorf("open tun %q: %w", cfg.Name, err)
	}
	return d, nil
}

// setSysctl sets key to want and records the undo. Nothing is done or
// recorded when it already has that value.
func (d *Device) setSysctl(key, want string) error {
	old, ok, err := d.h.sysctl(key)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("sysctl %s: not available on this kernel", key)
	}
	if old == want {
		return nil
	}
	if err := d.h.setSysctl(key, want); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", key, want, err)
	}
	d.logf("tun: set sysctl %s %s -> %s", key, old, want)
	d.push("sysctl "+key+"="+old, func() error {
		cur, ok, err := d.h.sysctl(key)
		if err != nil {
			return err
		}
		if !ok {
			return nil // the interface is gone, and its settings with it
		}
		if cur != want {
			d.logf("tun: left sysctl %s = %s: changed by someone else after we set %s (it was %s)", key, cur, want, old)
			return nil
		}
		if err := d.h.setSysctl(key, old); err != nil {
			return err
		}
		d.logf("tun: restored sysctl %s %s -> %s", key, want, old)
		return nil
	})
	return nil
}

// enableForwarding turns on, per family, forwarding on the device and on
// each interface that leads to a remote target. Measured on Linux 6.18
// (tun/forward_test.go): IPv4 forwards a packet when the interface it
// arrived on has conf/<if>/forwarding=1; the global ip_forward is not
// consulted, so both directions need both interfaces. IPv6 ignores the
// per-interface "forwarding" and checks conf/all/forwarding, or since
// Linux 6.17 conf/<in-if>/force_forwarding. conf/all/forwarding would also
// turn off router advertisements on every interface, so Open does not set
// it: without force_forwarding it reports what to do instead.
func (d *Device) enableForwarding(p plan) error {
	var v4, v6 []string
	for _, t := range slices.SortedFunc(maps.Keys(p.remote), netip.Addr.Compare) {
		l := p.remote[t]
		if t.Is4() {
			v4 = appendOnce(v4, d.name, l.Name)
		} else {
			v6 = appendOnce(v6, d.name, l.Name)
		}
	}
	for _, ifc := range v4 {
		if err := d.setSysctl(conf(4, ifc, "forwarding"), "1"); err != nil {
			return err
		}
	}
	if !p.forceForward6 {
		return nil // no remote IPv6 target, or the host forwards IPv6 already
	}
	for _, ifc := range v6 {
		if err := d.setSysctl(conf(6, ifc, "force_forwarding"), "1"); err != nil {
			return err
		}
	}
	return nil
}

func appendOnce(s []string, names ...string) []string {
	for _, n := range names {
		if !slices.Contains(s, n) {
			s = append(s, n)
		}
	}
	return s
}
