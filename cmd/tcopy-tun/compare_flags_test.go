package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompareFlags: --baseline, --ignore and --fail-slower are checked
// before anything runs, each refusal one line naming the flag.
func TestCompareFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("headers: [x-request-id]\nroutes:\n  - route: \"GET /a/*\"\n    json: [\"$.id\"]\n"), 0o644)
	os.WriteFile(bad, []byte("json: [\"$.a[x]\"]\n"), 0o644)
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("headerz: [a]\nroutes:\n  - rout: x\n"), 0o644)
	base := []string{"--pcap", "x.pcap", "--target", "127.0.0.1:8080"}
	for _, tc := range []struct {
		args []string
		err  string // "" ok
	}{
		{[]string{"--baseline", "127.0.0.1:8081", "--ignore", good, "--fail-slower", "1.5"}, ""},
		{[]string{"--baseline", "127.0.0.1:8080"}, "is the --target itself"},
		{[]string{"--baseline", "nope"}, "baseline"},
		{[]string{"--baseline", "127.0.0.1:8081", "--map", "10.0.0.1:80=127.0.0.1:9"}, "cannot be combined with --map"},
		{[]string{"--ignore", bad}, `--ignore: read rules "` + bad + `": json path "$.a[x]"`},
		{[]string{"--ignore", filepath.Join(dir, "missing.yaml")}, "--ignore: read rules: open"},
		{[]string{"--fail-slower", "-1"}, "--fail-slower -1"},
		{[]string{"--ignore", unknown}, "field headerz not found"},
	} {
		f, err := parseReplayFlags(append(append([]string(nil), base...), tc.args...), io.Discard)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.err == "" && (f.rules == nil || !f.baseline.IsValid() || f.failSlower != 1.5):
			t.Errorf("%v: flags %+v", tc.args, f)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%v: error %v, want one line with %q", tc.args, err, tc.err)
		}
	}
}
