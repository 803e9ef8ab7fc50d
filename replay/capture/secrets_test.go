package capture_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
	rt "github.com/tcopy-tun/tcopy-tun/replay/replaytest"
)

const testKeyLog = "# a comment\nCLIENT_RANDOM 0101010101010101010101010101010101010101010101010101010101010101 " +
	"020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202\n"

// secretsPcapng writes two frames with a decryption secrets block before
// each: a TLS key log (of an odd length, so that the block is padded), and
// another kind.
func secretsPcapng(t *testing.T, bigEndian bool) ([]byte, []capture.Packet) {
	t.Helper()
	pkts := rt.NewConv("10.0.0.1:40000", "10.0.0.2:443", rt.DemoStart()).Handshake().Send("x").Packets()[:2]
	frames, err := rt.Frames(rt.LinkEthernet, pkts)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	nw, err := rt.NewPcapngWriter(&b, bigEndian)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := nw.AddInterface(rt.LinkEthernet, 0, 6)
	if err := nw.WriteSecrets(capture.SecretsTLSKeyLog, []byte(testKeyLog)); err != nil {
		t.Fatal(err)
	}
	nw.WriteFrame(id, frames[0])
	nw.WriteSecrets(0x57474b4c, []byte("wireguard")) // another secrets type
	nw.WriteFrame(id, frames[1])
	return b.Bytes(), pkts
}

// TestSecretsBlocks: a pcapng source hands each decryption secrets block
// to the OnSecrets callback, in order, between the frames around it; the
// frames read the same with and without a handler.
func TestSecretsBlocks(t *testing.T) {
	for _, be := range []bool{false, true} {
		data, pkts := secretsPcapng(t, be)
		src, err := capture.NewSource(bytes.NewReader(data), "dsb.pcapng")
		if err != nil {
			t.Fatal(err)
		}
		h, ok := src.(capture.SecretsHandler)
		if !ok {
			t.Fatalf("pcapng source %T does not take decryption secrets", src)
		}
		var got []capture.Secrets
		h.OnSecrets(func(s capture.Secrets) { got = append(got, s) })
		frames := 0
		for {
			f, err := src.ReadFrame()
			if err != nil {
				break
			}
			frames++
			if len(got) != frames {
				t.Fatalf("big-endian %v: frame %d read after %d secrets blocks, want %d", be, f.N, len(got), frames)
			}
		}
		if frames != len(pkts) || len(got) != 2 {
			t.Fatalf("big-endian %v: %d frames and %d secrets blocks, want %d and 2", be, frames, len(got), len(pkts))
		}
		if got[0].Type != capture.SecretsTLSKeyLog || string(got[0].Data) != testKeyLog || got[0].Frame != 0 {
			t.Errorf("big-endian %v: first block %#x %q after frame %d", be, got[0].Type, got[0].Data, got[0].Frame)
		}
		if got[1].Type != 0x57474b4c || string(got[1].Data) != "wireguard" || got[1].Frame != 1 {
			t.Errorf("big-endian %v: second block %#x %q after frame %d", be, got[1].Type, got[1].Data, got[1].Frame)
		}
		// Without a handler the blocks are skipped.
		read, _, err := readAll(t, data, "dsb.pcapng")
		if err != nil || len(read) != len(pkts) {
			t.Fatalf("without a handler: %d packets, %v", len(read), err)
		}
	}
}

// TestSecretsBlockDamaged: a block whose secrets length overruns it is a
// damaged capture, named by byte offset.
func TestSecretsBlockDamaged(t *testing.T) {
	data, _ := secretsPcapng(t, false)
	// The first DSB follows the SHB and the IDB: find it by its type.
	i := bytes.Index(data, []byte{0x0a, 0, 0, 0})
	if i < 0 {
		t.Fatal("no decryption secrets block written")
	}
	bad := append([]byte(nil), data...)
	bad[i+12] = 0xff // secrets length
	src, err := capture.NewSource(bytes.NewReader(bad), "bad.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	src.(capture.SecretsHandler).OnSecrets(func(capture.Secrets) {})
	_, err = src.ReadFrame()
	wantKind(t, err, capture.ErrDamaged, `read "bad.pcapng": frame 1: decryption secrets block at byte `+strconv.Itoa(i)+": secrets of 255")
}

// TestSecretsEditcap: the decryption secrets block that Wireshark's
// editcap --inject-secrets writes is read back with the key log intact.
func TestSecretsEditcap(t *testing.T) {
	editcap, err := exec.LookPath("editcap")
	if err != nil {
		if os.Getenv("TCOPY_TUN_PRIVILEGED_TESTS") == "1" {
			t.Fatalf("editcap: %v (install wireshark-common)", err)
		}
		t.Skipf("editcap: %v (install wireshark-common)", err)
	}
	dir := t.TempDir()
	var b bytes.Buffer
	nw, _ := rt.NewPcapngWriter(&b, false)
	id, _ := nw.AddInterface(rt.LinkEthernet, 0, 6)
	pkts := rt.NewConv("10.0.0.1:40000", "10.0.0.2:443", rt.DemoStart()).Handshake().Packets()
	frames, err := rt.Frames(rt.LinkEthernet, pkts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		nw.WriteFrame(id, f)
	}
	in, keys, out := filepath.Join(dir, "in.pcapng"), filepath.Join(dir, "keys.txt"), filepath.Join(dir, "out.pcapng")
	os.WriteFile(in, b.Bytes(), 0o644)
	os.WriteFile(keys, []byte(testKeyLog), 0o644)
	if o, err := exec.Command(editcap, "--inject-secrets", "tls,"+keys, in, out).CombinedOutput(); err != nil {
		t.Fatalf("editcap --inject-secrets: %v: %s", err, o)
	}
	src, err := capture.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []capture.Secrets
	src.(capture.SecretsHandler).OnSecrets(func(s capture.Secrets) { got = append(got, s) })
	n := 0
	for {
		if _, err := src.ReadFrame(); err != nil {
			break
		}
		n++
	}
	if n != len(pkts) || len(got) != 1 || got[0].Type != capture.SecretsTLSKeyLog || got[0].Frame != 0 {
		t.Fatalf("%d frames (want %d), secrets blocks %+v", n, len(pkts), got)
	}
	if !strings.Contains(string(got[0].Data), "CLIENT_RANDOM 0101") {
		t.Fatalf("secrets block holds %q, want the key log", got[0].Data)
	}
}
