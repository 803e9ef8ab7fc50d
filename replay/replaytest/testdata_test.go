package replaytest_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

var update = flag.Bool("update", false, "rewrite the generated files under testdata/")

const testdataDir = "../../testdata"

// TestGenerateTestdata keeps the generated captures in testdata/ equal to
// what the generators produce. Run with -update to rewrite them:
//
//	go test ./replay/replaytest -run TestGenerateTestdata -update
func TestGenerateTestdata(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testdataDir, "README.md"))
	if err != nil {
		t.Fatalf("testdata/README.md must describe the generated files: %v", err)
	}
	for _, g := range replaytest.GeneratedCaptures() {
		path := filepath.Join(testdataDir, filepath.FromSlash(g.Path))
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, g.Data, 0o644); err != nil {
				t.Fatal(err)
			}
		} else {
			have, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: %v (generate it: go test ./replay/replaytest -run TestGenerateTestdata -update)", g.Path, err)
				continue
			}
			if !bytes.Equal(have, g.Data) {
				t.Errorf("%s is out of date (%d bytes, generator gives %d): go test ./replay/replaytest -run TestGenerateTestdata -update", g.Path, len(have), len(g.Data))
			}
		}
		if !strings.Contains(string(readme), "`"+g.Path+"`") {
			t.Errorf("testdata/README.md does not describe %s", g.Path)
		}
	}
}

// TestGeneratedDeterministic: generating twice gives the same bytes, so the
// committed files can be checked at all.
func TestGeneratedDeterministic(t *testing.T) {
	a, b := replaytest.GeneratedCaptures(), replaytest.GeneratedCaptures()
	for i := range a {
		if !bytes.Equal(a[i].Data, b[i].Data) {
			t.Errorf("%s differs between two runs", a[i].Path)
		}
	}
}
