package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyBoundaries keeps DESIGN.md's "must not know about" column
// true: each package's non-test imports (transitively) may not reach the
// packages named here. cmd/tcopy-tun is the one place where all of them meet.
func TestDependencyBoundaries(t *testing.T) {
	const mod = "github.com/tcopy-tun/tcopy-tun/"
	gvisor := "gvisor.dev/gvisor"
	// The engine and the intercept count for their summary; only
	// replay/metrics (and the command) know Prometheus.
	prom := "github.com/prometheus"
	banned := map[string][]string{
		"replay/capture": {gvisor, mod + "netstack", mod + "tun", mod + "intercept", mod + "replay/session", mod + "replay/tlsdecrypt", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		// TLS decryption is crypto over byte streams: it knows neither
		// packets (capture hands it pcapng secrets through an interface)
		// nor sessions.
		// The TLS seam works on session events, between the Builder and
		// the replay.
		"replay/tlssession": {gvisor, mod + "netstack", mod + "tun", mod + "intercept", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		"replay/tlsdecrypt": {gvisor, "github.com/gopacket/gopacket", mod + "netstack", mod + "tun", mod + "intercept", mod + "replay/capture", mod + "replay/session", mod + "replay/agent", mod + "replay/metrics", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		"replay/session":    {gvisor, mod + "netstack", mod + "tun", mod + "intercept", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		"replay/agent":      {gvisor, mod + "netstack", mod + "tun", mod + "intercept", mod + "replay/session", "github.com/vishvananda/netlink", prom},
		"replay":            {gvisor, mod + "netstack", mod + "tun", mod + "intercept", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		"netstack":          {"github.com/gopacket/gopacket", mod + "replay", mod + "tun", mod + "intercept", prom},
		"tun":               {gvisor, "github.com/gopacket/gopacket", mod + "replay", mod + "netstack", mod + "intercept", prom},
		"intercept":         {gvisor, mod + "netstack", mod + "tun", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		// The HTML page is drawn from the report alone.
		"intercept/htmlreport": {gvisor, mod + "netstack", mod + "tun", "github.com/songgao/water", "github.com/vishvananda/netlink", prom},
		"replay/metrics":       {gvisor, mod + "netstack", mod + "tun", "github.com/vishvananda/netlink"},
		// sigs.k8s.io/yaml is for the tests only (they read deploy/'s
		// manifests): the command itself must not carry it.
		"cmd/tcopy-tun": {"sigs.k8s.io/yaml"},
	}
	for pkg, bans := range banned {
		out, err := exec.Command("go", "list", "-deps", "-json=ImportPath", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for dec.More() {
			var p struct{ ImportPath string }
			if err := dec.Decode(&p); err != nil {
				t.Fatalf("go list %s: decode: %v", pkg, err)
			}
			for _, b := range bans {
				if p.ImportPath == b || strings.HasPrefix(p.ImportPath, b+"/") {
					t.Errorf("%s depends on %s, which DESIGN.md says it must not know about", pkg, p.ImportPath)
				}
			}
		}
	}
}
