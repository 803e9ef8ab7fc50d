package tlsdecrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record content types.
const (
	recChangeCipherSpec = 20
	recAlert            = 21
	recHandshake        = 22
	recApplicationData  = 23
	recHeartbeat        = 24
)

// alertCloseNotify is the close_notify alert's description (RFC 8446 6.1).
const alertCloseNotify = 0

// maxCiphertext is the largest record fragment TLS allows (2^14 + 2048,
// RFC 5246 6.2.3; TLS 1.3 allows 2^14 + 256).
const maxCiphertext = 1<<14 + 2048

// errDecrypt is a record that did not authenticate: a wrong key, a damaged
// record, or a record that is not where the decryptor expected it.
var errDecrypt = errors.New("record does not decrypt (wrong key or damaged record)")

// prf12 is the TLS 1.2 PRF (RFC 5246 section 5): P_hash(secret, label+seed)
// cut to n bytes.
func prf12(h func() hash.Hash, secret []byte, label string, seed []byte, n int) []byte {
	ls := make([]byte, 0, len(label)+len(seed))
	ls = append(append(ls, label...), seed...)
	out := make([]byte, 0, n+64)
	mac := hmac.New(h, secret)
	mac.Write(ls)
	a := mac.Sum(nil) // A(1)
	for len(out) < n {
		mac.Reset()
		mac.Write(a)
		mac.Write(ls)
		out = mac.Sum(out)
		mac.Reset()
		mac.Write(a)
		a = mac.Sum(a[:0])
	}
	return out[:n]
}

// expandLabel is TLS 1.3's HKDF-Expand-Label (RFC 8446 section 7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, n int) []byte {
	info := make([]byte, 0, 4+6+len(label)+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		// Only a length beyond 255 hash blocks fails; every length here
		// is a key, an IV or a hash.
		panic("tlsdecrypt: hkdf expand: " + err.Error())
	}
	return out
}

// trafficKeys13 derives a TLS 1.3 record key and IV from a traffic secret.
func trafficKeys13(s *suite, secret []byte) (key, iv []byte) {
	return expandLabel(s.hash, secret, "key", nil, s.keyLen), expandLabel(s.hash, secret, "iv", nil, 12)
}

// nextSecret13 is a KeyUpdate: application_traffic_secret_N+1.
func nextSecret13(s *suite, secret []byte) []byte {
	return expandLabel(s.hash, secret, "traffic upd", nil, s.hash().Size())
}

type aeadKind uint8

const (
	aeadAESGCM aeadKind = iota + 1
	aeadChaCha
	cbcSHA1
	cbcSHA256
	cbcSHA384
)

// suite describes a cipher suite: enough to derive keys and open records.
type suite struct {
	id     uint16
	name   string
	tls13  bool
	kind   aeadKind
	keyLen int
	hash   func() hash.Hash // PRF (1.2) or HKDF (1.3) hash
}

func (s *suite) macHash() (func() hash.Hash, int) {
	switch s.kind {
	case cbcSHA1:
		return sha1.New, sha1.Size
	case cbcSHA256:
		return sha256.New, sha256.Size
	case cbcSHA384:
		return sha512.New384, sha512.Size384
	}
	return nil, 0
}

var suites = map[uint16]*suite{}

