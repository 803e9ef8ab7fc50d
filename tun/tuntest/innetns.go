package tuntest

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// EnvInNetns marks a test binary that InNetns re-executed inside a
// namespace; its value is the test's full name and EnvInNetnsName carries
// the namespace's name.
const (
	EnvInNetns     = "TCOPY_TUNTEST_IN_NETNS"
	EnvInNetnsName = "TCOPY_TUNTEST_NETNS_NAME"
)

// InNetns runs the calling test inside a fresh network namespace. Use it as
//
//	func TestPrivilegedX(t *testing.T) {
//		if !tuntest.InNetns(t) {
//			return
//		}
//		// runs in the namespace; the whole process is there, so netlink,
//		// /proc/sys/net and /dev/net/tun all act on it.
//	}
//
// Outside, InNetns probes the capability (Privileged), creates a namespace,
// re-executes the test binary there (`nsenter --net=NS os.Args[0]
// -test.run=^Name$ -test.v`) with the EnvInNetns marker, logs the child's
// output line by line, fails the test if the child failed or did not run
// it, skips if the child skipped, and returns false. Inside (the marker
// names this test) it returns true at once.
//
// The namespace is deleted when the test ends, after the child has exited.
// Subtests work: the -test.run pattern anchors every path element.
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(EnvInNetns) == t.Name() {
		return true
	}
	ns := NewNetns(t)
	args := []string{os.Args[0], "-test.run=" + runPattern(t.Name()), "-test.v", "-test.count=1"}
	if f := flag.Lookup("test.timeout"); f != nil && f.Value.String() != "0s" {
		args = append(args, "-test.timeout="+f.Value.String())
	}
	c := ns.Command(args...)
	c.Env = append(os.Environ(), EnvInNetns+"="+t.Name(), EnvInNetnsName+"="+ns.Name)
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw

	var (
		mu                   sync.Mutex
		passed, skip, failed bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			t.Log(line)
			mu.Lock()
			// The child's verdict: "--- PASS: Name (0.01s)".
			if f := strings.Fields(strings.TrimSpace(line)); len(f) >= 3 && f[0] == "---" && f[2] == t.Name() {
				switch f[1] {
				case "PASS:":
					passed = true
				case "SKIP:":
					skip = true
				case "FAIL:":
					failed = true
				}
			}
			mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	ns.StartCmd(t, c)
	err := c.Wait()
	pw.Close()
	<-done

	mu.Lock()
	defer mu.Unlock()
	switch {
	case err != nil || failed:
		t.Fatalf("%s inside netns %s failed (output above): %v", t.Name(), ns.Name, errOrFail(err))
	case skip:
		t.Skipf("%s skipped inside netns %s (reason above)", t.Name(), ns.Name)
	case !passed:
		t.Fatalf("%s did not run inside netns %s: -test.run %s matched nothing (output above)", t.Name(), ns.Name, runPattern(t.Name()))
	}
	return false
}

func errOrFail(err error) error {
	if err == nil {
		return fmt.Errorf("test reported FAIL")
	}
	return err
}

// runPattern anchors each element of a (sub)test name for -test.run, which
// splits its argument at slashes.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}
