package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// The text format keeps the command's one-line form: "tcopy-tun: msg",
// warnings marked, the hint on a line of its own; json is one object per
// record with time, level, msg and the hint as a field.
func TestLogFormats(t *testing.T) {
	var text bytes.Buffer
	e := withLog(env{stderr: &text}, logText)
	logf(e, "serving metrics on %s", "http://127.0.0.1:1/metrics")
	warnf(e, "the kernel dropped %d packets", 3)
	failHint(e, errors.New("open /dev/net/tun: permission denied"), "run as root")
	e.logger().Info("with attrs", "n", 2, "why", "two words")
	want := "tcopy-tun: serving metrics on http://127.0.0.1:1/metrics\n" +
		"tcopy-tun: warning: the kernel dropped 3 packets\n" +
		"tcopy-tun: open /dev/net/tun: permission denied\nhint: run as root\n" +
		"tcopy-tun: with attrs n=2 why=\"two words\"\n"
	if text.String() != want {
		t.Errorf("text log:\n%s\nwant:\n%s", text.String(), want)
	}

	var js bytes.Buffer
	e = withLog(env{stderr: &js}, logJSON)
	warnf(e, "the kernel dropped %d packets", 3)
	failHint(e, errors.New("open /dev/net/tun: permission denied"), "run as root")
	lines := strings.Split(strings.TrimRight(js.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("json log: %d lines, want 2:\n%s", len(lines), js.String())
	}
	for i, w := range []struct{ level, msg, hint string }{
		{"WARN", "the kernel dropped 3 packets", ""},
		{"ERROR", "open /dev/net/tun: permission denied", "run as root"},
	} {
		var rec struct{ Time, Level, Msg, Hint string }
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, lines[i])
		}
		if rec.Time == "" || rec.Level != w.level || rec.Msg != w.msg || rec.Hint != w.hint {
			t.Errorf("line %d: %+v, want level %s msg %q hint %q", i, rec, w.level, w.msg, w.hint)
		}
	}
}

// A log line clears the progress line first, so the two never share a
// line; the next status redraws it.
func TestStatusWriterClearsProgress(t *testing.T) {
	var b bytes.Buffer
	sw := &statusWriter{w: &b}
	sw.status("10 sessions")
	sw.Write([]byte("tcopy-tun: a message\n"))
	sw.Write([]byte("tcopy-tun: another\n"))
	sw.status("")
	want := clearLine + "10 sessions" + clearLine + "tcopy-tun: a message\ntcopy-tun: another\n" + clearLine
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// The new flags are checked at parse time: one usage error each.
func TestMetricsAndLogFlags(t *testing.T) {
	base := []string{"--pcap", "x.pcap", "--target", "127.0.0.1:80"}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"--metrics", "nope"}, "--metrics"},
		{[]string{"--metrics", ":9464", "--metrics-allow", "10.0.0.0/33"}, "--metrics-allow"},
		{[]string{"--metrics-allow", "10.0.0.0/8"}, "which is not set"},
		{[]string{"--metrics", "9464", "--metrics-allow", "10.0.0.0/8", "--metrics-allow", "192.0.2.1", "--log-format", "json"}, ""},
	} {
		f, err := parseReplayFlags(append(append([]string(nil), base...), tc.args...), &bytes.Buffer{})
		if tc.err == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.args, err)
			} else if f.metricsAddr != "9464" || len(f.metricsAllow) != 2 || f.logFormat != logJSON {
				t.Errorf("%v: parsed %q %v %q", tc.args, f.metricsAddr, f.metricsAllow, f.logFormat)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: error %v, want one with %q", tc.args, err, tc.err)
		}
	}
}
