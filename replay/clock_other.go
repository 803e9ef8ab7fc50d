//go:build !linux

package replay

import "errors"

func newTimerfdSource(fire func()) (wakeSource, error) {
	return nil, errors.New("timerfd: not available on this system")
}
