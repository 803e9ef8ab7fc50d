package tlsdecrypt

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("test vector: %v", err)
	}
	return b
}

// TestPRF12 checks the TLS 1.2 PRF against the test vectors posted to the
// IETF TLS working group (mail-archive/web/tls/current/msg03416.html), used
// by BearSSL, Botan and others.
func TestPRF12(t *testing.T) {
	for _, tc := range []struct {
		name         string
		sha384       bool
		secret, seed string
		want         string
	}{
		{"SHA-256", false, "9bbe436ba940f017b17652849a71db35", "a0ba9f936cda311827a6f796ffd5198c",
			`e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a
			 6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab
			 4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701
			 87347b66`},
		{"SHA-384", true, "b80b733d6ceefcdc71566ea48e5567df", "cd665cf6a8447dd6ff8b27555edb7465",
			`7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cd
			 e9ca0faa60be9fe34f82b1233c9146a0e534cb400fed2700884f9dc236f80edd
			 8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d918425
			 9b5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee6
			 91c8f3a26854308d5eaa3be85e0990703d73e56f`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sha256.New
			if tc.sha384 {
				h = sha512.New384
			}
			want := unhex(t, tc.want)
			got := prf12(h, unhex(t, tc.secret), "test label", unhex(t, tc.seed), len(want))
			if !bytes.Equal(got, want) {
				t.Errorf("prf12:\n got %x\nwant %x", got, want)
			}
		})
	}
}

// RFC 8448 section 3, "Simple 1-RTT Handshake": the records as sent, and
// the secrets the trace prints.
const (
	rfc8448ClientRandom = "cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7"
	rfc8448CHTS         = "b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21"
	rfc8448SHTS         = "b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38"
	rfc8448CATS         = "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
	rfc8448SATS         = "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"

	rfc8448ClientHello = `16030100c4010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece70000061301
		13031302010000910000000b0009000006736572766572ff01000100000a00140012001d001700180019010001010102
		0103010400230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529a
		af2c002b0003020304000d0020001e040305030603020308040805080604010501060102010402050206020202002d00
		020101001c00024001`
	rfc8448ServerHello = `160303005a020000560303a6af06a4121860dc5e6e60249cd34c95930c8ac5cb1434dac155772ed3e2692800130100002e00330024
		001d0020c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f002b00020304`
	rfc8448ServerFlight = `17030302a2d1ff334a56f5bff6594a07cc87b580233f500f45e489e7f33af35edf7869fcf40aa40aa2b8ea73f848a7ca
		07612ef9f945cb960b4068905123ea78b111b429ba9191cd05d2a389280f526134aadc7fc78c4b729df828b5ecf7b13b
		d9aefb0e57f271585b8ea9bb355c7c79020716cfb9b1183ef3ab20e37d57a6b9d7477609aee6e122a4cf51427325250c
		7d0e509289444c9b3a648f1d71035d2ed65b0e3cdd0cbae8bf2d0b227812cbb360987255cc744110c453baa4fcd61092
		8d809810e4b7ed1a8fd991f06aa6248204797e36a6a73b70a2559c09ead686945ba246ab66e5edd8044b4c6de3fcf2a8
		9441ac66272fd8fb330ef8190579b3684596c960bd596eea520a56a8d650f563aad27409960dca63d3e688611ea5e22f
		4415cf9538d51a200c27034272968a264ed6540c84838d89f72c24461aad6d26f59ecaba9acbbb317b66d902f4f292a3
		6ac1b639c637ce343117b659622245317b49eeda0c6258f100d7d961ffb138647e92ea330faeea6dfa31c7a84dc3bd7e
		1b7a6c7178af36879018e3f252107f243d243dc7339d5684c8b0378bf30244da8c87c843f5e56eb4c5e8280a2b48052c
		f93b16499a66db7cca71e4599426f7d461e66f99882bd89fc50800becca62d6c74116dbd2972fda1fa80f85df881edbe
		5a37668936b335583b599186dc5c6918a396fa48a181d6b6fa4f9d62d513afbb992f2b992f67f8afe67f76913fa388cb
		5630c8ca01e0c65d11c66a1e2ac4c85977b7c7a6999bbf10dc35ae69f5515614636c0b9b68c19ed2e31c0b3b66763038
		ebba42f3b38edc0399f3a9f23faa63978c317fc9fa66a73f60f0504de93b5b845e275592c12335ee340bbc4fddd50278
		4016e4b3be7ef04dda49f4b440a30cb5d2af939828fd4ae3794e44f94df5a631ede42c1719bfdabf0253fe5175be898e
		750edc53370d2b`
	rfc8448ClientFinished = `170303003575ec4dc238cce60b298044a71e219c56cc77b0517fe9b93c7a4bfc44d87f38f80338ac98fc46deb384bd1c
		aeacab6867d726c40546`
	rfc8448NewSessionTicket = `17030300de3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d41d6af8f6b580dcf3d11d63c758db289a
		015940252f55713e061dc13e078891a38efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e0
		9c30ba1e62972ac46f75f7b981be63439b2999ce13064615139891d5e4c5b406f16e3fc181a77ca475840025db2f0a77
		f81b5ab05b94c01346755f69232c86519d86cbeeac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74
		bc2697687e248746d6df353005f3bce18696129c8153556b3b6c6779b37bf15985684f`
	rfc8448ClientData = `1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a20441e2b
		62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4`
	rfc8448ServerData = `17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a59a8
		fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d`
	rfc8448ClientClose = "1703030013c9872760655666b74d7ff1153efd6db6d0b0e3"
	rfc8448ServerClose = "1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9"
)

