package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcopy-tun/tcopy-tun/replay"
)

// progress redraws one status line on stderr while a replay runs. It only
// runs on a terminal (or with --progress always): logs and pipes get the
// summary alone.
type progress struct {
	done chan struct{}
	wg   sync.WaitGroup
	w    *statusWriter
}

// startProgress draws the line on e.stderr, through its statusWriter (see
// withLog) so that log records clear it before they are written.
func startProgress(e env, f *replayFlags, r *replay.Runner) *progress {
	sw, ok := e.stderr.(*statusWriter)
	if !ok {
		sw = &statusWriter{w: e.stderr}
	}
	p := &progress{done: make(chan struct{}), w: sw}
	show := f.progress == "always"
	if f.progress == "auto" {
		show = isTerminal(sw.w)
	}
	if !show || f.quiet {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				p.w.status("")
				return
			case <-t.C:
				s := r.Summary()
				p.w.status(fmt.Sprintf("%6.1fs  sessions %d started, %d ok, %d failed  sent %s  received %s",
					s.Wall.Seconds(), s.Replayed, s.Succeeded, s.Failed.Total(), byteSize(s.BytesSent), byteSize(s.BytesReceived)))
			}
		}
	}()
	return p
}

// stop ends the line; idempotent only in the sense that it is called once.
func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
