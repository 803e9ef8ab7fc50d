package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Log formats (--log-format).
const (
	logText = "text" // one line per record for people: "tcopy-tun: [warning: ]msg key=value"
	logJSON = "json" // slog's JSON, one object per line: time, level, msg, attributes
)

// newLogger returns the command's logger on w. Records below Info are
// only written when TCOPY_TUN_DEBUG is set (host changes, see debugf).
func newLogger(w io.Writer, format string) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("TCOPY_TUN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	if format == logJSON {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(&textHandler{w: w, level: level, mu: new(sync.Mutex)})
}

// logger returns e's logger, a text logger on its stderr by default.
func (e env) logger() *slog.Logger {
	if e.log != nil {
		return e.log
	}
	return newLogger(e.stderr, logText)
}

// textHandler writes the command's established one-line form: the one-line
// error contract (README, "Exit codes") is this handler's output. A "hint"
// attribute goes on a line of its own, "hint: ...", as the remedy for the
// line before. Time is left out: the terminal, journald or the log
// collector adds its own; --log-format json carries it.
type textHandler struct {
	w     io.Writer
	level slog.Level
	mu    *sync.Mutex // shared by the handlers derived with WithAttrs
	attrs []slog.Attr
	group string
}

func (h *textHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *textHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	b.WriteString("tcopy-tun: ")
	if r.Level >= slog.LevelWarn && r.Level < slog.LevelError {
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	var hint string
	add := func(a slog.Attr) bool {
		if a.Key == "hint" && h.group == "" {
			hint = a.Value.String()
			return true
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \t\n\"=") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", key, v)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	b.WriteByte('\n')
	if hint != "" {
		fmt.Fprintf(&b, "hint: %s\n", hint)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.w.Write(b.Bytes())
	return err
}

func (h *textHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &n
}

func (h *textHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "." + name
	}
	n.group = name
	return &n
}

// statusWriter is stderr while a progress line may be on it: any other
// write (a log record, the summary) first clears the progress line, which
// the next tick redraws. Writes are serialised.
type statusWriter struct {
	mu    sync.Mutex
	w     io.Writer
	dirty bool // a status line is shown
}

const clearLine = "\r\033[K"

func (s *statusWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		s.dirty = false
		if _, err := io.WriteString(s.w, clearLine); err != nil {
			return 0, err
		}
	}
	return s.w.Write(p)
}

// status shows line as the progress line ("" clears it).
func (s *statusWriter) status(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	io.WriteString(s.w, clearLine+line)
	s.dirty = line != ""
}

// withLog sets up e's logging for the replay: a statusWriter on stderr
// (shared with the progress line) and the logger in format.
func withLog(e env, format string) env {
	if _, ok := e.stderr.(*statusWriter); !ok {
		e.stderr = &statusWriter{w: e.stderr}
	}
	e.log = newLogger(e.stderr, format)
	return e
}

func logf(e env, format string, args ...any) {
	e.logger().Info(fmt.Sprintf(format, args...))
}

func warnf(e env, format string, args ...any) {
	e.logger().Warn(fmt.Sprintf(format, args...))
}

// debugf prints host changes when TCOPY_TUN_DEBUG is set.
func debugf(e env, format string, args ...any) {
	e.logger().Debug(fmt.Sprintf(format, args...))
}