func init() {
	for _, s := range []suite{
		{0x1301, "TLS_AES_128_GCM_SHA256", true, aeadAESGCM, 16, sha256.New},
		{0x1302, "TLS_AES_256_GCM_SHA384", true, aeadAESGCM, 32, sha512.New384},
		{0x1303, "TLS_CHACHA20_POLY1305_SHA256", true, aeadChaCha, 32, sha256.New},

		{0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", false, aeadAESGCM, 16, sha256.New},
		{0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", false, aeadAESGCM, 32, sha512.New384},
		{0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", false, aeadAESGCM, 16, sha256.New},
		{0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", false, aeadAESGCM, 32, sha512.New384},
		{0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256", false, aeadAESGCM, 16, sha256.New},
		{0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384", false, aeadAESGCM, 32, sha512.New384},
		{0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", false, aeadAESGCM, 16, sha256.New},
		{0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", false, aeadAESGCM, 32, sha512.New384},
		{0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", false, aeadChaCha, 32, sha256.New},
		{0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", false, aeadChaCha, 32, sha256.New},
		{0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", false, aeadChaCha, 32, sha256.New},

		{0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", false, cbcSHA1, 16, sha256.New},
		{0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", false, cbcSHA1, 32, sha256.New},
		{0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", false, cbcSHA1, 16, sha256.New},
		{0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", false, cbcSHA1, 32, sha256.New},
		{0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA", false, cbcSHA1, 16, sha256.New},
		{0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", false, cbcSHA1, 32, sha256.New},
		{0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", false, cbcSHA256, 16, sha256.New},
		{0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", false, cbcSHA256, 16, sha256.New},
		{0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", false, cbcSHA384, 32, sha512.New384},
		{0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", false, cbcSHA384, 32, sha512.New384},
		{0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256", false, cbcSHA256, 16, sha256.New},
		{0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256", false, cbcSHA256, 32, sha256.New},
	} {
		s := s
		suites[s.id] = &s
	}
}

// SuiteName is the IANA name of a cipher suite this package decrypts, or
// its number in hex.
func SuiteName(id uint16) string {
	if s := suites[id]; s != nil {
		return s.name
	}
	return fmt.Sprintf("0x%04x", id)
}

// recordCipher opens the records of one direction under one key.
type recordCipher interface {
	// open returns the plaintext and its content type of the record
	// with header hdr (5 bytes) and fragment frag, sequence number seq.
	// It may overwrite frag.
	open(seq uint64, hdr, frag []byte) (typ byte, pt []byte, err error)
}

func newAEAD(kind aeadKind, key []byte) (cipher.AEAD, error) {
	switch kind {
	case aeadAESGCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case aeadChaCha:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("not an AEAD")
}

// aead13 is TLS 1.3 record protection (RFC 8446 section 5.2-5.3).
type aead13 struct {
	aead  cipher.AEAD
	iv    [12]byte
	nonce [12]byte
}

func newAEAD13(s *suite, secret []byte) (*aead13, error) {
	key, iv := trafficKeys13(s, secret)
	a, err := newAEAD(s.kind, key)
	if err != nil {
		return nil, err
	}
	c := &aead13{aead: a}
	copy(c.iv[:], iv)
	return c, nil
}

func (c *aead13) open(seq uint64, hdr, frag []byte) (byte, []byte, error) {
	c.nonce = c.iv
	for i := 0; i < 8; i++ {
		c.nonce[4+i] ^= byte(seq >> (56 - 8*i))
	}
	pt, err := c.aead.Open(frag[:0], c.nonce[:], frag, hdr)
	if err != nil {
		return 0, nil, errDecrypt
	}
	// TLSInnerPlaintext: content, the real type, zero padding.
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, fmt.Errorf("decrypted record has no content type (all padding)")
	}
	return pt[i], pt[:i], nil
}

// aead12 is TLS 1.2 AEAD record protection: AES-GCM with an explicit
// 8-byte nonce (RFC 5288), ChaCha20-Poly1305 with a nonce made from the
// sequence number (RFC 7905).
type aead12 struct {
	aead   cipher.AEAD
	chacha bool
	iv     [12]byte // GCM: the 4-byte implicit part; ChaCha: 12 bytes
	nonce  [12]byte
	aad    [13]byte
}

func newAEAD12(s *suite, key, iv []byte) (*aead12, error) {
	a, err := newAEAD(s.kind, key)
	if err != nil {
		return nil, err
	}
	c := &aead12{aead: a, chacha: s.kind == aeadChaCha}
	copy(c.iv[:], iv)
	return c, nil
}

func (c *aead12) open(seq uint64, hdr, frag []byte) (byte, []byte, error) {
	if c.chacha {
		c.nonce = c.iv
		for i := 0; i < 8; i++ {
			c.nonce[4+i] ^= byte(seq >> (56 - 8*i))
		}
	} else {
		if len(frag) < 8 {
			return 0, nil, fmt.Errorf("record of %d bytes too short for its explicit nonce", len(frag))
		}
		copy(c.nonce[:4], c.iv[:4])
		copy(c.nonce[4:], frag[:8])
		frag = frag[8:]
	}
	n := len(frag) - c.aead.Overhead()
	if n < 0 {
		return 0, nil, fmt.Errorf("record of %d bytes too short for its tag", len(frag))
	}
	binary.BigEndian.PutUint64(c.aad[:], seq)
	copy(c.aad[8:11], hdr[:3])
	binary.BigEndian.PutUint16(c.aad[11:], uint16(n))
	pt, err := c.aead.Open(frag[:0], c.nonce[:], frag, c.aad[:])
	if err != nil {
		return 0, nil, errDecrypt
	}
	return hdr[0], pt, nil
}

// cbc12 is TLS 1.2 CBC record protection: an explicit IV per record and
// HMAC over the plaintext (MAC-then-encrypt, RFC 5246 6.2.3.2), or over the
// ciphertext when both hellos carried encrypt_then_mac (RFC 7366). The MAC
// is checked, so that a wrong key is told from a right one; the check is
// not constant-time (nothing secret is being protected here).
type cbc12 struct {
	block   cipher.Block
	mac     hash.Hash
	macLen  int
	etm     bool
	scratch []byte
}

func newCBC12(s *suite, key, macKey []byte, etm bool) (*cbc12, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	h, n := s.macHash()
	return &cbc12{block: b, mac: hmac.New(h, macKey), macLen: n, etm: etm}, nil
}

func (c *cbc12) sum(seq uint64, hdr []byte, content []byte) []byte {
	var pre [13]byte
	binary.BigEndian.PutUint64(pre[:], seq)
	copy(pre[8:11], hdr[:3])
	binary.BigEndian.PutUint16(pre[11:], uint16(len(content)))
	c.mac.Reset()
	c.mac.Write(pre[:])
	c.mac.Write(content)
	c.scratch = c.mac.Sum(c.scratch[:0])
	return c.scratch
}

func (c *cbc12) open(seq uint64, hdr, frag []byte) (byte, []byte, error) {
	bs := c.block.BlockSize()
	if c.etm {
		if len(frag) < c.macLen+2*bs {
			return 0, nil, fmt.Errorf("record of %d bytes too short for CBC", len(frag))
		}
		ct, tag := frag[:len(frag)-c.macLen], frag[len(frag)-c.macLen:]
		if subtle.ConstantTimeCompare(c.sum(seq, hdr, ct), tag) != 1 {
			return 0, nil, errDecrypt
		}
		frag = ct
	}
	if len(frag) < 2*bs || len(frag)%bs != 0 {
		return 0, nil, fmt.Errorf("CBC record of %d bytes is not whole blocks", len(frag))
	}
	iv, ct := frag[:bs], frag[bs:]
	cipher.NewCBCDecrypter(c.block, iv).CryptBlocks(ct, ct)
	pad := int(ct[len(ct)-1])
	if pad+1 > len(ct) {
		return 0, nil, errDecrypt
	}
	for _, b := range ct[len(ct)-1-pad:] {
		if int(b) != pad {
			return 0, nil, errDecrypt
		}
	}
	pt := ct[:len(ct)-1-pad]
	if c.etm {
		return hdr[0], pt, nil
	}
	if len(pt) < c.macLen {
		return 0, nil, errDecrypt
	}
	content, tag := pt[:len(pt)-c.macLen], pt[len(pt)-c.macLen:]
	if subtle.ConstantTimeCompare(c.sum(seq, hdr, content), tag) != 1 {
		return 0, nil, errDecrypt
	}
	return hdr[0], content, nil
}

// keys12 derives both directions' record ciphers of a TLS 1.2 session from
// its master secret (RFC 5246 section 6.3).
func keys12(s *suite, master, clientRandom, serverRandom []byte, etm bool) (client, server recordCipher, err error) {
	var macLen, ivLen int
	switch s.kind {
	case aeadAESGCM:
		ivLen = 4
	case aeadChaCha:
		ivLen = 12
	default:
		_, macLen = s.macHash()
	}
	seed := append(append([]byte{}, serverRandom...), clientRandom...)
	kb := prf12(s.hash, master, "key expansion", seed, 2*macLen+2*s.keyLen+2*ivLen)
	take := func(n int) []byte { b := kb[:n]; kb = kb[n:]; return b }
	cMac, sMac := take(macLen), take(macLen)
	cKey, sKey := take(s.keyLen), take(s.keyLen)
	cIV, sIV := take(ivLen), take(ivLen)
	if macLen > 0 {
		c, err := newCBC12(s, cKey, cMac, etm)
		if err != nil {
			return nil, nil, err
		}
		sv, err := newCBC12(s, sKey, sMac, etm)
		if err != nil {
			return nil, nil, err
		}
		return c, sv, nil
	}
	c, err := newAEAD12(s, cKey, cIV)
	if err != nil {
		return nil, nil, err
	}
	sv, err := newAEAD12(s, sKey, sIV)
	if err != nil {
		return nil, nil, err
	}
	return c, sv, nil
}
