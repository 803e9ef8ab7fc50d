package capture_test

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/capture"
)

// realDir holds public third-party captures (../shared/pcaps/real, outside
// the module); SOURCES.md there describes each file as tshark sees it.
const realDir = "../../../shared/pcaps/real"

// realOutcome is what reading one real capture must give.
type realOutcome struct {
	tcp int // TCP segments returned
	// err: the fatal error expected (nil: the capture reads to io.EOF);
	// msg is a fragment its text must contain.
	err error
	msg string
	// warn: the capture is cut short, reported as Stats.Warning.
	warn bool
	// nonTCP, frag: frames skipped because they carry no TCP, and IP
	// fragments seen (checked exactly: they say the decoder understood
	// what was there).
	nonTCP int
	frag   int
	// truncated: frames whose TCP payload was cut by the snap length.
	truncated int
	why       string // why the numbers are what they are, where not obvious
}

// realOutcomes lists every file of realDir. A new file without an entry
// fails the test, so the table stays complete.
func realOutcomes() map[string]realOutcome {
	return map[string]realOutcome{
		"deepflow/l4-source-port-reuse.pcap":                                  {tcp: 4},
		"deepflow/memcached/memcached-userdata.pcap":                          {tcp: 20421, why: "every record's wire length is 16 more than captured, but the IP lengths match the capture: nothing is missing; the version field is byte-swapped (512.1024), which libpcap and Wireshark accept"},
		"deepflow/memcached/memcached.pcap":                                   {tcp: 16},
		"deepflow/mysql/171-mysql.pcap":                                       {tcp: 1040},
		"deepflow/nats/nats-nrpc1.pcap":                                       {tcp: 22, why: "modified-pcap magic a1b2cd34, 24-byte record headers"},
		"deepflow/redis/redis.pcap":                                           {tcp: 50},
		"gopacket/be/test202.pcapng":                                          {tcp: 0, nonTCP: 8, why: "no TCP at all: big-endian pcapng with 3 sections, NULL and Ethernet interfaces, a format test"},
		"libpcap/pcap-invalid-version-1.pcap":                                 {err: capture.ErrDamaged, msg: "unsupported pcap version 1.4"},
		"libpcap/shb-option-too-long.pcapng":                                  {err: capture.ErrDamaged, msg: "block at byte 0 (type 0xa0d0d0a): length 52 at the start but 808464432 at the end"},
		"pcapplusplus/4KHttpRequests.pcap":                                    {tcp: 385},
		"pcapplusplus/four_ipv6_http_streams.pcap":                            {tcp: 81, why: "link type 12 (BSD DLT_RAW), IPv6"},
		"pcapplusplus/frag_http_req.pcap":                                     {tcp: 1, frag: 11, why: "one HTTP request in 11 IPv4 fragments"},
		"pcapplusplus/many-protocols.pcap":                                    {tcp: 4321, nonTCP: 388, why: "CDP, ICMP, UDP noise"},
		"pcapplusplus/many_interfaces-1.pcapng":                               {tcp: 32, nonTCP: 32, why: "QUIC/UDP besides TLS"},
		"pcapplusplus/nanosecs_big_endian.pcap":                               {tcp: 10},
		"pcapplusplus/one_tcp_stream_max_seq.pcap":                            {tcp: 36},
		"pcapplusplus/pcapng-example.pcapng":                                  {tcp: 159, truncated: 39, why: "tshark: 39 frames with caplen < len"},
		"pcapplusplus/pcapng-example.pcapng.zst":                              {tcp: 159, truncated: 39},
		"pcapplusplus/sll2.pcap":                                              {tcp: 3},
		"pcapplusplus/unidirectional_tcp_stream_with_missing_packet.pcap":     {tcp: 14},
		"suricata-verify/decode-sll2-01/input.pcap":                           {tcp: 5},
		"suricata-verify/defrag-ipv4-tcp-syn/frag-ip-tcp-syn.pcap":            {tcp: 1, frag: 3, why: "a SYN in 3 IPv4 fragments, link type 228"},
		"suricata-verify/defrag-ipv6-tcp/frag-ip-tcp.pcap":                    {tcp: 1, frag: 3, why: "one segment in 3 IPv6 fragments, link type 229"},
		"suricata-verify/http-pipeline-files-with-gap/input.pcap":             {tcp: 169},
		"suricata-verify/http-range-multiflows/input.pcap":                    {tcp: 614},
		"suricata-verify/pgsql-5000-query-results/input.pcap":                 {tcp: 785, warn: true, msg: "frame 786: file ends 1 bytes into the 16-byte record header at byte 3276005", why: "cut short: one stray byte after the last complete record"},
		"suricata-verify/pgsql-cancel-request/input.pcap":                     {tcp: 29},
		"suricata-verify/pgsql-copy-data-in/TLPW-Jason-copyfrom-small.pcap":   {tcp: 26},
		"suricata-verify/pgsql-ssl-rejected-md5-auth-simple-query/input.pcap": {tcp: 41},
		"suricata-verify/smtp-pipelining/input.pcap":                          {tcp: 18},
		"suricata-verify/smtp-to-comma/10.7.29.101_49898-178.63.41.150_25.pcap": {tcp: 18, err: capture.ErrDamaged,
			msg: "frame 19: record at byte 3695: captured length 3925868813 exceeds the maximum 262144 (snap length 262144): bogus record length"},
		"tcpdump/pptp.pcap":                                          {tcp: 22, nonTCP: 1, why: "one GRE frame"},
		"tcpdump/resp_1_benchmark.pcap":                              {tcp: 150},
		"tcpdump/tcp-handshake-nano.pcap":                            {tcp: 3},
		"tcpreplay/test.pcap":                                        {tcp: 116, nonTCP: 63, why: "UDP, ICMP, ARP and other noise"},
		"zeek/empty.pcap":                                            {tcp: 0, why: "a valid header and no frames"},
		"zeek/ftp/bruteforce.pcap":                                   {tcp: 606},
		"zeek/ftp/ipv4.pcap":                                         {tcp: 95},
		"zeek/ftp/ipv6.pcap":                                         {tcp: 136},
		"zeek/http-qinq-0.pcap":                                      {tcp: 14},
		"zeek/http-vlan-0.pcap":                                      {tcp: 14},
		"zeek/http/100-continue.pcap":                                {tcp: 66},
		"zeek/http/1000-requests-one-dropped-response.pcap.gz":       {tcp: 4102},
		"zeek/http/206_example_b.pcap":                               {tcp: 1556},
		"zeek/http/bro.org.pcap":                                     {tcp: 751},
		"zeek/http/cooper-grill-dvwa.pcapng":                         {tcp: 48, nonTCP: 16},
		"zeek/http/get-without-fins.pcap":                            {tcp: 11},
		"zeek/http/get.pcap":                                         {tcp: 14},
		"zeek/http/get_nosyn.pcap":                                   {tcp: 11},
		"zeek/http/http-post-large.pcap":                             {tcp: 38},
		"zeek/http/methods.pcap":                                     {tcp: 655},
		"zeek/http/pipelined-requests.pcap":                          {tcp: 49},
		"zeek/ipv4/fragmented-4.pcap":                                {tcp: 3, frag: 4, why: "frames 2-5 are the fragments of one segment"},
		"zeek/ipv6-http-atomic-frag.pcap":                            {tcp: 36, nonTCP: 2, why: "atomic fragments are whole datagrams (RFC 6946), not counted as fragments"},
		"zeek/ldap/gap-data-missing.pcapng":                          {tcp: 18, why: "126 interfaces; all frames are on Ethernet ones"},
		"zeek/mysql/auth.pcap":                                       {tcp: 174},
		"zeek/mysql/caching_sha2_password.pcap":                      {tcp: 59},
		"zeek/mysql/encrypted.pcap":                                  {tcp: 18},
		"zeek/mysql/mysql.pcap":                                      {tcp: 57},
		"zeek/nflog-http.pcap":                                       {tcp: 13},
		"zeek/postgresql/greenhouse-app.pcap":                        {tcp: 230},
		"zeek/postgresql/psql-create-insert-select-delete-drop.pcap": {tcp: 29},
		"zeek/redis/large-requests-responses.pcap":                   {tcp: 58},
		"zeek/redis/pipelining-example.pcap":                         {tcp: 12},
		"zeek/redis/pubsub.pcap":                                     {tcp: 60},
		"zeek/redis/start-with-server.pcapng":                        {tcp: 6},
		"zeek/rotation.pcap":                                         {tcp: 20},
		"zeek/smtp.pcap":                                             {tcp: 118, nonTCP: 7},
		"zeek/snap-tcp.pcap":                                         {tcp: 8, why: "802.3 + LLC/SNAP"},
		"zeek/tcp/handshake-reorder.pcap":                            {tcp: 14},
		"zeek/tcp/missing-syn.pcap":                                  {tcp: 21},
		"zeek/tcp/no-handshake.pcap":                                 {tcp: 1},
		"zeek/tcp/reassembly.pcap":                                   {tcp: 117, truncated: 5, why: "snap length 2000 cuts 5 large segments"},
		"zeek/tcp/ssh-dups.pcap":                                     {tcp: 377},
		"zeek/tcp/tcp-fast-open.pcap":                                {tcp: 16},
		"zeek/tcp/timestamp.pcap":                                    {tcp: 878, truncated: 691, why: "tshark: 691 frames with caplen < len"},
		"zeek/tcp/truncated-header.pcap":                             {tcp: 24, truncated: 11, why: "snap length 68 cuts all 24 frames, but the fixed TCP headers are whole; 11 lose payload, the others only TCP options"},
		"zeek/tls/google-cert-repeat.pcap":                           {tcp: 116},
		"zeek/tls/smtp-starttls.pcap":                                {tcp: 37},
		"zeek/tls/tls-conn-with-extensions.pcap":                     {tcp: 58},
		"zeek/wikipedia.pcap":                                        {tcp: 78, nonTCP: 58, why: "DNS/UDP noise"},
	}
}

