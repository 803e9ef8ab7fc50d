package tun

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
	"golang.org/x/sys/unix"
)

// sysctls reads every per-interface and global IPv4/IPv6 setting under
// /proc/sys/net/ipv{4,6}/conf (except the tun's own, which vanish with it)
// and the global forwarding switches.
func sysctls(t *testing.T, tunName string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range []string{"/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"} {
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && e.Name() == tunName {
				return fs.SkipDir
			}
			if e.IsDir() {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil { // a few are write-only
				out[p] = strings.TrimSpace(string(b))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"/proc/sys/net/ipv4/ip_forward"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = strings.TrimSpace(string(b))
	}
	return out
}

func diffSysctls(before, after map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if before[k] != after[k] {
			fmt.Fprintf(&b, "%s: %q -> %q\n", k, before[k], after[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[k]; !ok {
			fmt.Fprintf(&b, "%s: new %q\n", k, after[k])
		}
	}
	return b.String()
}

func readSysctl(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func writeSysctl(t *testing.T, key, v string) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/"+key, []byte(v+"\n"), 0); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gone checks, within a bounded time, that no link named name exists and
// that no route of the default client ranges is left.
func gone(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, linkErr := net.InterfaceByName(name)
		routes := run(t, "ip", "route", "show", "table", "all") + run(t, "ip", "-6", "route", "show", "table", "all")
		left := strings.Contains(routes, "198.18.0.0/15") || strings.Contains(routes, "2001:2::/48") || strings.Contains(routes, name)
		if linkErr != nil && !left {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: device %s lookup err=%v; routes:\n%s", name, linkErr, routes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listen opens a TCP listener on addr:0 that accepts and closes, and
// returns its address.
func listen(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestPrivilegedOpen creates the device as configured, proves the return
// path for a loopback, a local IPv4 and a local IPv6 target with a real SYN
// through the device, and checks that Close leaves every sysctl as it was
// and removes the device and its routes.
func TestPrivilegedOpen(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	ns := tuntest.Current(t)
	ns.AddDummy(t, "tgt0", "10.1.0.1/24")
	ns.AddAddr(t, "tgt0", "fd01::1/64")
	// Hosts that disable IPv6 on new interfaces must still work.
	writeSysctl(t, "net/ipv6/conf/default/disable_ipv6", "1")
	before := sysctls(t, "tcopy0")

	targets := []netip.AddrPort{listen(t, "127.0.0.1"), listen(t, "10.1.0.1"), listen(t, "fd01::1")}
	cfg := Config{Logf: t.Logf}
	for _, a := range targets {
		cfg.Targets = append(cfg.Targets, a.Addr())
	}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "tcopy0" || d.MTU() != 65535 || d.Index() <= 0 || d.Fd() < 0 {
		t.Errorf("Name %q MTU %d Index %d Fd %d", d.Name(), d.MTU(), d.Index(), d.Fd())
	}
	if fl, err := unix.FcntlInt(uintptr(d.Fd()), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("fd flags %#x, %v: want O_NONBLOCK kept after Fd()", fl, err)
	}
	link := run(t, "ip", "-d", "link", "show", "tcopy0")
	for _, want := range []string{"mtu 65535", "qlen 10000", "state UNKNOWN", ",UP,", "tun type tun pi off vnet_hdr off persist off"} {
		if !strings.Contains(link, want) {
			t.Errorf("ip -d link show tcopy0 lacks %q:\n%s", want, link)
		}
	}
	if ifi, err := net.InterfaceByName("tcopy0"); err != nil || ifi.Index != d.Index() {
		t.Errorf("interface tcopy0 = %v, %v; want index %d", ifi, err, d.Index())
	}
	if r := run(t, "ip", "route", "show", "dev", "tcopy0"); !strings.Contains(r, "198.18.0.0/15") {
		t.Errorf("IPv4 client route missing:\n%s", r)
	}
	if r := run(t, "ip", "-6", "route", "show", "dev", "tcopy0"); !strings.Contains(r, "2001:2::/48") {
		t.Errorf("IPv6 client route missing:\n%s", r)
	}
	if a := run(t, "ip", "addr", "show", "dev", "tcopy0"); strings.Contains(a, "inet") {
		t.Errorf("tcopy0 has an address (want none, not even link-local):\n%s", a)
	}
	for key, want := range map[string]string{
		"net/ipv4/conf/tcopy0/route_localnet": "1",
		"net/ipv6/conf/tcopy0/disable_ipv6":   "0",
		"net/ipv6/conf/tcopy0/addr_gen_mode":  "1",
		"net/ipv4/conf/tcopy0/forwarding":     "0",
	} {
		if got := readSysctl(t, key); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if diff := diffSysctls(before, sysctls(t, "tcopy0")); diff != "" {
		t.Errorf("Open changed settings outside the device:\n%s", diff)
	}

	clients := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:40001"), netip.MustParseAddrPort("198.19.255.254:40002"), netip.MustParseAddrPort("[2001:2::1]:40003")}
	for i, tg := range targets {
		c := clients[min(i, 1)]
		if tg.Addr().Is6() {
			c = clients[2]
		}
		flags, err := probe(d.File(), c, tg, 3*time.Second)
		if err != nil {
			t.Errorf("return path %s -> %s: %v", c, tg, err)
		} else if flags&(tcpSYN|tcpACK) != tcpSYN|tcpACK {
			t.Errorf("return path %s -> %s: flags %#x, want SYN-ACK", c, tg, flags)
		}
	}

	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	gone(t, "tcopy0")
	if diff := diffSysctls(before, sysctls(t, "tcopy0")); diff != "" {
		t.Errorf("settings not restored by Close:\n%s", diff)
	}
}

// TestPrivilegedOpenVnetHdr: with Config.VnetHdr the device speaks
// virtio_net_hdr with offloads on, and a SYN written with a header is
// answered with one.
func TestPrivilegedOpenVnetHdr(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	target := listen(t, "127.0.0.1")
	d, err := Open(Config{VnetHdr: true, MTU: 1500, Targets: []netip.Addr{target.Addr()}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.VnetHdr() {
		t.Error("VnetHdr() false")
	}
	link := run(t, "ip", "-d", "link", "show", "tcopy0")
	if !strings.Contains(link, "tun type tun pi off vnet_hdr on persist off") {
		t.Errorf("ip -d link show tcopy0 lacks vnet_hdr on:\n%s", link)
	}
	flags, err := probeHdr(d.File(), 10, netip.MustParseAddrPort("198.18.0.1:40001"), target, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	} else if flags&(tcpSYN|tcpACK) != tcpSYN|tcpACK {
		t.Errorf("flags %#x, want SYN-ACK", flags)
	}
}

// TestPrivilegedReturnPath measures what a target needs: rp_filter in every
// mode leaves the return path working, and route_localnet on the device is
// what a loopback target depends on.
func TestPrivilegedReturnPath(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	ns := tuntest.Current(t)
	ns.AddDummy(t, "tgt0", "10.1.0.1/24")
	ns.AddAddr(t, "tgt0", "fd01::1/64")
	lo, v4, v6 := listen(t, "127.0.0.1"), listen(t, "10.1.0.1"), listen(t, "fd01::1")
	port := uint16(41000)
	for _, rp := range []string{"0", "1", "2"} {
		t.Run("rp_filter="+rp, func(t *testing.T) {
			// New devices copy "default"; the effective value is max(all, dev).
			writeSysctl(t, "net/ipv4/conf/all/rp_filter", rp)
			writeSysctl(t, "net/ipv4/conf/default/rp_filter", rp)
			d, err := Open(Config{Targets: []netip.Addr{lo.Addr(), v4.Addr(), v6.Addr()}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if got := readSysctl(t, "net/ipv4/conf/tcopy0/rp_filter"); got != rp {
				t.Errorf("rp_filter on tcopy0 = %s, want %s (Open must not touch it)", got, rp)
			}
			for _, tg := range []netip.AddrPort{lo, v4, v6} {
				port++
				c := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.9"), port)
				if tg.Addr().Is6() {
					c = netip.AddrPortFrom(netip.MustParseAddr("2001:2::9"), port)
				}
				if _, err := probe(d.File(), c, tg, 3*time.Second); err != nil {
					t.Errorf("rp_filter=%s: %v", rp, err)
				}
			}
			// Evidence that route_localnet is what the loopback target needs:
			// switched off, the SYN gets no answer.
			writeSysctl(t, "net/ipv4/conf/tcopy0/route_localnet", "0")
			port++
			c := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.9"), port)
			if _, err := probe(d.File(), c, lo, 500*time.Millisecond); !errors.Is(err, errNoReply) {
				t.Errorf("loopback target without route_localnet: %v, want no reply", err)
			}
			writeSysctl(t, "net/ipv4/conf/tcopy0/route_localnet", "1")
		})
	}
}

// TestPrivilegedSIGKILL: a process holding the device dies by SIGKILL; the
// kernel removes the device, its routes and its settings.
func TestPrivilegedSIGKILL(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	before := sysctls(t, "tcopy0")
	c := exec.Command(os.Args[0])
	c.Env = append(os.Environ(), envHelper+"=hold", envHelperTargets+"=127.0.0.1")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	ready := make(chan string, 1)
	go func() {
		var seen []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if sc.Text() == "READY" {
				ready <- strings.Join(seen, "\n")
				return
			}
		}
		ready <- strings.Join(seen, "\n") + "\n(exited before READY)"
	}()
	select {
	case s := <-ready:
		if !strings.HasSuffix(s, "READY") {
			t.Fatalf("helper did not get ready:\n%s", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper not ready after 20s")
	}
	if r := run(t, "ip", "route", "show", "dev", "tcopy0"); !strings.Contains(r, "198.18.0.0/15") {
		t.Fatalf("helper holds no route:\n%s", r)
	}
	if err := c.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = c.Wait()
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", err)
	}
	gone(t, "tcopy0")
	if diff := diffSysctls(before, sysctls(t, "tcopy0")); diff != "" {
		t.Errorf("settings left changed after SIGKILL:\n%s", diff)
	}
}

// TestPrivilegedConflicts: a client range overlapping a local address or a
// route is refused before anything changes, and the verification finds a
// policy route that steals the replies, then undoes the device.
func TestPrivilegedConflicts(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	ns := tuntest.Current(t)
	ns.AddDummy(t, "tgt0", "10.1.0.1/24")
	ns.AddDummy(t, "other0", "10.2.0.1/24")

	check := func(t *testing.T, cfg Config, want string) {
		t.Helper()
		before := sysctls(t, "tcopy0")
		d, err := Open(cfg)
		if err == nil {
			d.Close()
			t.Fatalf("Open succeeded; want an error containing %q", want)
		}
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q (ErrConflict: %v); want ErrConflict containing %q", err, errors.Is(err, ErrConflict), want)
		}
		gone(t, "tcopy0")
		if diff := diffSysctls(before, sysctls(t, "tcopy0")); diff != "" {
			t.Errorf("a refused Open changed settings:\n%s", diff)
		}
	}
	t.Run("local address", func(t *testing.T) {
		ns.AddAddr(t, "other0", "198.18.7.7/32")
		defer ns.Run(t, "ip", "addr", "del", "198.18.7.7/32", "dev", "other0")
		check(t, Config{Targets: []netip.Addr{netip.MustParseAddr("10.1.0.1")}},
			"client range 198.18.0.0/15 contains 198.18.7.7, an address of this host (dev other0)")
	})
	t.Run("route", func(t *testing.T) {
		ns.Run(t, "ip", "route", "add", "198.19.0.0/16", "via", "10.2.0.2")
		defer ns.Run(t, "ip", "route", "del", "198.19.0.0/16")
		check(t, Config{Targets: []netip.Addr{netip.MustParseAddr("10.1.0.1")}},
			"client range 198.18.0.0/15 overlaps the route 198.19.0.0/16 via 10.2.0.2 dev other0")
	})
	t.Run("policy route found by the verification", func(t *testing.T) {
		ns.Run(t, "ip", "rule", "add", "from", "10.1.0.1", "lookup", "100")
		defer ns.Run(t, "ip", "rule", "del", "from", "10.1.0.1", "lookup", "100")
		ns.Run(t, "ip", "route", "add", "198.18.0.0/16", "dev", "other0", "table", "100")
		defer ns.Run(t, "ip", "route", "del", "198.18.0.0/16", "dev", "other0", "table", "100")
		check(t, Config{Targets: []netip.Addr{netip.MustParseAddr("10.1.0.1")}},
			"return route from target 10.1.0.1 to client 198.18.0.1 (range 198.18.0.0/15) leads to dev other0, not into tcopy0: route 198.18.0.0/16 dev other0 table 100 wins")
	})
	t.Run("::1", func(t *testing.T) {
		_, err := Open(Config{Targets: []netip.Addr{netip.IPv6Loopback()}})
		if err == nil || !strings.Contains(err.Error(), "::1: IPv6 loopback cannot be reached through a TUN") {
			t.Errorf("Open(::1) = %v", err)
		}
	})
	t.Run("device name taken", func(t *testing.T) {
		_, err := Open(Config{Name: "other0"})
		if err == nil || !strings.Contains(err.Error(), "a device named other0 exists already") {
			t.Errorf("Open(other0) = %v", err)
		}
	})
}

// TestPrivilegedForward: tcopy-tun in this namespace, the target in another
// joined by a veth pair and routing the client ranges back. Open enables
// forwarding on exactly the device and the veth, never the global switches;
// a SYN through the device gets the remote target's SYN-ACK; each of those
// settings is shown to be needed; Close restores them all.
func TestPrivilegedForward(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	a, b := tuntest.Current(t), tuntest.NewNetns(t)
	p := tuntest.Veth(t, a, b, "10.10.0.1/24", "10.10.0.2/24")
	a.AddAddr(t, p.A, "fd10::1/64")
	b.AddAddr(t, p.B, "fd10::2/64")
	b.Run(t, "ip", "route", "add", "198.18.0.0/15", "via", "10.10.0.1")
	b.Run(t, "ip", "-6", "route", "add", "2001:2::/48", "via", "fd10::1")
	var targets []netip.AddrPort
	for _, addr := range []string{"10.10.0.2", "fd10::2"} {
		if err := b.Do(func() error {
			targets = append(targets, listen(t, addr))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := sysctls(t, "tcopy0")

	if _, err := Open(Config{Targets: []netip.Addr{targets[0].Addr()}}); err == nil ||
		!strings.Contains(err.Error(), "target 10.10.0.2: not an address of this host (reached by route 10.10.0.0/24 dev "+p.A+")") {
		t.Fatalf("Open of a remote target without Forward = %v, want a refusal", err)
	}
	d, err := Open(Config{Forward: true, Targets: []netip.Addr{targets[0].Addr(), targets[1].Addr()}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	perIf := []string{
		conf(4, "tcopy0", "forwarding"), conf(4, p.A, "forwarding"),
		conf(6, "tcopy0", "force_forwarding"), conf(6, p.A, "force_forwarding"),
	}
	for _, k := range perIf {
		if got := readSysctl(t, k); got != "1" {
			t.Errorf("%s = %s, want 1", k, got)
		}
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/" + p.A + "/forwarding"} {
		if got := readSysctl(t, k); got != "0" {
			t.Errorf("%s = %s, want 0: Open must not switch on host-wide forwarding", k, got)
		}
	}
	port := uint16(42000)
	syn := func(tg netip.AddrPort, timeout time.Duration) error {
		port++
		c := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.5"), port)
		if tg.Addr().Is6() {
			c = netip.AddrPortFrom(netip.MustParseAddr("2001:2::5"), port)
		}
		flags, err := probe(d.File(), c, tg, timeout)
		if err == nil && flags&(tcpSYN|tcpACK) != tcpSYN|tcpACK {
			err = fmt.Errorf("flags %#x, want SYN-ACK", flags)
		}
		return err
	}
	for _, tg := range targets {
		if err := syn(tg, 5*time.Second); err != nil {
			t.Errorf("forwarded return path to %s: %v", tg, err)
		}
	}
	// Each per-interface switch is necessary: with any one off, no answer.
	for _, k := range perIf {
		tg := targets[0]
		if strings.HasPrefix(k, "net/ipv6") {
			tg = targets[1]
		}
		writeSysctl(t, k, "0")
		if err := syn(tg, 500*time.Millisecond); !errors.Is(err, errNoReply) {
			t.Errorf("with %s=0: %v, want no reply", k, err)
		}
		writeSysctl(t, k, "1")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	gone(t, "tcopy0")
	if diff := diffSysctls(before, sysctls(t, "tcopy0")); diff != "" {
		t.Errorf("settings not restored by Close:\n%s", diff)
	}
}

// capHelper runs the test binary in helper mode "open" as uid 65534 with
// only the capabilities caps (setpriv --inh-caps/--ambient-caps syntax, e.g.
// "+net_admin" or "-all"), with a /dev/net/tun of mode 0666 bind-mounted in
// a private mount namespace when tun0666 (most distributions ship 0666;
// this machine's node is 0600). It returns the helper's report.
func capHelper(t *testing.T, caps string, tun0666 bool) map[string]string {
	t.Helper()
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(tuntest.EnvPrivileged) == "1" {
				t.Fatalf("%s not found (util-linux): %v", tool, err)
			}
			t.Skipf("%s not found (install util-linux): %v", tool, err)
		}
	}
	// The helper goes where uid 65534 can execute it.
	dir, err := os.MkdirTemp("", "tcopytest-tun-cap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A static build of this test binary (no cgo, so no race detector):
	// the running one may be dynamic (-race), and a dynamic binary run
	// as nobody needs to read the C library, which a chroot whose root is
	// 0700 (the fresh-machine check's) does not allow.
	bin := filepath.Join(dir, "tun.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c (static helper): %v\n%s", err, out)
	}
	caps = tuntest.NobodyCaps(t, caps)
	script := `exec setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps "$1" --ambient-caps "$1" "$2"`
	if tun0666 {
		node := filepath.Join(dir, "tun")
		if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
			t.Fatalf("mknod %s: %v", node, err)
		}
		if err := os.Chmod(node, 0o666); err != nil { // mknod applies the umask
			t.Fatal(err)
		}
		// The namespace's mounts private before the bind: all of them,
		// or /dev alone where / is not a mount point (a chroot), so that
		// the bind stays in this mount namespace either way.
		script = `{ mount --make-rprivate / 2>/dev/null || mount --make-rprivate /dev; } && ` +
			`mount --bind "$3" /dev/net/tun && ` + script
	}
	// --propagation unchanged: unshare's own "private" fails where / is
	// not a mount point; the script makes the mounts private itself.
	c := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script, "sh", caps, bin, filepath.Join(dir, "tun"))
	c.Env = append(os.Environ(), envHelper+"=open", envHelperTargets+"=127.0.0.1")
	out, err := c.CombinedOutput()
	t.Logf("helper (caps %s, 0666 node %v):\n%s", caps, tun0666, out)
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	rep := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, " ")
		rep[k] = v
	}
	if rep["UID"] != "65534" {
		t.Fatalf("helper ran as uid %q, want 65534", rep["UID"])
	}
	return rep
}

// TestPrivilegedCapabilityOnly: CAP_NET_ADMIN alone, without root, is enough.
func TestPrivilegedCapabilityOnly(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	rep := capHelper(t, "+net_admin", true)
	want := uint64(1) << unix.CAP_NET_ADMIN
	if !tuntest.RootSearchable() {
		want |= 1 << unix.CAP_DAC_READ_SEARCH // see NobodyCaps
	}
	if rep["CAPEFF"] != fmt.Sprintf("%016x", want) {
		t.Errorf("helper's effective capabilities %s, want %016x (CAP_NET_ADMIN only)", rep["CAPEFF"], want)
	}
	if !strings.HasPrefix(rep["OK"], "tcopy0 ") || rep["CLOSED"] != "<nil>" {
		t.Errorf("Open/Close with CAP_NET_ADMIN only: %v", rep)
	}
	gone(t, "tcopy0")
}

// TestPrivilegedMissingCapability: without CAP_NET_ADMIN, Open fails with one
// line naming the capability and a hint with the remedy; with a 0600 device
// node (like this machine's), the line names the node instead.
func TestPrivilegedMissingCapability(t *testing.T) {
	if !tuntest.InNetns(t) {
		return
	}
	rep := capHelper(t, "-all", true)
	if want := `create tun "tcopy0": operation not permitted (needs CAP_NET_ADMIN)`; rep["ERR"] != want {
		t.Errorf("error %q, want %q", rep["ERR"], want)
	}
	if rep["ISPERM"] != "true" || !strings.Contains(rep["HINT"], "setcap cap_net_admin+ep") {
		t.Errorf("errors.Is ErrPermission %s, hint %q", rep["ISPERM"], rep["HINT"])
	}
	if st, err := os.Stat("/dev/net/tun"); err == nil && st.Mode().Perm()&0o006 == 0 {
		rep = capHelper(t, "+net_admin", false)
		if !strings.Contains(rep["ERR"], "open /dev/net/tun: permission denied (/dev/net/tun is not accessible to this user)") ||
			rep["ISPERM"] != "true" || !strings.Contains(rep["HINT"], "0666") {
			t.Errorf("0600 node: %v", rep)
		}
	}
	gone(t, "tcopy0")
}
