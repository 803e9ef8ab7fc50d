// Package replaytest builds captures for tests: consistent TCP
// conversations (Conv: handshake, data with correct sequence and
// acknowledgement numbers, FIN/RST, time gaps) as capture.Packet values and
// as link-layer frames (Ethernet with VLAN tags, Linux SLL and SLL2, raw IP,
// BSD NULL/LOOP), IP fragmentation, pcap writers (micro/nanosecond, either
// byte order, modified pcap, snap length), pcapng writers (sections in either
// byte order, several interfaces, timestamp resolutions), gzip and zstd
// wrapping, and the bundled demo HTTP capture (testdata/demo-http.pcap)
// with its response convention (HTTPResponse).
//
// It is imported by tests of other packages, never by production code. It
// knows capture's types and nothing of sessions, the network stack or the
// replay. Everything is deterministic: the same calls give the same bytes,
// which is what lets TestGenerateTestdata check the committed files.
//
// Nothing here is safe for concurrent use of one value; separate values are
// independent. No goroutines, no global state.
package replaytest
