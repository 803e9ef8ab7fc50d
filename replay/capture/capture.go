package capture

import (
	"net/netip"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// Frame is one captured link-layer frame as read from a Source.
type Frame struct {
	// N is the 1-based frame number in the capture (what Wireshark calls
	// frame.number); errors name it.
	N int
	// Time is the capture timestamp.
	Time time.Time
	// LinkType of this frame. In pcapng it is the link type of the frame's
	// interface, so it may differ between frames of one file.
	LinkType layers.LinkType
	// Data holds the captured bytes (CapLen of them). It is only valid until
	// the next call to ReadFrame.
	Data []byte
	// Len is the original length on the wire; Len > len(Data) means the frame
	// was cut by the snap length.
	Len int
}

// Source yields the frames of one capture in file order.
//
// ReadFrame returns io.EOF after the last frame. Any other error is final and
// names the capture and the frame number where it happened. A capture that
// was cut short in the middle of its last frame yields ErrTruncated (wrapped)
// after all complete frames. Sources are not safe for concurrent use.
// Close releases the underlying file or stream; it is idempotent.
type Source interface {
	ReadFrame() (Frame, error)
	Close() error
}

// Flags are the TCP header flags of a segment.
type Flags uint8

const (
	FIN Flags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
)

// Packet is one decoded TCP segment (IP fragments already reassembled).
type Packet struct {
	N        int       // frame number of the frame that completed this segment
	Time     time.Time // capture time
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    Flags
	Window   uint16
	// Payload is the TCP payload as captured. It is only valid until the next
	// call to the decoder that produced it.
	Payload []byte
	// Missing counts payload bytes that were on the wire but not in the
	// capture (snap length truncation). They follow Payload in sequence space.
	Missing int
}
