package tlsdecrypt

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// fuzzChunks cuts fuzz input into pieces: each is a direction byte (its low
// bit), a length byte, and that many bytes.
func fuzzChunks(b []byte) (dirs []Dir, chunks [][]byte) {
	for len(b) >= 2 {
		d, n := Dir(b[0]&1), int(b[1])
		b = b[2:]
		n = min(n, len(b))
		dirs, chunks = append(dirs, d), append(chunks, b[:n])
		b = b[n:]
	}
	return dirs, chunks
}

// encodeChunks is fuzzChunks' inverse, for seeds.
func encodeChunks(dirs []Dir, chunks [][]byte) []byte {
	var out []byte
	for i, c := range chunks {
		for len(c) > 0 {
			n := min(len(c), 255)
			out = append(out, byte(dirs[i]), byte(n))
			out = append(out, c[:n]...)
			c = c[n:]
		}
	}
	return out
}

type fuzzRun struct {
	pt  [2][]byte
	res Result
}

// runChunks feeds the chunks, each cut into pieces of at most size bytes,
// and checks the invariants of every run: plaintext offsets are dense,
// record offsets lie inside what was fed and never go back, and Result
// counts what was emitted.
func runChunks(t *testing.T, kl *KeyLog, dirs []Dir, chunks [][]byte, size int) fuzzRun {
	var run fuzzRun
	var off [2]int64
	var lastRec [2]int64
	c := NewConn(kl, func(p Piece) {
		d := p.Dir
		if p.Off != int64(len(run.pt[d])) {
			t.Fatalf("%v piece at plaintext offset %d, want %d", d, p.Off, len(run.pt[d]))
		}
		if len(p.Data) == 0 || p.RecordOff < lastRec[d] || p.RecordEnd > off[d] || p.RecordEnd-p.RecordOff < int64(len(p.Data)) {
			t.Fatalf("%v piece of %d bytes from record [%d,%d); %d bytes fed, last record at %d", d, len(p.Data), p.RecordOff, p.RecordEnd, off[d], lastRec[d])
		}
		lastRec[d] = p.RecordOff
		run.pt[d] = append(run.pt[d], p.Data...)
	})
	t0 := time.Unix(1e9, 0)
	for i, ch := range chunks {
		d := dirs[i]
		for j := 0; j < len(ch); j += size {
			p := ch[j:min(j+size, len(ch))]
			off[d] += int64(len(p))
			c.Feed(d, off[d]-int64(len(p)), t0.Add(time.Duration(i)), p)
		}
	}
	run.res = c.Result()
	for d := range run.pt {
		if run.res.Bytes[d] != int64(len(run.pt[d])) {
			t.Fatalf("%v: Result counts %d bytes, %d emitted", Dir(d), run.res.Bytes[d], len(run.pt[d]))
		}
	}
	if (run.res.Status == StatusUndecided || run.res.Status == StatusDecrypting) != (run.res.Err == nil) {
		t.Fatalf("status %v with error %v", run.res.Status, run.res.Err)
	}
	return run
}

