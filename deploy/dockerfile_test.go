package deploy

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	op   string // FROM, RUN, COPY, ... (upper case)
	args string
}

// stage is one FROM and what follows it.
type stage struct {
	from, name string
	ins        []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows what this
// project's Dockerfile uses: comments, backslash continuations, FROM ... AS.
func parseDockerfile(b []byte) ([]stage, error) {
	var stages []stage
	var cur strings.Builder
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(l)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("the last instruction ends with a continuation")
	}
	for _, l := range lines {
		op, args, _ := strings.Cut(l, " ")
		in := instruction{strings.ToUpper(op), strings.TrimSpace(args)}
		if in.op == "FROM" {
			f := strings.Fields(in.args)
			st := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			} else if len(f) != 1 {
				return nil, fmt.Errorf("FROM %s: want IMAGE [AS NAME]", in.args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			return nil, fmt.Errorf("%s before the first FROM", in.op)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages, nil
}

// words splits a RUN line into words the way sh would for the simple
// lines the build stage has (single and double quotes, no expansions);
// anything shell-like beyond that is refused rather than misread.
func words(s string) ([]string, error) {
	if strings.ContainsAny(s, "$`|&;<>()*?") {
		return nil, fmt.Errorf("RUN %s: the test runs plain commands only (no shell syntax)", s)
	}
	var out []string
	var w strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("RUN %s: unterminated quote", s)
	}
	if in {
		out = append(out, w.String())
	}
	return out, nil
}

// goVersion parses "1.26.8" (or "1.26") into comparable numbers.
func goVersion(s string) ([3]int, error) {
	var v [3]int
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Errorf("go version %q", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return v, fmt.Errorf("go version %q", s)
		}
		v[i] = n
	}
	return v, nil
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// copyTree copies a file or a directory tree from src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
}

// TestDockerfileBuildsStatic builds tcopy-tun the way the Dockerfile's build
// stage does: a directory holding only what that stage COPYs (so a package
// it forgets to copy fails here), then each of its RUN lines there, with the
// environment they set (CGO_ENABLED=0). The binary must be static (no ELF
// interpreter, no shared library) and run.
func TestDockerfileBuildsStatic(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not in PATH")
	}
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(b)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(stages) == 0 || stages[0].name != "build" {
		t.Fatalf("Dockerfile: the first stage is not named build")
	}
	build := stages[0]

	// The Go image is at least the Go that go.mod asks for.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	img := regexp.MustCompile(`^golang:(\d+\.\d+(?:\.\d+)?)(?:-\S+)?$`).FindStringSubmatch(build.from)
	if m == nil || img == nil {
		t.Fatalf("build stage FROM %s: want golang:VERSION; go.mod's go line %q", build.from, m)
	}
	want, err1 := goVersion(string(m[1]))
	have, err2 := goVersion(img[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("versions: %v %v", err1, err2)
	}
	if less(have, want) {
		t.Errorf("build stage FROM %s: older than go.mod's go %s", build.from, m[1])
	}

	ctxDir := filepath.Join(t.TempDir(), "context")
	workdir := "/"
	out := ""
	ran := 0
	for _, in := range build.ins {
		switch in.op {
		case "WORKDIR":
			workdir = in.args
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) < 2 || strings.HasPrefix(f[0], "--") {
				t.Fatalf("COPY %s: want SRC... DEST from the context", in.args)
			}
			dest := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				to := filepath.Join(ctxDir, dest)
				if strings.HasSuffix(dest, "/") || len(f) > 2 {
					to = filepath.Join(to, filepath.Base(src))
				}
				if err := copyTree(filepath.Join("..", src), to); err != nil {
					t.Fatalf("COPY %s: %v", in.args, err)
				}
			}
		case "RUN":
			w, err := words(in.args)
			if err != nil {
				t.Fatal(err)
			}
			var env []string
			for len(w) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(w[0]) {
				env, w = append(env, w[0]), w[1:]
			}
			if len(w) < 2 || w[0] != "go" {
				t.Fatalf("RUN %s: not a go command", in.args)
			}
			for i := range w {
				if w[i] == "-o" && i+1 < len(w) {
					out = filepath.Join(t.TempDir(), filepath.Base(w[i+1]))
					w[i+1] = out
				}
			}
			cmd := exec.Command("go", w[1:]...)
			cmd.Dir = ctxDir
			cmd.Env = append(os.Environ(), env...)
			start := time.Now()
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("RUN %s (in a copy of what the stage COPYs, WORKDIR %s): %v\n%s", in.args, workdir, err, b)
			}
			t.Logf("RUN %s: %v", in.args, time.Since(start).Round(time.Millisecond))
			ran++
		}
	}
	if ran == 0 || out == "" {
		t.Fatal("the build stage runs no go build -o")
	}

	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not a static binary (CGO_ENABLED=0 missing?)", out)
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a dynamic section", out)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v (%v)", out, libs, err)
	}
	// The static binary runs (inspect needs no privilege): it lists the
	// bundled capture's servers.
	cmd := exec.Command(out, "inspect", "--json", "../testdata/demo-http.pcap")
	b, err = cmd.Output()
	if err != nil {
		t.Fatalf("%s inspect: %v", out, err)
	}
	if !json.Valid(b) || !strings.Contains(string(b), "8080") {
		t.Errorf("%s inspect --json: not the demo capture's listing:\n%s", out, b)
	}
}

// TestDockerfileFinalStages: the default image is the static binary on a
// distroless base, as a non-root user, and runs it; the capture agent has
// tcpdump and netcat.
func TestDockerfileFinalStages(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages, err := parseDockerfile(b)
	if err != nil {
		t.Fatal(err)
	}
	last := stages[len(stages)-1] // docker build's default target
	if !strings.HasPrefix(last.from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want distroless/static (no libc: the binary is static)", last.from)
	}
	var copied, user, entry string
	for _, in := range last.ins {
		switch in.op {
		case "COPY":
			if f := strings.Fields(in.args); len(f) == 3 && f[0] == "--from=build" {
				copied = f[2]
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			var e []string
			if err := json.Unmarshal([]byte(in.args), &e); err != nil || len(e) == 0 {
				t.Fatalf("ENTRYPOINT %s: want the exec form", in.args)
			}
			entry = e[0]
		}
	}
	if copied == "" || entry != copied {
		t.Errorf("final stage: ENTRYPOINT %q is not the binary copied from build (%q)", entry, copied)
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("final stage: USER %q, want a non-root uid", user)
	}
	var agent *stage
	for i := range stages {
		if stages[i].name == "capture-agent" {
			agent = &stages[i]
		}
	}
	if agent == nil {
		t.Fatal("no capture-agent stage")
	}
	runs := ""
	for _, in := range agent.ins {
		if in.op == "RUN" {
			runs += in.args
		}
	}
	for _, pkg := range []string{"tcpdump", "netcat-openbsd"} {
		if !strings.Contains(runs, pkg) {
			t.Errorf("capture-agent stage does not install %s", pkg)
		}
	}
}

func TestParseDockerfileRejects(t *testing.T) {
	for _, bad := range []string{"RUN x\n", "FROM a b c\n", "FROM a\nRUN x \\"} {
		if _, err := parseDockerfile([]byte(bad)); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
	if _, err := words("go build $(x)"); err == nil {
		t.Error("words accepted shell syntax")
	}
	if w, err := words(`CGO_ENABLED=0 go build -ldflags='-s -w' -o /out/x ./cmd/x`); err != nil || len(w) != 7 || w[3] != "-ldflags=-s -w" {
		t.Errorf("words: %q %v", w, err)
	}
}
