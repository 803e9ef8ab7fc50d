package tuntest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a named network namespace created for one test. It is deleted in
// t.Cleanup, after every process started in it with Start or StartCmd has
// been killed by PID.
type Netns struct {
	// Name is the namespace's name for `ip netns`, tcopytest-<pkg>-<random>.
	Name string

	owned bool // made by NewNetns: deleted at cleanup (else see Current)

	mu    sync.Mutex
	procs []proc // started here; killed at cleanup
}

// proc is a process started in the namespace; out, when set, is its
// collected output, logged once it has been stopped.
type proc struct {
	cmd *exec.Cmd
	out *LockedBuffer
}

// NewNetns calls Privileged, then creates a fresh namespace with lo up and
// registers its deletion with t.Cleanup.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	Privileged(t)
	n := &Netns{Name: nsName(""), owned: true}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { n.cleanup(t) })
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Current returns the namespace InNetns runs the calling test in, for use
// with Veth, Start and the other helpers, or nil outside InNetns. Processes
// started through it are killed when the test ends; the namespace itself
// belongs to the outer test, which deletes it.
func Current(t testing.TB) *Netns {
	name := os.Getenv(EnvInNetnsName)
	if name == "" || os.Getenv(EnvInNetns) == "" {
		return nil
	}
	n := &Netns{Name: name}
	t.Cleanup(func() { n.cleanup(t) })
	return n
}

