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

// FuzzConn feeds arbitrary bytes of both directions to a Conn holding the
// RFC 8448 keys (so that the seeds reach the decrypted handshake and the
// application data): nothing panics, the invariants of runChunks hold, and
// the outcome does not depend on how the streams are cut into pieces.
func FuzzConn(f *testing.F) {
	rfc := func(s string) []byte { return unhex(f, s) }
	dirs := []Dir{0, 1, 1, 0, 0, 1, 1, 0, 1}
	recs := [][]byte{rfc(rfc8448ClientHello), rfc(rfc8448ServerHello), rfc(rfc8448ServerFlight), rfc(rfc8448ClientFinished),
		rfc(rfc8448ClientData), rfc(rfc8448NewSessionTicket), rfc(rfc8448ServerData), rfc(rfc8448ClientClose), rfc(rfc8448ServerClose)}
	f.Add(encodeChunks(dirs, recs))
	f.Add(encodeChunks(dirs[:5], recs[:5]))
	f.Add(encodeChunks([]Dir{0}, [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n")}))
	f.Add(encodeChunks([]Dir{0, 1}, [][]byte{rfc(rfc8448ClientHello), []byte("\x16\x03\x03\x00\x04\x02\x00\x00\x00")}))
	kl := rfc8448KeyLog(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dirs, chunks := fuzzChunks(data)
		whole := runChunks(t, kl, dirs, chunks, 1<<20)
		bytewise := runChunks(t, kl, dirs, chunks, 1)
		if whole.res.Status != bytewise.res.Status || !bytes.Equal(whole.pt[0], bytewise.pt[0]) || !bytes.Equal(whole.pt[1], bytewise.pt[1]) {
			t.Fatalf("whole pieces: %v (%v), %d+%d bytes; one byte at a time: %v (%v), %d+%d bytes",
				whole.res.Status, whole.res.Err, len(whole.pt[0]), len(whole.pt[1]),
				bytewise.res.Status, bytewise.res.Err, len(bytewise.pt[0]), len(bytewise.pt[1]))
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
