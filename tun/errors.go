package tun

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrPermission is matched (errors.Is) by every error Open returns because
// the process lacks the right to create or configure the device: no
// CAP_NET_ADMIN, or a /dev/net/tun it may not open. The concrete error is a
// *PermissionError, whose Hint gives the remedy.
var ErrPermission = errors.New("permission denied")

// PermissionError is a host change that the kernel refused for lack of
// privilege. Error is one line; Hint is the remedy, for a second line.
type PermissionError struct {
	Op   string // what was tried: `create tun "tcopy0"`, `set sysctl net/ipv4/...`
	Err  error  // the kernel's answer (EPERM, EACCES)
	Path string // set when opening a device node failed, which needs another remedy
}

func (e *PermissionError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("%s: %v (%s is not accessible to this user)", e.Op, e.Err, e.Path)
	}
	return fmt.Sprintf("%s: %v (needs CAP_NET_ADMIN)", e.Op, e.Err)
}

// Hint is the remedy in one line.
func (e *PermissionError) Hint() string {
	if e.Path != "" {
		return fmt.Sprintf("run as root, or make %s readable and writable as most distributions ship it (mode 0666)", e.Path)
	}
	return "run as root, or grant the capability once: sudo setcap cap_net_admin+ep $(which tcopy-tun)"
}

// Is makes errors.Is(err, ErrPermission) true.
func (e *PermissionError) Is(target error) bool { return target == ErrPermission }

// Unwrap exposes the errno, so errors.Is(err, syscall.EPERM) works too.
func (e *PermissionError) Unwrap() error { return e.Err }

// permErr wraps err as a *PermissionError when it is a privilege failure,
// else as "op: err".
func permErr(op string, err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return &PermissionError{Op: op, Err: err}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// ErrConflict is matched (errors.Is) by the errors Open returns because the
// client ranges clash with the host's addresses, routes or the targets, or
// because the return route does not lead into the device. Nothing on the
// host has been changed when a conflict is found before setup; a conflict
// found by the final verification has been undone.
var ErrConflict = errors.New("address conflict")

// conflictError carries a conflict's one-line description and, when the
// kernel refused a route lookup, its error.
type conflictError struct {
	msg string
	err error
}

func (e *conflictError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}
func (e *conflictError) Is(target error) bool { return target == ErrConflict }
func (e *conflictError) Unwrap() error        { return e.err }

func conflictf(format string, args ...any) error {
	return &conflictError{msg: fmt.Sprintf(format, args...)}
}
