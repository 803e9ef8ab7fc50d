package tlsdecrypt

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// seal13 protects one TLS 1.3 record (RFC 8446 5.2), for hand-made
// vectors: the inverse of aead13.open, built on the same key schedule that
// TestRFC8448KeySchedule checks.
func seal13(t *testing.T, s *suite, secret []byte, seq uint64, typ byte, content []byte) []byte {
	t.Helper()
	key, iv := trafficKeys13(s, secret)
	a, err := newAEAD(s.kind, key)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [12]byte
	copy(nonce[:], iv)
	for i := 0; i < 8; i++ {
		nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	inner := append(append([]byte(nil), content...), typ)
	hdr := []byte{recApplicationData, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+a.Overhead()))
	return a.Seal(hdr, nonce[:], inner, hdr)
}

// TestKeyUpdateVector continues the RFC 8448 trace by hand: after its
// application data, the client sends KeyUpdate (update_requested), the
// server answers with its own, and each side then sends data under its
// next traffic secret ("traffic upd"), and the client updates once more
// before its close_notify. Both directions decrypt across the updates; a
// record still under the old secret does not.
func TestKeyUpdateVector(t *testing.T) {
	s := suites[0x1301]
	cats, sats := unhex(t, rfc8448CATS), unhex(t, rfc8448SATS)
	cats1 := nextSecret13(s, cats)
	sats1 := nextSecret13(s, sats)
	cats2 := nextSecret13(s, cats1)
	keyUpdate := func(req byte) []byte { return []byte{hsKeyUpdate, 0, 0, 1, req} }

	client := [][]byte{
		unhex(t, rfc8448ClientHello), unhex(t, rfc8448ClientFinished), unhex(t, rfc8448ClientData),
		seal13(t, s, cats, 1, recHandshake, keyUpdate(1)),
		seal13(t, s, cats1, 0, recApplicationData, []byte("after one update")),
		seal13(t, s, cats1, 1, recHandshake, keyUpdate(0)),
		seal13(t, s, cats2, 0, recApplicationData, []byte(", and two")),
		seal13(t, s, cats2, 1, recAlert, []byte{1, 0}),
	}
	server := [][]byte{
		unhex(t, rfc8448ServerHello), unhex(t, rfc8448ServerFlight), unhex(t, rfc8448NewSessionTicket), unhex(t, rfc8448ServerData),
		seal13(t, s, sats, 2, recHandshake, keyUpdate(0)),
		seal13(t, s, sats1, 0, recApplicationData, []byte("server after its update")),
	}
	var pt [2][]byte
	c := NewConn(rfc8448KeyLog(t), func(p Piece) { pt[p.Dir] = append(pt[p.Dir], p.Data...) })
	var off [2]int64
	feed := func(d Dir, recs ...[]byte) {
		for _, r := range recs {
			c.Feed(d, off[d], time.Unix(0, 0), r)
			off[d] += int64(len(r))
		}
	}
	feed(ClientToServer, client[0])
	feed(ServerToClient, server[:2]...)
	feed(ClientToServer, client[1:4]...)
	feed(ServerToClient, server[2:]...)
	feed(ClientToServer, client[4:]...)
	r := c.Result()
	if r.Status != StatusDecrypting || r.KeyUpdates != [2]int64{2, 1} || !r.Ended[ClientToServer] {
		t.Fatalf("status %v (%v), key updates %v, ended %v", r.Status, r.Err, r.KeyUpdates, r.Ended)
	}
	if want := append(rfc8448Payload(), "after one update, and two"...); !bytes.Equal(pt[0], want) {
		t.Fatalf("client plaintext %q", pt[0])
	}
	if want := append(rfc8448Payload(), "server after its update"...); !bytes.Equal(pt[1], want) {
		t.Fatalf("server plaintext %q", pt[1])
	}

	// A record under the old secret after a KeyUpdate does not open.
	c = NewConn(rfc8448KeyLog(t), nil)
	off = [2]int64{}
	feed(ClientToServer, client[0])
	feed(ServerToClient, server[:2]...)
	feed(ClientToServer, client[1:4]...)
	feed(ClientToServer, seal13(t, s, cats, 2, recApplicationData, []byte("old key")))
	if r := c.Result(); r.Status != StatusFailed {
		t.Fatalf("a record under the old key: status %v", r.Status)
	}
}