// cleanup kills what was started here, then, for a namespace it owns, any
// process still living in it (it can only be one of this test's) and the
// namespace itself.
func (n *Netns) cleanup(t testing.TB) {
	n.mu.Lock()
	procs := n.procs
	n.procs = nil
	n.mu.Unlock()
	for _, p := range procs {
		stop(p.cmd)
		if p.out != nil {
			if s := p.out.String(); s != "" {
				t.Logf("netns %s: output of %s:\n%s", n.Name, strings.Join(p.cmd.Args[4:], " "), s)
			}
		}
	}
	if !n.owned {
		return
	}
	if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid == os.Getpid() || pid == os.Getppid() || pid <= 1 {
				continue
			}
			t.Logf("netns %s: killing leftover pid %d (%s)", n.Name, pid, cmdline(pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
}

func cmdline(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// stop kills c by PID (exec uses a pidfd where the kernel has one, so a
// reused PID is never hit) and reaps it. A command the test already waited
// for is left alone.
func stop(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	_ = c.Process.Kill()
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// An uninterruptible process cannot be helped here; the namespace
		// is still deleted and the kernel frees it when the process ends.
	}
}

// Command returns an unstarted command that runs args inside the
// namespace's network (`nsenter --net=/run/netns/NAME -- args...`; nsenter
// execs args in place, so the command's PID is args' PID). Start it with
// StartCmd to have it stopped at cleanup.
//
// Not `ip netns exec`: that also makes a mount namespace and remounts /
// as a slave, which fails where / is not a mount point (a chroot, as a
// fresh-machine check builds one: "mount --make-rslave / failed"). What the
// tests need is the network namespace (netlink, sockets, /proc/sys/net,
// /dev/net/tun all follow it); EtcCommand is ip's way, for the one test
// that wants /etc/netns/NAME.
func (n *Netns) Command(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
}

// Path is the namespace's file, for setns(2) and nsenter.
func (n *Netns) Path() string { return "/run/netns/" + n.Name }

// EtcCommand is Command through `ip netns exec`, which also binds the files
// of /etc/netns/NAME over their /etc counterparts (a hosts file of the
// namespace's own). Use it only where EtcWorks.
func (n *Netns) EtcCommand(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

var etcWorks = sync.OnceValue(func() error {
	name := nsName("etc")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "exec", name, "true").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns exec: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
})

// EtcWorks reports why `ip netns exec` cannot run here (nil: it can). It
// needs / to be a mount point, which it is on a machine but not in a plain
// chroot.
func EtcWorks() error { return etcWorks() }

// Output runs args inside the namespace and returns the combined output and
// the error, for commands that are expected to fail.
func (n *Netns) Output(args ...string) (string, error) {
	out, err := n.Command(args...).CombinedOutput()
	return string(out), err
}

// Run runs args inside the namespace and fails the test, with the output,
// when the command fails. It returns the combined output.
func (n *Netns) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Output(args...)
	if err != nil {
		t.Fatalf("netns %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Start starts args in the background inside the namespace. Its output is
// logged with t.Logf when the test ends; it is killed by PID at cleanup. A
// test that waits for it itself must do so before the test returns.
func (n *Netns) Start(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	c := n.Command(args...)
	out := &LockedBuffer{}
	c.Stdout, c.Stderr = out, out
	n.start(t, c, out)
	return c
}

// StartCmd starts c (usually made by Command, with the caller's own stdio)
// and registers it to be killed by PID at cleanup.
func (n *Netns) StartCmd(t testing.TB, c *exec.Cmd) {
	t.Helper()
	n.start(t, c, nil)
}

func (n *Netns) start(t testing.TB, c *exec.Cmd, out *LockedBuffer) {
	t.Helper()
	if err := c.Start(); err != nil {
		t.Fatalf("netns %s: start %s: %v", n.Name, strings.Join(c.Args, " "), err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, proc{cmd: c, out: out})
	n.mu.Unlock()
}

// AddAddr adds prefix (e.g. "10.1.0.1/24", "fd00::1/64") to iface and makes
// sure iface is up. IPv6 addresses skip duplicate address detection so they
// are usable at once.
func (n *Netns) AddAddr(t testing.TB, iface, prefix string) {
	t.Helper()
	args := []string{"ip", "addr", "add", prefix, "dev", iface}
	if strings.Contains(prefix, ":") {
		args = append(args, "nodad")
	}
	n.Run(t, args...)
	n.Run(t, "ip", "link", "set", iface, "up")
}

// AddDummy creates an interface name, up, holding prefix (if not empty): a
// local address for a server to listen on that is not loopback. It is a
// dummy interface where the kernel has the dummy driver, else an ifb or
// bridge device (some CI kernels lack dummy): for local addresses they
// behave the same, since traffic to a local address never reaches the
// device's transmit path.
func (n *Netns) AddDummy(t testing.TB, name, prefix string) {
	t.Helper()
	var errs []string
	for _, kind := range []string{"dummy", "ifb", "bridge"} {
		out, err := n.Output("ip", "link", "add", name, "type", kind)
		if err == nil {
			n.Run(t, "ip", "link", "set", name, "up")
			if prefix != "" {
				n.AddAddr(t, name, prefix)
			}
			return
		}
		errs = append(errs, kind+": "+strings.TrimSpace(out))
	}
	t.Fatalf("netns %s: add interface %s: no dummy, ifb or bridge driver: %s", n.Name, name, strings.Join(errs, "; "))
}

// Sysctl reads a sysctl inside the namespace; key is the /proc/sys path
// relative form with slashes ("net/ipv4/conf/lo/rp_filter"), so interface
// names with dots stay unambiguous.
func (n *Netns) Sysctl(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(n.Run(t, "cat", "/proc/sys/"+key))
}

// SetSysctl writes a sysctl inside the namespace (see Sysctl for key).
func (n *Netns) SetSysctl(t testing.TB, key, value string) {
	t.Helper()
	n.Run(t, "sh", "-c", `printf '%s\n' "$1" > "/proc/sys/$2"`, "sh", value, key)
}

// Do runs fn on an OS thread that has joined the namespace, and returns its
// error. Only fn's own thread is inside: goroutines fn starts run in the
// test's namespace. Sockets fn opens stay in the namespace wherever they are
// used later. Afterwards the thread returns to its original namespace; if
// that fails, it is never given back to the Go scheduler (its goroutine
// exits locked and the runtime retires it).
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("netns %s: panic: %v", n.Name, r)
			}
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("netns %s: open own namespace: %w", n.Name, err)
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns %s: open: %w", n.Name, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			restored = true
			errc <- fmt.Errorf("netns %s: setns: %w", n.Name, err)
			return
		}
		defer func() { restored = unix.Setns(orig, unix.CLONE_NEWNET) == nil }()
		errc <- fn()
	}()
	return <-errc
}

// LockedBuffer is a bytes.Buffer safe for a process's stdout and stderr
// writers and a concurrent reader (the test). The zero value is ready.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