// FuzzRecords feeds arbitrary bytes of both directions to a Conn holding
// the RFC 8448 keys: nothing panics, the invariants of runChunks hold, and
// the outcome does not depend on how the streams are cut into pieces.
func FuzzRecords(f *testing.F) {
	f.Add(encodeChunks([]Dir{0}, [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n")}))
	f.Add(encodeChunks([]Dir{0, 1}, [][]byte{unhex(f, rfc8448ClientHello), []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00")}))
	f.Add(encodeChunks([]Dir{0, 1}, [][]byte{unhex(f, rfc8448ClientHello), unhex(f, rfc8448ServerHello)}))
	f.Add(encodeChunks([]Dir{0, 1, 0}, [][]byte{[]byte("\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03"), []byte("\x15\x03\x03\x00\x02\x02\x28"), []byte("\x17\x03\x03\x00\x01x")}))
	kl := rfc8448KeyLog(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dirs, chunks := fuzzChunks(data)
		sameCut(t, kl, dirs, chunks, 1)
	})
}

// sameCut runs the chunks whole and in pieces of size bytes and compares.
func sameCut(t *testing.T, kl *KeyLog, dirs []Dir, chunks [][]byte, size int) fuzzRun {
	whole := runChunks(t, kl, dirs, chunks, 1<<20)
	cut := runChunks(t, kl, dirs, chunks, size)
	if whole.res.Status != cut.res.Status || !bytes.Equal(whole.pt[0], cut.pt[0]) || !bytes.Equal(whole.pt[1], cut.pt[1]) {
		t.Fatalf("whole pieces: %v (%v), %d+%d bytes; pieces of %d: %v (%v), %d+%d bytes",
			whole.res.Status, whole.res.Err, len(whole.pt[0]), len(whole.pt[1]), size,
			cut.res.Status, cut.res.Err, len(cut.pt[0]), len(cut.pt[1]))
	}
	return whole
}

// FuzzConn damages the whole RFC 8448 trace — each 3 bytes of edits are a
// position and a byte to XOR there; keep cuts the capture short — and
// feeds it in pieces of size bytes: the handshake parsers, the key
// schedule and the decryption see inputs close to real ones. (The edits
// stay small: the fuzzing engine crawls on seeds of kilobytes.) Without
// edits the payloads come out whole.
func FuzzConn(f *testing.F) {
	f.Add([]byte{}, uint16(0xffff), uint8(1))
	f.Add([]byte{0x00, 0x10, 0x01}, uint16(0xffff), uint8(7))   // the ClientHello's random
	f.Add([]byte{0x00, 0xd0, 0x80}, uint16(0xffff), uint8(200)) // the ServerHello
	f.Add([]byte{0x01, 0x40, 0x01}, uint16(0xffff), uint8(3))   // the server's encrypted flight
	f.Add([]byte{}, uint16(1000), uint8(13))                    // cut in the server's flight
	f.Add([]byte{0x05, 0x10, 0xff, 0x00, 0x04, 0x01}, uint16(0xffff), uint8(64))
	dirs := []Dir{0, 1, 1, 0, 0, 1, 1, 0, 1}
	var recs [][]byte
	for _, r := range []string{rfc8448ClientHello, rfc8448ServerHello, rfc8448ServerFlight, rfc8448ClientFinished,
		rfc8448ClientData, rfc8448NewSessionTicket, rfc8448ServerData, rfc8448ClientClose, rfc8448ServerClose} {
		recs = append(recs, unhex(f, r))
	}
	total := 0
	for _, r := range recs {
		total += len(r)
	}
	kl := rfc8448KeyLog(f)
	f.Fuzz(func(t *testing.T, edits []byte, keep uint16, size uint8) {
		// The trace as one buffer, damaged, then cut back into its
		// records (and cut short).
		buf := make([]byte, 0, total)
		for _, r := range recs {
			buf = append(buf, r...)
		}
		for i := 0; i+3 <= len(edits); i += 3 {
			buf[(int(edits[i])<<8|int(edits[i+1]))%total] ^= edits[i+2]
		}
		var ds []Dir
		var chunks [][]byte
		n := 0
		for i, r := range recs {
			if n >= int(keep) {
				break
			}
			l := min(len(r), int(keep)-n)
			ds, chunks = append(ds, dirs[i]), append(chunks, buf[n:n+l])
			n += len(r)
		}
		run := sameCut(t, kl, ds, chunks, max(int(size), 1))
		if len(edits) < 3 && int(keep) >= total {
			for d := range run.pt {
				if !bytes.Equal(run.pt[d], rfc8448Payload()) {
					t.Fatalf("undamaged trace: %v plaintext %x (%v: %v)", Dir(d), run.pt[d], run.res.Status, run.res.Err)
				}
			}
		}
	})
}

// FuzzKeyLog: any input either parses or fails with ErrKeyLog and a line
// number; what parses is found again by its client random.
func FuzzKeyLog(f *testing.F) {
	f.Add("CLIENT_RANDOM " + strings.Repeat("ab", 32) + " " + strings.Repeat("cd", 48) + "\n")
	f.Add("# comment\n\nSERVER_TRAFFIC_SECRET_0 " + rfc8448ClientRandom + " " + rfc8448SATS + "\r\nEXPORTER_SECRET " + rfc8448ClientRandom + " 00\n")
	f.Add("CLIENT_RANDOM zz 00\n")
	f.Fuzz(func(t *testing.T, s string) {
		kl, err := ParseKeyLog(strings.NewReader(s), "fuzz")
		if err != nil {
			if !strings.Contains(err.Error(), `key log "fuzz": line `) {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "CLIENT_RANDOM" {
				cr := unhex(t, f[1])
				if sec, ok := kl.Lookup(cr); !ok || len(sec.Master) != 48 {
					t.Fatalf("line %q parsed but its client random is not found", line)
				}
			}
		}
	})
}
