package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// Helper modes: the privileged tests re-execute the test binary with
// envHelper set to run Open in a process of its own (killed with SIGKILL,
// or running without root).
const (
	envHelper        = "TCOPY_TUN_TEST_HELPER"         // "open" or "hold"
	envHelperTargets = "TCOPY_TUN_TEST_HELPER_TARGETS" // comma-separated addresses
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

// helper opens a device with the targets from the environment and reports
// on stdout, one "KEY value" per line: OK/ERR/HINT/ISPERM, UID and CAPEFF
// (what the process ran with), then for "open" CLOSED after Close, and for
// "hold" READY, after which it blocks until killed.
func helper(mode string) int {
	status, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "CapEff:") {
			fmt.Println("CAPEFF", strings.TrimSpace(strings.TrimPrefix(l, "CapEff:")))
		}
	}
	fmt.Println("UID", os.Geteuid())
	var cfg Config
	for _, s := range strings.Split(os.Getenv(envHelperTargets), ",") {
		if s != "" {
			cfg.Targets = append(cfg.Targets, netip.MustParseAddr(s))
		}
	}
	d, err := Open(cfg)
	if err != nil {
		fmt.Println("ERR", err)
		var pe *PermissionError
		if errors.As(err, &pe) {
			fmt.Println("HINT", pe.Hint())
		}
		fmt.Println("ISPERM", errors.Is(err, ErrPermission))
		return 0
	}
	fmt.Println("OK", d.Name(), d.Index(), d.MTU())
	switch mode {
	case "hold":
		fmt.Println("READY")
		select {} // until SIGKILL
	default:
		fmt.Println("CLOSED", d.Close())
	}
	return 0
}
