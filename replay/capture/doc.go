// Package capture reads packet captures and decodes the TCP segments in
// them. It is the first stage of tcopy-tun: capture → segments → sessions.
//
// What it owns:
//   - Sources: Open and NewSource recognise a capture by its magic number
//     (never its name): pcap (micro- and nanosecond timestamps, both byte
//     orders, the modified-pcap magic 0xa1b2cd34), pcapng (several sections,
//     several interfaces with their own link type and timestamp resolution),
//     each optionally compressed with gzip or zstd. "-" is standard input,
//     read as a stream: frames come out as their bytes arrive, nothing is
//     buffered beyond the current record, nothing is reopened. Source is the
//     seam the live AF_PACKET source implements (OpenLive, live_linux.go).
//   - Decoding: Decoder turns a Frame into a TCP Packet. Link types:
//     Ethernet (802.1Q VLAN, QinQ, 802.3 LLC/SNAP, MPLS, PPPoE), Linux
//     cooked SLL and SLL2, raw IP (12, 14, 101, 228, 229), BSD NULL and LOOP
//     (either byte order), PPP, Cisco HDLC, NFLOG and ETHERNET_MPACKET. IPv4
//     and IPv6 with extension headers; fragments of both are reassembled
//     with bounded state (1024 datagrams, 32 MiB of buffers, 256 pieces per
//     datagram, 60 s of capture time; the oldest datagram gives way). The
//     reassembled segment carries the frame number and time of the fragment
//     that completed it.
//     Packet.Missing counts the bytes that IP announced but the capture lacks
//     (snap length). The decode path does not allocate except for fragments.
//   - Reader: Source + Decoder, with Stats.
//
// What it must not know: sessions and reassembly of TCP streams
// (replay/session), the network stack, the TUN device, the replay.
//
// Errors. Every error names the capture and, where there is one, the frame:
//
//	read "x.pcap": frame 1812: tcp header: data offset 4 < 5: malformed packet
//
// and wraps a sentinel for errors.Is: ErrNotCapture (unknown magic; the text
// says what the input looks like), ErrUnsupportedLinkType (a *LinkTypeError
// naming the type), ErrDamaged (invalid structure: bogus record or block
// length, bad header, corrupt compression), ErrTruncated (the capture ends
// inside a record), ErrMalformed (one undecodable packet).
//
// Policy: damage of the file and an unsupported link type are fatal — Next
// returns the error after the segments before it. A malformed packet in an
// intact file is counted and skipped (Stats.Malformed, with the first error
// kept as an example). A capture cut short in its last record is not fatal:
// the Source returns ErrTruncated after all complete frames; the Reader turns
// it into Stats.Warning and returns io.EOF, so everything captured is used.
// Frames cut by the snap length still yield their segments, with Missing
// set, unless the cut falls inside the fixed TCP header.
//
// Timestamps are UTC. pcapng simple packet blocks carry none and get the
// time of the frame before. Frame numbers count packet records only, as
// Wireshark's frame.number does.
//
// Concurrency: Sources, Decoders and Readers are used by one goroutine at a
// time. Data handed out (Frame.Data, Packet.Payload) is valid until the next
// call on the same value. Close is idempotent and closes what the Source
// opened (never os.Stdin). No goroutines are started (the zstd decoder runs
// synchronously).
package capture