// rfc8448Payload is the application data both sides send: bytes 00..31.
func rfc8448Payload() []byte {
	b := make([]byte, 50)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func rfc8448KeyLog(t testing.TB) *KeyLog {
	kl, err := ParseKeyLog(strings.NewReader(
		"# RFC 8448 section 3\n"+
			"CLIENT_HANDSHAKE_TRAFFIC_SECRET "+rfc8448ClientRandom+" "+rfc8448CHTS+"\n"+
			"SERVER_HANDSHAKE_TRAFFIC_SECRET "+rfc8448ClientRandom+" "+rfc8448SHTS+"\n"+
			"CLIENT_TRAFFIC_SECRET_0 "+rfc8448ClientRandom+" "+rfc8448CATS+"\n"+
			"SERVER_TRAFFIC_SECRET_0 "+rfc8448ClientRandom+" "+rfc8448SATS+"\n"), "rfc8448")
	if err != nil {
		t.Fatal(err)
	}
	return kl
}

// TestRFC8448KeySchedule derives the record keys and IVs from the traffic
// secrets and compares them with the values RFC 8448 prints, then opens the
// application data records with them.
func TestRFC8448KeySchedule(t *testing.T) {
	s := suites[0x1301]
	for _, tc := range []struct {
		name, secret, key, iv string
	}{
		{"server handshake", rfc8448SHTS, "3fce516009c21727d0f2e4e86ee403bc", "5d313eb2671276ee13000b30"},
		{"client handshake", rfc8448CHTS, "dbfaa693d1762c5b666af5d950258d01", "5bd3c71b836e0b76bb73265f"},
		{"server application", rfc8448SATS, "9f02283b6c9c07efc26bb9f2ac92e356", "cf782b88dd83549aadf1e984"},
		{"client application", rfc8448CATS, "17422dda596ed5d9acd890e3c63f5051", "5b78923dee08579033e523d9"},
	} {
		key, iv := trafficKeys13(s, unhex(t, tc.secret))
		if !bytes.Equal(key, unhex(t, tc.key)) || !bytes.Equal(iv, unhex(t, tc.iv)) {
			t.Errorf("%s: key %x iv %x, want %s %s", tc.name, key, iv, tc.key, tc.iv)
		}
	}
	for _, tc := range []struct {
		name, secret, record string
		seq                  uint64
	}{
		{"client application data", rfc8448CATS, rfc8448ClientData, 0},
		{"server application data", rfc8448SATS, rfc8448ServerData, 1}, // after the NewSessionTicket
	} {
		c, err := newAEAD13(s, unhex(t, tc.secret))
		if err != nil {
			t.Fatal(err)
		}
		rec := unhex(t, tc.record)
		typ, pt, err := c.open(tc.seq, rec[:5], rec[5:])
		if err != nil || typ != recApplicationData || !bytes.Equal(pt, rfc8448Payload()) {
			t.Errorf("%s: type %d, %x, %v; want application data 00..31", tc.name, typ, pt, err)
		}
		// The same record at another sequence number does not open.
		rec = unhex(t, tc.record)
		if _, _, err := c.open(tc.seq+1, rec[:5], rec[5:]); !errors.Is(err, errDecrypt) {
			t.Errorf("%s at the wrong sequence number: %v, want errDecrypt", tc.name, err)
		}
	}
}

// TestRFC8448Conn feeds the whole RFC 8448 trace to a Conn, each record cut
// into pieces of every size from 1 to 40 bytes: the handshake is followed
// to the application keys, both 50-byte payloads come out, and the
// close_notify alerts end both directions.
func TestRFC8448Conn(t *testing.T) {
	client := [][]byte{unhex(t, rfc8448ClientHello), unhex(t, rfc8448ClientFinished), unhex(t, rfc8448ClientData), unhex(t, rfc8448ClientClose)}
	server := [][]byte{unhex(t, rfc8448ServerHello), unhex(t, rfc8448ServerFlight), unhex(t, rfc8448NewSessionTicket), unhex(t, rfc8448ServerData), unhex(t, rfc8448ServerClose)}
	// Capture order: ClientHello, the server's flight, the client's
	// Finished and data, the server's ticket and answer, both alerts.
	type step struct {
		d   Dir
		rec []byte
	}
	steps := []step{{0, client[0]}, {1, server[0]}, {1, server[1]}, {0, client[1]}, {0, client[2]}, {1, server[2]}, {1, server[3]}, {0, client[3]}, {1, server[4]}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for size := 1; size <= 40; size++ {
		var got [2][]Piece
		c := NewConn(rfc8448KeyLog(t), func(p Piece) { got[p.Dir] = append(got[p.Dir], p) })
		var off [2]int64
		var dataOff [2]int64
		for i, s := range steps {
			if (s.d == 0 && i == 4) || (s.d == 1 && i == 6) {
				dataOff[s.d] = off[s.d]
			}
			for j := 0; j < len(s.rec); j += size {
				piece := s.rec[j:min(j+size, len(s.rec))]
				c.Feed(s.d, off[s.d], t0.Add(time.Duration(i)*time.Millisecond), piece)
				off[s.d] += int64(len(piece))
			}
		}
		r := c.Result()
		if r.Status != StatusDecrypting || r.Err != nil {
			t.Fatalf("pieces of %d: status %v: %v", size, r.Status, r.Err)
		}
		if r.Version != 0x0304 || r.Suite != 0x1301 || r.SNI != "server" || !r.Ended[0] || !r.Ended[1] || r.Alert[0] != [2]byte{1, 0} {
			t.Fatalf("pieces of %d: result %+v", size, r)
		}
		for d := range got {
			if len(got[d]) != 1 {
				t.Fatalf("pieces of %d: %v: %d pieces, want 1", size, Dir(d), len(got[d]))
			}
			p := got[d][0]
			want := Piece{Dir: Dir(d), Off: 0, Time: t0.Add(time.Duration(4+2*d) * time.Millisecond), RecordOff: dataOff[d], RecordEnd: dataOff[d] + 72, Data: rfc8448Payload()}
			if p.Off != want.Off || !p.Time.Equal(want.Time) || p.RecordOff != want.RecordOff || p.RecordEnd != want.RecordEnd || !bytes.Equal(p.Data, want.Data) {
				t.Fatalf("pieces of %d: %v piece %+v, want %+v", size, Dir(d), p, want)
			}
		}
	}
}

// TestServerBeforeClientHello: a caller whose client bytes lag (the session
// Builder hands a client chunk on only when the next one starts) may feed
// the server's answer before the ClientHello: it is held, and the trace
// decrypts as when fed in capture order. A server that says more than
// 64 KiB first is not TLS.
func TestServerBeforeClientHello(t *testing.T) {
	var pt [2][]byte
	c := NewConn(rfc8448KeyLog(t), func(p Piece) { pt[p.Dir] = append(pt[p.Dir], p.Data...) })
	var off [2]int64
	feed := func(d Dir, recs ...string) {
		for _, r := range recs {
			b := unhex(t, r)
			// In two pieces, the second repeating a byte of the first
			// (a retransmission).
			c.Feed(d, off[d], time.Unix(0, 0), b[:len(b)/2+1])
			c.Feed(d, off[d]+int64(len(b)/2), time.Unix(0, 0), b[len(b)/2:])
			off[d] += int64(len(b))
		}
	}
	feed(ServerToClient, rfc8448ServerHello, rfc8448ServerFlight)
	c.Feed(ClientToServer, 0, time.Unix(0, 0), unhex(t, rfc8448ClientHello)[:100]) // not yet a whole ClientHello
	if r := c.Result(); r.Status != StatusUndecided {
		t.Fatalf("before the ClientHello: %v (%v)", r.Status, r.Err)
	}
	off[ClientToServer] = 0
	feed(ClientToServer, rfc8448ClientHello, rfc8448ClientFinished, rfc8448ClientData)
	feed(ServerToClient, rfc8448NewSessionTicket, rfc8448ServerData)
	if r := c.Result(); r.Status != StatusDecrypting || !bytes.Equal(pt[0], rfc8448Payload()) || !bytes.Equal(pt[1], rfc8448Payload()) {
		t.Fatalf("status %v (%v), plaintext %x / %x", r.Status, r.Err, pt[0], pt[1])
	}

	c = NewConn(rfc8448KeyLog(t), nil)
	c.Feed(ServerToClient, 0, time.Unix(0, 0), make([]byte, 1<<16+1))
	if r := c.Result(); r.Status != StatusNotTLS {
		t.Fatalf("a server speaking first: %v", r.Status)
	}
}
