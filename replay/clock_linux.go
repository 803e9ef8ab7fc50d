package replay

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdSource is a non-blocking timerfd wrapped in an *os.File, so that
// reading it parks the goroutine on the runtime's poller instead of a thread.
type timerfdSource struct {
	f    *os.File
	rc   syscall.RawConn // fd access that fails cleanly once f is closed
	done chan struct{}
}

func newTimerfdSource(fire func()) (*timerfdSource, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	s := &timerfdSource{f: f, rc: rc, done: make(chan struct{})}
	go s.loop(fire)
	return s, nil
}

// loop ends when the file is closed.
func (s *timerfdSource) loop(fire func()) {
	defer close(s.done)
	var buf [8]byte // expiration count; its value does not matter
	for {
		if _, err := s.f.Read(buf[:]); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				// Unexpected: wake the clock so it re-arms through arm,
				// which will fail and switch to the runtime timer.
				s.f.Close()
				fire()
			}
			return
		}
		fire()
	}
}

func (s *timerfdSource) arm(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	var serr error
	// Control fails once the file is closed, so a recycled fd number is
	// never touched; the caller then falls back to a runtime timer.
	if err := s.rc.Control(func(fd uintptr) {
		serr = unix.TimerfdSettime(int(fd), 0, &spec, nil)
	}); err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("timerfd_settime: %w", serr)
	}
	return nil
}

func (s *timerfdSource) close() {
	s.f.Close()
	<-s.done
}
