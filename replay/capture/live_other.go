//go:build !linux

package capture

// openLive is the stand-in for systems without AF_PACKET sockets: the
// options were checked, so a caller learns about bad flags first and about
// the platform second.
func openLive(iface string, _ LiveOptions) (Source, error) {
	return nil, &Error{Op: "open live", Name: iface, Err: ErrLiveUnsupported}
}
