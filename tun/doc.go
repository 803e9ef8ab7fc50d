// Package tun creates and configures the TUN device that joins tcopy-tun's
// userspace TCP stack to the host kernel, and undoes every host change it
// makes.
//
// It owns: the device (non-persistent, IFF_TUN|IFF_NO_PI, with
// Config.VnetHdr IFF_VNET_HDR and TSO/checksum offloads; default name
// tcopy0), its MTU (65535) and txqueuelen (10000), the routes of the client
// ranges into it, the sysctls a target needs, the checks that refuse
// clashing client ranges before anything is changed, and the verification
// that replies really route back into the device. It must not know about
// gVisor, sessions or captures: it hands out an fd (Device.File, Device.Fd)
// and nothing else.
//
// Main types: Config (what to create and allow), Device (the open device;
// Close undoes), PermissionError / ErrPermission (missing CAP_NET_ADMIN, with
// a one-line Hint), ErrConflict (client range clashes, return route does
// not lead into the device).
//
// # Host changes, and why only these
//
// Measured on Linux 6.18 by the privileged tests in this package
// (TestPrivilegedReturnPath, TestPrivilegedForward):
//
//   - route_localnet=1 on the device is needed for a 127.0.0.0/8 target and
//     sufficient: without it packets to 127.0.0.1 arriving on the TUN are
//     dropped as martians and replies from it may not leave through the TUN.
//     The "all" switch is left alone.
//   - rp_filter needs no change, strict (1) or loose (2), on "all" or on the
//     device: the reverse path of a client address is the route into the
//     device, which is exactly what Open installs and verifies.
//   - IPv6 on the device: disable_ipv6=0 when the host disables it by
//     default; addr_gen_mode=1 so the device has no link-local address and
//     sends nothing of its own (router solicitations, MLD) into the netstack.
//   - Target on another host (Config.Forward): IPv4 forwards a packet when
//     the interface it arrived on has conf/<if>/forwarding=1, so the device
//     and the outside interface both need it, and the global ip_forward stays
//     0. IPv6 ignores the per-interface "forwarding"; it needs
//     conf/<if>/force_forwarding=1 (Linux >= 6.17) on both, or the global
//     conf/all/forwarding, which Open refuses to set because it also turns
//     off router advertisements on every interface.
//
// The device's own settings vanish with it. Each change is recorded with
// its undo; Close (and a failing Open) undo in reverse order and restore a
// sysctl only if it still holds the value Open wrote.
//
// # Concurrency and shutdown
//
// Open and Close must run in the same network namespace (they check, rather
// than write another namespace's sysctls). A Device's accessors may be called from any goroutine; Close is
// idempotent and safe to call concurrently with them, but the packet
// readers and writers on the fd must be stopped before Close (shutdown
// order: netstack, then Device.Close). If the process dies without Close,
// the kernel removes the device, its routes and its sysctls; only the
// outside interface's forwarding switch (Config.Forward) stays set.
package tun