// sourcesRow is what SOURCES.md (tshark's view) says about a file.
type sourcesRow struct {
	pkts      int
	linkTypes []int
}

var (
	rowRE  = regexp.MustCompile("^\\| `([^`]+)` \\|")
	linkRE = regexp.MustCompile(`\b(\d+) [A-Z][A-Z0-9_]+`)
)

// readSources parses the file table of SOURCES.md: packet counts and link
// types as tshark/capinfos reported them, an oracle independent of this
// package.
func readSources(t *testing.T) map[string]sourcesRow {
	f, err := os.Open(filepath.Join(realDir, "SOURCES.md"))
	if err != nil {
		t.Fatalf("SOURCES.md: %v", err)
	}
	defer f.Close()
	rows := map[string]sourcesRow{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := rowRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		cols := strings.Split(sc.Text(), "|")
		if len(cols) < 8 {
			continue
		}
		// Columns: file, origin path, size, format, link type, pkts, ...
		pk := strings.Fields(strings.TrimSpace(cols[6]))
		if len(pk) == 0 {
			continue
		}
		n, err := strconv.Atoi(pk[0])
		if err != nil {
			continue
		}
		row := sourcesRow{pkts: n}
		for _, lm := range linkRE.FindAllStringSubmatch(cols[5], -1) {
			v, _ := strconv.Atoi(lm[1])
			row.linkTypes = append(row.linkTypes, v)
		}
		rows[m[1]] = row
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestRealCaptures reads every file in ../shared/pcaps/real: each either
// yields its TCP segments or fails with the expected clear error. The frame
// count and link types must agree with tshark's (SOURCES.md).
func TestRealCaptures(t *testing.T) {
	if _, err := os.Stat(realDir); err != nil {
		t.Skipf("real captures not available (%v): they live in ../shared/pcaps/real next to the module", err)
	}
	sources := readSources(t)
	outcomes := realOutcomes()
	seen := map[string]bool{}
	err := filepath.WalkDir(realDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || de.Name() == "SOURCES.md" {
			return err
		}
		rel, _ := filepath.Rel(realDir, path)
		rel = filepath.ToSlash(rel)
		seen[rel] = true
		t.Run(rel, func(t *testing.T) {
			want, ok := outcomes[rel]
			if !ok {
				t.Fatalf("no expected outcome for %s: add it to realOutcomes", rel)
			}
			var (
				pkts []capture.Packet
				st   capture.Stats
			)
			src, err := capture.Open(path)
			if err == nil {
				pkts, st, err = drain(src, path)
			}
			if want.err != nil {
				wantKind(t, err, want.err, "")
				if !strings.Contains(err.Error(), `"`+path+`"`) || !strings.Contains(err.Error(), want.msg) {
					t.Errorf("error %q: want the file name and %q", err, want.msg)
				}
			} else if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if want.warn {
				wantKind(t, st.Warning, capture.ErrTruncated, "")
				if !strings.Contains(st.Warning.Error(), want.msg) {
					t.Errorf("warning %q does not say %q", st.Warning, want.msg)
				}
			} else if st.Warning != nil {
				t.Errorf("unexpected warning %v", st.Warning)
			}
			if len(pkts) != want.tcp || st.NonTCP != int64(want.nonTCP) || st.Frag.Fragments != int64(want.frag) || st.Truncated != int64(want.truncated) {
				t.Errorf("%d tcp, %d non-tcp, %d fragments, %d truncated; want %d, %d, %d, %d", len(pkts), st.NonTCP, st.Frag.Fragments, st.Truncated,
					want.tcp, want.nonTCP, want.frag, want.truncated)
			}
			missing := 0
			for _, p := range pkts {
				if p.Missing > 0 {
					missing++
				}
			}
			if int64(missing) != st.Truncated-st.TruncatedHeaders {
				t.Errorf("%d packets with Missing > 0, stats say %d truncated", missing, st.Truncated-st.TruncatedHeaders)
			}
			if st.Malformed != 0 {
				t.Errorf("%d malformed frames, first: %v", st.Malformed, st.FirstMalformed)
			}
			// Every frame is accounted for.
			if acc := st.TCP + st.NonTCP + st.Frag.Fragments - st.Frag.Reassembled + st.TruncatedHeaders + st.Malformed; acc != st.Frames {
				t.Errorf("frames %d, but tcp+nontcp+fragments-reassembled+truncated headers+malformed = %d", st.Frames, acc)
			}
			// tshark's view.
			row, ok := sources[rel]
			if !ok {
				t.Fatalf("%s is not in SOURCES.md", rel)
			}
			if st.Frames != int64(row.pkts) {
				t.Errorf("%d frames, tshark read %d", st.Frames, row.pkts)
			}
			for _, lt := range st.LinkTypes {
				found := false
				for _, v := range row.linkTypes {
					found = found || v == int(lt.LinkType)
				}
				if !found {
					t.Errorf("frames of link type %d, SOURCES.md lists %v", lt.LinkType, row.linkTypes)
				}
			}
			for _, p := range pkts {
				if !p.Src.IsValid() || !p.Dst.IsValid() || p.N < 1 || int64(p.N) > st.Frames {
					t.Fatalf("implausible packet %+v", p)
				}
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range outcomes {
		if !seen[name] {
			t.Errorf("%s is in realOutcomes but not in %s", name, realDir)
		}
	}
}
