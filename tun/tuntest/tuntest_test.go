package tuntest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunPattern(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"TestA", "^TestA$"},
		{"TestA/sub_1", "^TestA$/^sub_1$"},
		{"TestA/x.y(z)#01", `^TestA$/^x\.y\(z\)#01$`},
	} {
		if got := runPattern(tc.name); got != tc.want {
			t.Errorf("runPattern(%q) = %q, want %q", tc.name, got, tc.want)
		}
		// The pattern must select the name it came from and not a longer one.
		for i, part := range strings.Split(tc.name, "/") {
			re := regexp.MustCompile(strings.Split(tc.want, "/")[i])
			if !re.MatchString(part) || re.MatchString(part+"X") {
				t.Errorf("pattern %q element %d does not select exactly %q", tc.want, i, part)
			}
		}
	}
}

func TestNsName(t *testing.T) {
	a, b := nsName("Tun.Test_pkg"), nsName("Tun.Test_pkg")
	if !regexp.MustCompile(`^tcopytest-tuntestpkg-[0-9a-f]{8}$`).MatchString(a) {
		t.Errorf("nsName = %q, want tcopytest-tuntestpkg-<8 hex>", a)
	}
	if a == b {
		t.Errorf("two nsName calls gave the same name %q", a)
	}
	if got := nsName(""); !strings.HasPrefix(got, "tcopytest-tuntest-") {
		t.Errorf("nsName from the test binary = %q, want prefix tcopytest-tuntest-", got)
	}
}

func nsExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

func TestPrivilegedProbeLeavesNothing(t *testing.T) {
	Privileged(t)
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), "tcopytest-probe-") {
		t.Errorf("probe left a namespace behind:\n%s", out)
	}
}

// TestPrivilegedNetnsCleanup checks that a namespace and a process started
// in it are gone once the (sub)test that made them has ended, also when it
// failed half-way (simulated by the subtest ending with the process alive).
func TestPrivilegedNetnsCleanup(t *testing.T) {
	Privileged(t)
	var (
		name string
		cmd  *exec.Cmd
	)
	t.Run("inner", func(t *testing.T) {
		ns := NewNetns(t)
		name = ns.Name
		if !nsExists(t, name) {
			t.Fatalf("namespace %s not listed by ip netns list", name)
		}
		if out := ns.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") && !strings.Contains(out, "LOWER_UP") {
			t.Errorf("lo is not up in %s: %s", name, out)
		}
		ns.AddDummy(t, "d0", "10.77.0.1/24")
		ns.AddAddr(t, "d0", "fd77::1/64")
		out := ns.Run(t, "ip", "-o", "addr", "show", "dev", "d0")
		for _, want := range []string{"10.77.0.1/24", "fd77::1/64"} {
			if !strings.Contains(out, want) {
				t.Errorf("d0 lacks %s: %s", want, out)
			}
		}
		if _, err := ns.Output("ip", "link", "show", "no-such-link"); err == nil {
			t.Errorf("Output of a failing command returned no error")
		}
		ns.SetSysctl(t, "net/ipv4/conf/d0/rp_filter", "2")
		if got := ns.Sysctl(t, "net/ipv4/conf/d0/rp_filter"); got != "2" {
			t.Errorf("rp_filter on d0 = %q after SetSysctl 2", got)
		}
		cmd = ns.Start(t, "sleep", "300")
	})
	if nsExists(t, name) {
		t.Errorf("namespace %s still exists after its test ended", name)
	}
	if cmd == nil || cmd.ProcessState == nil {
		t.Fatalf("process started in the namespace was not reaped")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("process state %v, want killed by SIGKILL", cmd.ProcessState)
	}
}

func TestPrivilegedDo(t *testing.T) {
	ns := NewNetns(t)
	ns.AddDummy(t, "dodummy0", "")
	var names []string
	err := ns.Do(func() error {
		ifs, err := net.Interfaces() // a netlink dump from this thread
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "lo,dodummy0" {
		t.Errorf("interfaces seen inside Do = %v, want [lo dodummy0]", names)
	}
}

func TestPrivilegedVeth(t *testing.T) {
	a, b := NewNetns(t), NewNetns(t)
	p := Veth(t, a, b, "10.78.0.1/24", "10.78.0.2/24")
	a.AddAddr(t, p.A, "fd78::1/64")
	b.AddAddr(t, p.B, "fd78::2/64")
	// A TCP connection across the wire, both families, with nothing but the
	// test binary's own net package: a listener in b via Do, a dial from a.
	for _, addr := range []string{"10.78.0.2:7001", "[fd78::2]:7001"} {
		var ln net.Listener
		if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatalf("listen in %s: %v", b.Name, err)
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		err := a.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err != nil {
			t.Errorf("dial %s from %s over veth: %v", addr, a.Name, err)
		} else if err := <-accepted; err != nil {
			t.Errorf("accept on %s: %v", addr, err)
		}
		ln.Close()
	}
}

func TestPrivilegedInNetns(t *testing.T) {
	if !InNetns(t) {
		return
	}
	name := os.Getenv(EnvInNetnsName)
	if name == "" {
		t.Fatalf("%s not set inside the namespace", EnvInNetnsName)
	}
	var self, want syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/run/netns/"+name, &want); err != nil {
		t.Fatal(err)
	}
	if self.Ino != want.Ino {
		t.Errorf("test process is in netns inode %d, want %s (inode %d)", self.Ino, name, want.Ino)
	}
	cur := Current(t)
	if cur == nil || cur.Name != name {
		t.Fatalf("Current = %v inside netns %s", cur, name)
	}
	if out := cur.Run(t, "sh", "-c", "readlink /proc/self/ns/net"); !strings.Contains(out, fmt.Sprint(want.Ino)) {
		t.Errorf("Current().Run ran outside %s: %s", name, out)
	}
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Errorf("interfaces in a fresh namespace = %v, %v; want only lo, up", ifs, err)
	}
}

// TestPrivilegedInNetnsReportsFailure runs the test binary on a test that
// fails inside its namespace and checks that InNetns fails the outer test.
func TestPrivilegedInNetnsReportsFailure(t *testing.T) {
	if os.Getenv("TUNTEST_SELFTEST") == "" {
		Privileged(t)
		c := exec.Command(os.Args[0], "-test.run=^TestPrivilegedInNetnsReportsFailure$", "-test.v", "-test.count=1")
		c.Env = append(os.Environ(), "TUNTEST_SELFTEST=1")
		out, err := c.CombinedOutput()
		if err == nil {
			t.Fatalf("a failing test inside InNetns passed:\n%s", out)
		}
		for _, want := range []string{"deliberate failure inside the namespace", "failed (output above)"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		return
	}
	if !InNetns(t) {
		return
	}
	t.Errorf("deliberate failure inside the namespace")
}
