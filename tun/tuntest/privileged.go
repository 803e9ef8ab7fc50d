package tuntest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// EnvPrivileged is the environment variable that turns a failed capability
// probe from a skip into a test failure. CI sets it to "1" so that a broken
// runner cannot silently skip every privileged test.
const EnvPrivileged = "TCOPY_TUN_PRIVILEGED_TESTS"

// remedy is appended to every probe failure.
const remedy = "hint: run the privileged tests as root with /dev/net/tun, iproute2 and util-linux available, " +
	"e.g. `go test -exec sudo ./...` (not `sudo go test`)"

// Privileged probes what privileged tests really need and skips the test
// with a remedy when it is missing (fails instead when
// TCOPY_TUN_PRIVILEGED_TESTS=1). It does not look at the uid: it creates a
// scratch network namespace, opens /dev/net/tun there and creates a TUN with
// TUNSETIFF, and adds and deletes a named namespace with ip(8) the way
// NewNetns does. The scratch namespace and its TUN vanish with the probe's
// thread, so the probe changes nothing on the host.
func Privileged(t testing.TB) {
	t.Helper()
	if err := probe(); err != nil {
		msg := fmt.Sprintf("privileged test: %v\n%s", err, remedy)
		if os.Getenv(EnvPrivileged) == "1" {
			t.Fatalf("%s\n(%s=1 is set, so this is a failure, not a skip)", msg, EnvPrivileged)
		}
		t.Skipf("%s\nset %s=1 to make this a failure", msg, EnvPrivileged)
	}
}

// Probe reports what Privileged would skip for, or nil. Use it where a
// test must branch rather than skip.
func Probe() error { return probe() }

func probe() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("find ip(8): %w (install iproute2)", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return fmt.Errorf("find nsenter(1): %w (install util-linux)", err)
	}
	if err := probeTUNInScratchNetns(); err != nil {
		return err
	}
	// ip netns add needs more than CLONE_NEWNET (a writable /run/netns and
	// mount rights), so try exactly what NewNetns will do.
	name := nsName("probe")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// probeTUNInScratchNetns creates a TUN device inside a network namespace
// that exists only for one OS thread. The thread stays locked to its
// goroutine, which exits: the Go runtime then terminates the thread instead
// of reusing it, and the kernel frees the namespace and the TUN with it.
func probeTUNInScratchNetns() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w (needs CAP_SYS_ADMIN)", err)
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open /dev/net/tun: %w", err)
			return
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("tcopyprobe0")
		if err != nil {
			errc <- fmt.Errorf("tun probe: %w", err)
			return
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			errc <- fmt.Errorf("create tun (TUNSETIFF) in a scratch network namespace: %w (needs CAP_NET_ADMIN)", err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// nsName returns a unique namespace name tcopytest-<pkg>-<random>, where
// pkg comes from the test binary's name (tun.test -> tun), so a leaked
// namespace says which package's tests made it.
func nsName(pkg string) string {
	if pkg == "" {
		pkg = strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	}
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return -1
	}, pkg)
	if len(clean) > 16 {
		clean = clean[:16]
	}
	if clean == "" {
		clean = "test"
	}
	return "tcopytest-" + clean + "-" + randHex(4)
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on Linux >= 3.17; a panic here is a
		// broken machine, not a test failure to handle.
		panic(err)
	}
	return hex.EncodeToString(b)
}

// RootSearchable reports whether other users may look up paths under /:
// / is 0755 on any installed system, but a chroot made with mktemp -d (the
// fresh-machine check's) has a 0700 root, and a process run as nobody
// there cannot reach any file by an absolute path (its libraries, /proc,
// /dev/net/tun). Tests that run as nobody give it CAP_DAC_READ_SEARCH
// where this is false (NobodyCaps), which reads and searches but never
// writes, and bypasses nothing about the network.
func RootSearchable() bool {
	var st unix.Stat_t
	return unix.Stat("/", &st) == nil && st.Mode&0o001 != 0
}

// NobodyCaps returns caps (setpriv's syntax: "+net_admin", "-all") with
// "+dac_read_search" added where RootSearchable is false, and says so in
// the test's log.
func NobodyCaps(t testing.TB, caps string) string {
	t.Helper()
	if RootSearchable() {
		return caps
	}
	t.Logf("/ is not searchable by other users here (a chroot?): the run as nobody gets CAP_DAC_READ_SEARCH to reach its files")
	return caps + ",+dac_read_search"
}
