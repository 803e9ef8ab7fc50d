package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
)

// The TLS workloads' cost (issue 12: decrypting must not dominate).
//
// A TLS session's replay does three things a plaintext one does not:
// decrypt the captured records (key log), make a new TLS handshake with
// the target, and seal and open its records. Three replays of the same
// sessions through the TUN separate them, in tcopy-tun's CPU time per
// session:
//
//	plain      the plaintext twin capture (the same sessions, no TLS) to the plaintext target
//	decrypted  the TLS capture with its key log, --target-tls off, to the plaintext target
//	tls        the TLS capture with its key log, to the TLS target (the workload's own tun runs)
//
// decrypted − plain is what decrypting costs; tls − decrypted what the new
// handshakes and records cost.

// tlsCost is a TLS workload's breakdown, CPU milliseconds of tcopy-tun per
// session (user + system, the median run of each).
type tlsCost struct {
	PlainMS     float64    `json:"plain_cpu_ms_per_session"`
	DecryptedMS float64    `json:"decrypted_cpu_ms_per_session"`
	TLSMS       float64    `json:"tls_cpu_ms_per_session"`
	Plain       *runResult `json:"plain"`
	Decrypted   *runResult `json:"decrypted"`
}

// decryptShare is the part of a TLS session's replay cost that decrypting
// is.
func (c *tlsCost) decryptShare() float64 {
	if c.TLSMS <= 0 {
		return 0
	}
	return max(c.DecryptedMS-c.PlainMS, 0) / c.TLSMS
}

// maxDecryptShare is the goal: decrypting is less than this part of a TLS
// session's replay cost.
const maxDecryptShare = 0.5

func tlsGoals() []goal {
	return []goal{
		{"100 % delivered via tun", func(t, _ *runResult) (string, bool) {
			return fmt.Sprintf("%.2f %%", t.DeliveredPct), t.Succeeded == t.Expected
		}},
		{"every request's plaintext at the target, tun and socket", func(t, s *runResult) (string, bool) {
			got := "tun " + bytesAtTarget(t)
			if s != nil {
				got += ", socket " + bytesAtTarget(s)
			}
			return got, t.AllBytesDelivered && (s == nil || s.AllBytesDelivered)
		}},
	}
}

// tlsTarget starts the TLS target beside the plaintext one (the same
// address, another port), once.
func (h *harness) tlsTarget(ctx context.Context, ns *netns, self, tmp string, plain *target) (*target, string, error) {
	certFile, keyFile, err := benchCert(tmp)
	if err != nil {
		return nil, "", err
	}
	host, _, err := net.SplitHostPort(plain.addr)
	if err != nil {
		return nil, "", fmt.Errorf("TLS target: %w", err)
	}
	t, err := startTarget(ctx, ns, self, net.JoinHostPort(host, "0"), "-tls-cert", certFile, "-tls-key", keyFile)
	if err != nil {
		return nil, "", fmt.Errorf("TLS target: %w", err)
	}
	h.logf("TLS target on %s (certificate %s)", t.addr, certFile)
	return t, certFile, nil
}

// tlsCostRuns replays the plaintext twin and the decrypted capture through
// the TUN to the plaintext target (runs times each) and sets wr.TLSCost
// from their medians and the workload's own tun median. ro is the
// workload's replay options (capture, key log) with the plaintext target.
func (h *harness) tlsCostRuns(ctx context.Context, ro replayOpts, w *workload, wr *workloadResult, keylog string, runs int) error {
	if wr.Tun == nil || wr.Tun.Error != "" {
		return fmt.Errorf("%s: no completed TLS replay to cost", w.Name)
	}
	twin := filepath.Join(filepath.Dir(ro.capture), "plain-twin.pcap")
	st, err := generate(w.Capture.plain(), twin)
	if err != nil {
		return err
	}
	defer os.Remove(twin)
	median3 := func(name string, o replayOpts) (*runResult, error) {
		wl := &workload{Name: name, Capture: w.Capture, Metric: w.Metric}
		return replayMedian(ctx, o, wl, "tun", runs, w.Metric, func(res *runResult) {
			h.logf("%-15s %-6s %s", name, "tun", res.line())
		})
	}
	po := ro
	po.capture, po.expectedBytes = twin, st.ClientBytes
	plain, err := median3(w.Name+"-plain", po)
	if err != nil {
		return err
	}
	do := ro
	do.extra = append(append([]string(nil), ro.extra...), "--tls-keylog", keylog, "--target-tls", "off")
	dec, err := median3(w.Name+"-decrypted", do)
	if err != nil {
		return err
	}
	wr.TLSCost = &tlsCost{PlainMS: plain.CPUPer1k, DecryptedMS: dec.CPUPer1k, TLSMS: wr.Tun.CPUPer1k, Plain: plain, Decrypted: dec}
	share := wr.TLSCost.decryptShare()
	wr.Targets = append(wr.Targets, goalResult{
		What: fmt.Sprintf("decrypting < %.0f %% of a TLS session's replay CPU", 100*maxDecryptShare),
		Got:  fmt.Sprintf("%.0f %%", 100*share),
		Met:  plain.Succeeded == plain.Expected && dec.Succeeded == dec.Expected && share < maxDecryptShare,
	})
	return nil
}

// writeTLSCost prints each TLS workload's breakdown.
func writeTLSCost(w io.Writer, rep *benchReport) {
	for _, wr := range rep.Workloads {
		c := wr.TLSCost
		if c == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: tcopy-tun CPU per session via tun (%d sessions, %d requests each)\n", wr.Name, wr.Capture.Sessions, wr.Capture.Requests)
		fmt.Fprintf(w, "  plaintext twin, plaintext target       %.3f ms  (%.0f sessions/s)\n", c.PlainMS, c.Plain.SessionsPerSec)
		fmt.Fprintf(w, "  TLS decrypted, --target-tls off        %.3f ms  (%.0f sessions/s): decrypting %+.3f ms\n", c.DecryptedMS, c.Decrypted.SessionsPerSec, c.DecryptedMS-c.PlainMS)
		fmt.Fprintf(w, "  TLS decrypted, new handshake to target %.3f ms  (%.0f sessions/s): handshake and records %+.3f ms\n", c.TLSMS, wr.Tun.SessionsPerSec, c.TLSMS-c.DecryptedMS)
		fmt.Fprintf(w, "  TLS / plaintext %.1f×; decrypting is %.0f %% of a TLS session's cost\n", c.TLSMS/max(c.PlainMS, 1e-9), 100*c.decryptShare())
	}
}
