package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// netns is the bench's named network namespace, tcopybench-<pid>. Every
// process of a run (the target, each tcopy-tun) lives in it, so the bench's
// traffic never leaves it and its TUN devices, routes and sysctls vanish
// with it.
type netns struct {
	name string
}

const netnsPrefix = "tcopybench-"

// nsSysctls tune the namespace's kernel for a connection-rate benchmark.
// They apply to both replay paths alike (the target's side of the kernel):
// a wide ephemeral range so that --via socket, which dials from one
// address, does not run out of ports in the 1,000,000-session workload, and
// deep accept queues.
var nsSysctls = [][2]string{
	{"net/ipv4/ip_local_port_range", "1024 65535"},
	{"net/ipv4/tcp_tw_reuse", "1"},
	{"net/core/somaxconn", "65535"},
	{"net/ipv4/tcp_max_syn_backlog", "65535"},
}

// createNetns makes the namespace with lo up and the sysctls set. On error
// it deletes what it made.
func createNetns(ctx context.Context, self string) (*netns, error) {
	n := &netns{name: fmt.Sprintf("%s%d", netnsPrefix, os.Getpid())}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create namespace %s: ip netns add: %v: %s", n.name, err, bytes.TrimSpace(out))
	}
	if out, err := n.ip(ctx, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.delete()
		return nil, fmt.Errorf("namespace %s: bring up lo: %v: %s", n.name, err, bytes.TrimSpace(out))
	}
	args := []string{"sysctl"}
	for _, kv := range nsSysctls {
		args = append(args, kv[0]+"="+kv[1])
	}
	if out, err := n.command(ctx, self, args...).CombinedOutput(); err != nil {
		n.delete()
		return nil, fmt.Errorf("namespace %s: sysctls: %v: %s", n.name, err, bytes.TrimSpace(out))
	}
	return n, nil
}

// command runs name inside the namespace. nsenter enters the namespace's
// network and execs name in the same process, so the pid and the rusage
// Wait reports are name's own. (Not `ip netns exec`, which also remounts /
// and fails where / is not a mount point, as in a chroot.)
//
// A nil namespace runs name directly, in the caller's namespace (tests).
func (n *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if n == nil {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + n.name, "--", name}, args...)...)
	}
	// Ask nicely first (tcopy-tun writes its report and removes its TUN on
	// SIGINT), then kill.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 15 * time.Second
	// If the harness dies, so do its children, so that the namespace can
	// go with the next run's sweep.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ip runs ip(8) inside the namespace (through nsenter, as command does:
// `ip -n` switches namespaces as `ip netns exec` does, remounting /).
func (n *netns) ip(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + n.name, "--", "ip"}, args...)...)
}

// delete removes the namespace. Processes still in it must have been
// stopped first (the namespace would live on with them, unnamed).
func (n *netns) delete() error {
	out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("delete namespace %s: %v: %s", n.name, err, bytes.TrimSpace(out))
	}
	return nil
}

var staleNetns = regexp.MustCompile(`^` + netnsPrefix + `(\d+)$`)

// sweepStaleNetns deletes namespaces of earlier bench runs that were killed
// before they could clean up: tcopybench-<pid> whose pid is no longer a
// tcopy-tun-bench process. Namespaces of a bench still running are left.
func sweepStaleNetns(logf func(string, ...any)) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleNetns.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if benchAlive(pid) {
			continue
		}
		if err := exec.Command("ip", "netns", "del", f[0]).Run(); err == nil {
			logf("deleted namespace %s left by an earlier run that was killed", f[0])
		}
	}
}

// benchAlive reports whether pid is a running tcopy-tun-bench.
func benchAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return false
	}
	// comm is cut to 15 bytes, which "tcopy-tun-bench" just fits.
	return strings.TrimSpace(string(comm)) == "tcopy-tun-bench"
}

// runSysctl is `tcopy-tun-bench sysctl key=value...`, run inside the
// namespace: /proc/sys/net belongs to the namespace of the process that
// opens it. Keys use slashes (net/ipv4/...).
func runSysctl(args []string) int {
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || strings.Contains(k, "..") {
			fmt.Fprintf(os.Stderr, "tcopy-tun-bench sysctl: %q: want key=value\n", a)
			return exitUsage
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "tcopy-tun-bench sysctl: %v\n", err)
			return exitFailure
		}
	}
	return exitOK
}
