// Package nstest is the in-memory twin of tcopy-tun's TUN + kernel loop: two
// netstack.Stacks joined by a wire of gVisor channel endpoints, so the whole
// replay engine is tested without root, a TUN or a kernel.
//
// Pair.Client is what the replayer dials through (it dials from any source
// address to any destination address, as over the TUN). Pair.Server plays
// the kernel and the target: tests Listen on it, on a specific address or on
// 0.0.0.0:port / [::]:port to accept connections to any address, from any
// (spoofed) client address. Accepted conns are *netstack.Conn, so a test
// server can also half-close (CloseWrite) and reset (Abort).
//
// Every packet crossing the wire is a real IP packet that a Hook may sniff,
// drop or delay (ParseTCP decodes TCP segments; ICMPv4Unreachable and
// Pair.Inject forge errors). A full direction queue drops packets like a
// device queue.
//
// Concurrency and shutdown: a Pair runs one relay goroutine per direction
// plus one per delayed packet. Close — registered with t.Cleanup by NewPair
// and safe to call earlier or twice — stops the relays, drops delayed
// packets, closes both stacks and waits, so nothing is left running.
//
// nstest must not know about replay, pcap or sessions; it is test support
// for netstack's contract, usable by any package's tests.
package nstest
