package replaytest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// PcapOptions choose the flavour of a pcap file.
type PcapOptions struct {
	LinkType  layers.LinkType
	Nano      bool // nanosecond timestamps (magic a1b23c4d)
	BigEndian bool
	// Modified writes the modified-pcap format (magic a1b2cd34, 24-byte
	// record headers with interface index, protocol and packet type).
	Modified bool
	// Snaplen is written in the header and cuts longer frames (their wire
	// length is kept). 0 means 262144.
	Snaplen int
}

// PcapWriter writes a pcap file.
type PcapWriter struct {
	w     io.Writer
	order binary.ByteOrder
	opt   PcapOptions
}

// NewPcapWriter writes the file header to w.
func NewPcapWriter(w io.Writer, opt PcapOptions) (*PcapWriter, error) {
	if opt.Snaplen == 0 {
		opt.Snaplen = 262144
	}
	if opt.Nano && opt.Modified {
		return nil, errors.New("pcap writer: modified pcap has microsecond timestamps only")
	}
	pw := &PcapWriter{w: w, order: binary.LittleEndian, opt: opt}
	if opt.BigEndian {
		pw.order = binary.BigEndian
	}
	h := make([]byte, 24)
	magic := uint32(0xa1b2c3d4)
	switch {
	case opt.Nano:
		magic = 0xa1b23c4d
	case opt.Modified:
		magic = 0xa1b2cd34
	}
	pw.order.PutUint32(h, magic)
	pw.order.PutUint16(h[4:], 2)
	pw.order.PutUint16(h[6:], 4)
	pw.order.PutUint32(h[16:], uint32(opt.Snaplen))
	pw.order.PutUint32(h[20:], uint32(opt.LinkType))
	_, err := w.Write(h)
	return pw, err
}

// WriteFrame appends one record: f.Data cut to the snap length, wire length
// max(f.Len, len(f.Data)). f.LinkType is not checked against the file's.
func (pw *PcapWriter) WriteFrame(f capture.Frame) error {
	data := f.Data
	if len(data) > pw.opt.Snaplen {
		data = data[:pw.opt.Snaplen]
	}
	wire := max(f.Len, len(f.Data))
	hl := 16
	if pw.opt.Modified {
		hl = 24
	}
	h := make([]byte, hl, hl+len(data))
	pw.order.PutUint32(h, uint32(f.Time.Unix()))
	if pw.opt.Nano {
		pw.order.PutUint32(h[4:], uint32(f.Time.Nanosecond()))
	} else {
		pw.order.PutUint32(h[4:], uint32(f.Time.Nanosecond()/1000))
	}
	pw.order.PutUint32(h[8:], uint32(len(data)))
	pw.order.PutUint32(h[12:], uint32(wire))
	if pw.opt.Modified {
		pw.order.PutUint32(h[16:], 2)      // interface index
		pw.order.PutUint16(h[20:], 0x0800) // protocol (informational)
		h[22] = 0                          // packet type: to us
	}
	_, err := pw.w.Write(append(h, data...))
	return err
}

// WritePcap writes a whole pcap file of frames to w.
func WritePcap(w io.Writer, opt PcapOptions, frames []capture.Frame) error {
	pw, err := NewPcapWriter(w, opt)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if err := pw.WriteFrame(f); err != nil {
			return err
		}
	}
	return nil
}

