package session

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestGuess(t *testing.T) {
	pgStartup := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 41), 3<<16)
	pgStartup = append(pgStartup, "user\x00app\x00database\x00db\x00\x00"...)
	pgSSL := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
	mysqlGreeting := []byte("\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00abcdefgh\x00")
	tests := []struct {
		name           string
		client, server string
		port           uint16
		want           Protocol
	}{
		{"http request", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "", 8080, HTTP},
		{"http answer only", "", "HTTP/1.1 200 OK\r\n", 9999, HTTP},
		{"webdav method", "PROPFIND /dav/ HTTP/1.1\r\n", "", 9999, HTTP},
		{"long URL, version beyond the prefix", "SEARCH /" + string(make([]byte, 300)), "", 80, HTTP},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "", 80, HTTP},
		{"proxy CONNECT", "CONNECT example.com:443 HTTP/1.1\r\n", "", 3128, HTTP},
		{"NATS CONNECT is not HTTP", "CONNECT {\"verbose\":false}\r\n", "INFO {\"server_id\":1}\r\n", 4222, Unknown},
		{"resp command", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "$-1\r\n", 6379, RESP},
		{"resp reply only", "", "+PONG\r\n", 6379, RESP},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "\x16\x03\x03\x00\x5a\x02", 443, TLS},
		{"tls mid-session", "\x17\x03\x03\x00\x20abcd", "\x17\x03\x03\x00\x40efgh", 8443, TLS},
		{"postgres startup", string(pgStartup), "R\x00\x00\x00\x08\x00\x00\x00\x00", 5432, PostgreSQL},
		{"postgres ssl request", string(pgSSL), "N", 15432, PostgreSQL},
		{"postgres mid-session query", "Q\x00\x00\x00\x0dselect 1\x00", "T\x00\x00\x00\x1e\x00\x01", 5432, PostgreSQL},
		{"mysql greeting", "", string(mysqlGreeting), 3306, MySQL},
		{"mysql mid-session query", "\x09\x00\x00\x00\x03select 1", "\x01\x00\x00\x01\x01", 3306, MySQL},
		{"memcached text", "get user:1\r\n", "VALUE user:1 0 3\r\nabc\r\nEND\r\n", 11211, Memcached},
		{"memcached binary", "\x80\x00\x00\x03" + string(make([]byte, 28)), "\x81\x00\x00\x03" + string(make([]byte, 28)), 11211, Memcached},
		{"redis inline get answered by redis", "get user:1\r\n", "$3\r\nabc\r\n", 6379, RESP},
		{"smtp", "EHLO client\r\n", "220 mx.example.com ESMTP Postfix\r\n", 25, SMTP},
		{"ftp", "USER anonymous\r\n", "220 ProFTPD Server ready.\r\n", 21, FTP},
		{"bare 220 on port 25", "", "220 welcome\r\n", 25, SMTP},
		{"bare 220 on port 21", "", "220 welcome\r\n", 21, FTP},
		{"no bytes: the port alone says nothing", "", "", 80, Unknown},
		{"binary noise", "\x00\x01\x02\x03\x04\x05", "\xff\xfe\xfd", 80, Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Session{Server: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), tt.port)}
			if tt.client != "" {
				s.Chunks = []Chunk{{Data: []byte(tt.client)}}
			}
			s.ServerData = []byte(tt.server)
			if got := Guess(s); got != tt.want {
				t.Errorf("Guess = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestGuessSplitRequest: a request split over two chunks (sent further
// apart than the merge window) is still recognised from its first bytes,
// and a server stream that starts with a hole uses its first captured run.
func TestGuessSplitRequest(t *testing.T) {
	s := &Session{
		Server: netip.MustParseAddrPort("10.0.0.2:9999"),
		Chunks: []Chunk{{Data: []byte("*2\r")}, {Data: []byte("\n$3\r\nGET\r\n"), StreamOffset: 3}},
	}
	if got := Guess(s); got != RESP {
		t.Errorf("split command: %s", got)
	}
	s = &Session{
		Server:     netip.MustParseAddrPort("10.0.0.2:9999"),
		ServerData: []byte("HTTP/1.1 200 OK\r\n"),
		Holes:      []Hole{{Server: true, Offset: 0, Len: 100}},
	}
	if got := Guess(s); got != HTTP {
		t.Errorf("server stream after a hole: %s", got)
	}
}
