package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/tcopy-tun/tcopy-tun/replay"
)

// demoEnv marks the child process of `tcopy-tun demo` that runs inside the
// private network namespace.
const demoEnv = "TCOPY_TUN_DEMO_CHILD"

// demoCapture is the bundled capture, looked up relative to the working
// directory and to the binary (bin/tcopy-tun → testdata/).
const demoCapture = "testdata/demo-http.pcap"

// runDemo is the built-in default: the bundled capture replayed through a
// real TUN and the netstack against the bundled server on 127.0.0.1, all
// inside a private network namespace that vanishes with the process. It
// prints the replay's summary and what the server saw.
func runDemo(e env, args []string) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(e.stdout, "usage: tcopy-tun demo [replay flags]\n\nReplays testdata/demo-http.pcap against a built-in HTTP server on 127.0.0.1:8080\nin a private network namespace (needs root or CAP_SYS_ADMIN+CAP_NET_ADMIN).\nExtra flags go to the replay, e.g. --speed max or --report -.")
		return exitOK
	}
	if os.Getenv(demoEnv) == "" {
		return demoParent(e, args)
	}
	return demoChild(e, args)
}

// demoParent re-executes the binary in a new network namespace. The
// namespace has no name and no mount: it exists only as long as the child,
// so nothing is left behind however the demo ends.
func demoParent(e env, args []string) int {
	exe, err := os.Executable()
	if err != nil {
		fail(e, fmt.Errorf("demo: %w", err))
		return exitFailure
	}
	cmd := exec.Command(exe, append([]string{"demo"}, args...)...)
	cmd.Env = append(os.Environ(), demoEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	// The child sees SIGINT from the terminal itself; the parent only waits.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if errors.Is(err, syscall.EPERM) {
			failHint(e, fmt.Errorf("demo: create a private network namespace: %w", err), "run as root (the demo creates a network namespace and a TUN device)")
			return exitPriv
		}
		fail(e, fmt.Errorf("demo: %w", err))
		return exitFailure
	}
	return exitOK
}

func demoChild(e env, args []string) int {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		fail(e, fmt.Errorf("demo: bring up lo in the private namespace: %w", err))
		return exitPriv
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:8080")
	if err != nil {
		fail(e, fmt.Errorf("demo: start the bundled server: %w", err))
		return exitFailure
	}
	srv := newDemoServer(ln)

	pcap := findDemoCapture()
	full := append([]string{"--pcap", pcap, "--target", "127.0.0.1:8080"}, args...)
	f, err := parseReplayFlags(full, e.stdout)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "tcopy-tun: demo: %v\n", err)
		return exitUsage
	}
	e = withLog(e, f.logFormat)
	fmt.Fprintf(e.stderr, "tcopy-tun demo: replaying %s (captured server 10.1.0.1:8080) against the bundled HTTP server on 127.0.0.1:8080\n", pcap)
	fmt.Fprintf(e.stderr, "tcopy-tun demo: through TUN %s and the in-process TCP stack, at speed %s, inside a private network namespace\n", f.tunName, speedString(f.speed))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := replayJob(ctx, e, f, nil)
	srv.close()
	conns, reqs, lines := srv.stats()
	fmt.Fprintf(e.stderr, "── the server's side ──\nconnections accepted: %d\nrequests answered:    %d\n", conns, reqs)
	for _, l := range lines {
		fmt.Fprintln(e.stderr, l)
	}
	return code
}

func findDemoCapture() string {
	if _, err := os.Stat(demoCapture); err == nil {
		return demoCapture
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "..", demoCapture)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return demoCapture // the replay reports it missing
}

func speedString(s float64) string {
	if s == replay.SpeedMax || s == 0 {
		return "max"
	}
	return fmt.Sprintf("%g", s)
}