// Pcap returns a pcap file of frames (for tests: it panics on an invalid
// option combination).
func Pcap(opt PcapOptions, frames []capture.Frame) []byte {
	var b bytes.Buffer
	if err := WritePcap(&b, opt, frames); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// PcapngWriter writes a pcapng file: sections, interfaces and enhanced
// packet blocks.
type PcapngWriter struct {
	w      io.Writer
	order  binary.ByteOrder
	ifaces []ngIface
}

type ngIface struct {
	unitsPerSec uint64
	snaplen     int
}

// NewPcapngWriter writes a section header block to w.
func NewPcapngWriter(w io.Writer, bigEndian bool) (*PcapngWriter, error) {
	nw := &PcapngWriter{w: w}
	return nw, nw.NewSection(bigEndian)
}

func pad4(n int) int { return (n + 3) &^ 3 }

func (nw *PcapngWriter) block(typ uint32, body []byte) error {
	total := 12 + pad4(len(body))
	b := make([]byte, total)
	nw.order.PutUint32(b, typ)
	nw.order.PutUint32(b[4:], uint32(total))
	copy(b[8:], body)
	nw.order.PutUint32(b[total-4:], uint32(total))
	_, err := nw.w.Write(b)
	return err
}

// NewSection starts a new section (in either byte order); interfaces must
// be added again.
func (nw *PcapngWriter) NewSection(bigEndian bool) error {
	nw.order = binary.LittleEndian
	if bigEndian {
		nw.order = binary.BigEndian
	}
	nw.ifaces = nw.ifaces[:0]
	body := make([]byte, 16)
	nw.order.PutUint32(body, 0x1A2B3C4D)
	nw.order.PutUint16(body[4:], 1)
	nw.order.PutUint16(body[6:], 0)
	nw.order.PutUint64(body[8:], 0xFFFFFFFFFFFFFFFF) // section length unknown
	body = nw.option(body, 4, []byte("tcopy-tun replaytest"))
	body = nw.option(body, 0, nil)
	return nw.block(0x0A0D0D0A, body)
}

func (nw *PcapngWriter) option(b []byte, code uint16, v []byte) []byte {
	h := make([]byte, 4)
	nw.order.PutUint16(h, code)
	nw.order.PutUint16(h[2:], uint16(len(v)))
	b = append(b, h...)
	b = append(b, v...)
	return append(b, make([]byte, pad4(len(v))-len(v))...)
}

// AddInterface adds an interface description and returns its index.
// tsresol is the if_tsresol byte: 6 for microseconds (the default when 0),
// 9 for nanoseconds, 0x80|n for 2^-n. snaplen 0 means unlimited.
func (nw *PcapngWriter) AddInterface(lt layers.LinkType, snaplen int, tsresol uint8) (int, error) {
	if tsresol == 0 {
		tsresol = 6
	}
	var units uint64
	if tsresol&0x80 != 0 {
		units = 1 << (tsresol & 0x7f)
	} else {
		units = 1
		for i := uint8(0); i < tsresol; i++ {
			units *= 10
		}
	}
	body := make([]byte, 8)
	nw.order.PutUint16(body, uint16(lt))
	nw.order.PutUint32(body[4:], uint32(snaplen))
	if tsresol != 6 {
		body = nw.option(body, 9, []byte{tsresol})
	}
	body = nw.option(body, 2, []byte(fmt.Sprintf("if%d", len(nw.ifaces))))
	body = nw.option(body, 0, nil)
	if err := nw.block(1, body); err != nil {
		return 0, err
	}
	nw.ifaces = append(nw.ifaces, ngIface{unitsPerSec: units, snaplen: snaplen})
	return len(nw.ifaces) - 1, nil
}

// WriteFrame writes an enhanced packet block for interface iface; the
// frame is cut to the interface's snap length.
func (nw *PcapngWriter) WriteFrame(iface int, f capture.Frame) error {
	if iface < 0 || iface >= len(nw.ifaces) {
		return fmt.Errorf("pcapng writer: no interface %d", iface)
	}
	ifc := nw.ifaces[iface]
	data := f.Data
	if ifc.snaplen > 0 && len(data) > ifc.snaplen {
		data = data[:ifc.snaplen]
	}
	ts := uint64(f.Time.Unix())*ifc.unitsPerSec + uint64(f.Time.Nanosecond())*ifc.unitsPerSec/uint64(time.Second)
	body := make([]byte, 20, 20+pad4(len(data)))
	nw.order.PutUint32(body, uint32(iface))
	nw.order.PutUint32(body[4:], uint32(ts>>32))
	nw.order.PutUint32(body[8:], uint32(ts))
	nw.order.PutUint32(body[12:], uint32(len(data)))
	nw.order.PutUint32(body[16:], uint32(max(f.Len, len(f.Data))))
	body = append(body, data...)
	return nw.block(6, body)
}

// WriteSecrets writes a decryption secrets block of secrets type typ
// (0x544c534b: a TLS key log).
func (nw *PcapngWriter) WriteSecrets(typ uint32, data []byte) error {
	body := make([]byte, 8, 8+pad4(len(data)))
	nw.order.PutUint32(body, typ)
	nw.order.PutUint32(body[4:], uint32(len(data)))
	body = append(body, data...)
	return nw.block(0x0000000A, body)
}

// WriteBlock writes an arbitrary block (name resolution, statistics,
// custom): readers must skip what they do not use.
func (nw *PcapngWriter) WriteBlock(typ uint32, body []byte) error {
	return nw.block(typ, body)
}

// Gzip compresses b with gzip.
func Gzip(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// Zstd compresses b with zstd.
func Zstd(b []byte) []byte {
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}
