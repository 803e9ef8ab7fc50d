package session

import (
	"bytes"
	"encoding/binary"
)

// Protocol is an application protocol guessed from a session's first bytes.
type Protocol string

// The protocols Guess knows. The strings are stable: inspect prints them and
// its JSON carries them.
const (
	Unknown    Protocol = "unknown"
	HTTP       Protocol = "http"
	RESP       Protocol = "resp" // Redis serialization protocol
	TLS        Protocol = "tls"
	PostgreSQL Protocol = "postgresql"
	MySQL      Protocol = "mysql"
	Memcached  Protocol = "memcached"
	SMTP       Protocol = "smtp"
	FTP        Protocol = "ftp"
)

// guessPrefix is how many bytes of each stream Guess looks at.
const guessPrefix = 256

// confidence of one detector about one stream prefix.
const (
	none   = 0
	weak   = 1 // consistent with the protocol, but other protocols look alike
	strong = 3 // a signature: a handshake, a greeting, a request line
)

// Guess names the application protocol of a session from the first bytes
// of its client and server streams. Each protocol scores both prefixes;
// the best total wins, and the server port only breaks a tie between equal
// scores (a port alone never names a protocol: a session without bytes, or
// with bytes nothing recognises, is Unknown).
//
// Partial sessions start mid-stream, so the detectors also accept a
// protocol's ordinary messages (a PostgreSQL query, a MySQL command), with
// less confidence than its handshake.
func Guess(s *Session) Protocol {
	var c, v []byte
	if len(s.Chunks) > 0 {
		c = s.Chunks[0].Data
		// A request split over chunks (merging is bounded in time) is
		// still one prefix.
		if len(c) < guessPrefix && len(s.Chunks) > 1 && s.Chunks[1].StreamOffset == s.Chunks[0].StreamOffset+int64(len(c)) {
			c = append(append(make([]byte, 0, guessPrefix), c...), s.Chunks[1].Data[:min(len(s.Chunks[1].Data), guessPrefix-len(c))]...)
		}
	}
	s.ServerSegments(func(off int64, data []byte) {
		if v == nil {
			v = data
		}
	})
	c, v = c[:min(len(c), guessPrefix)], v[:min(len(v), guessPrefix)]

	best, bestScore, tie := Unknown, 0, false
	for _, d := range detectors {
		score := d.client(c) + d.server(v)
		switch {
		case score == 0:
		case score > bestScore:
			best, bestScore, tie = d.proto, score, false
		case score == bestScore:
			tie = true
		}
	}
	if !tie {
		return best
	}
	// Tie: the protocol usually served on the server port, if it is one of
	// the tied ones.
	byPort := portProtocol(s.Server.Port())
	for _, d := range detectors {
		if d.proto == byPort && d.client(c)+d.server(v) == bestScore {
			return byPort
		}
	}
	return best
}

type detector struct {
	proto  Protocol
	client func([]byte) int
	server func([]byte) int
}

var detectors = [...]detector{
	{TLS, tlsRecord, tlsRecord},
	{HTTP, httpClient, httpServer},
	{RESP, respClient, respServer},
	{PostgreSQL, pgClient, pgServer},
	{MySQL, mysqlClient, mysqlServer},
	{Memcached, memcachedClient, memcachedServer},
	{SMTP, smtpClient, smtpServer},
	{FTP, ftpClient, ftpServer},
}

func portProtocol(port uint16) Protocol {
	switch port {
	case 80, 8000, 8008, 8080, 8081, 8888:
		return HTTP
	case 443, 465, 636, 853, 993, 995, 8443:
		return TLS
	case 6379:
		return RESP
	case 5432:
		return PostgreSQL
	case 3306:
		return MySQL
	case 11211:
		return Memcached
	case 25, 587:
		return SMTP
	case 21:
		return FTP
	}
	return Unknown
}

// tlsRecord: a record header with a TLS/SSL3 version. A handshake record
// (ClientHello, ServerHello) is the signature; application data and alerts
// are what a partial session starts with.
func tlsRecord(b []byte) int {
	if len(b) < 5 || b[1] != 3 || b[2] > 4 {
		return none
	}
	switch b[0] {
	case 0x16:
		return strong
	case 0x14, 0x15, 0x17:
		return weak
	}
	return none
}

var httpMethods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("TRACE "),
	[]byte("PRI * HTTP/2.0"),
}

func httpClient(b []byte) int {
	line := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line = b[:i]
	}
	if bytes.HasPrefix(b, []byte("CONNECT ")) {
		// NATS clients also start with "CONNECT ", followed by JSON.
		if t := line[len("CONNECT "):]; len(t) > 0 && t[0] != '{' && bytes.IndexByte(t, ':') > 0 {
			return strong
		}
		return none
	}
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, m) {
			return strong
		}
	}
	// Other methods (WebDAV's PROPFIND, odd ones): a token, a space, and
	// an HTTP version on the first line.
	sp := bytes.IndexByte(line, ' ')
	if sp < 3 || sp > 20 || !upperToken(line[:sp]) {
		return none
	}
	if bytes.Contains(line[sp:], []byte(" HTTP/1.")) {
		return strong
	}
	// The version may lie beyond the prefix (a long URL): a request
	// target in origin or absolute form still says HTTP.
	target := line[sp+1:]
	if bytes.HasPrefix(target, []byte("/")) || bytes.HasPrefix(target, []byte("http://")) || bytes.HasPrefix(target, []byte("https://")) {
		return weak + 1
	}
	return none
}

func httpServer(b []byte) int {
	if bytes.HasPrefix(b, []byte("HTTP/1.")) || bytes.HasPrefix(b, []byte("HTTP/2 ")) {
		return strong
	}
	return none
}

func upperToken(b []byte) bool {
	for _, c := range b {
		if (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// respClient: a command is an array of bulk strings, "*2\r\n$3\r\nGET\r\n".
// Inline commands ("PING\r\n") are left to the server side: too many text
// protocols look like them.
func respClient(b []byte) int {
	if len(b) < 4 || b[0] != '*' {
		return none
	}
	i := 1
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 1 || !bytes.HasPrefix(b[i:], []byte("\r\n")) {
		return none
	}
	if len(b) == i+2 || b[i+2] == '$' {
		return strong
	}
	return weak
}

// respServer: a reply starts with a RESP type byte and ends its first line
// with CRLF. Weak: SMTP/FTP replies do not start so, but "+OK" is POP3.
func respServer(b []byte) int {
	if len(b) < 3 || bytes.IndexByte(b, '\r') < 1 {
		return none
	}
	switch b[0] {
	case '+', '-', ':', '$', '*', '%', '_', '#', ',', '(', '=', '!', '~', '>', '|':
		return weak
	}
	return none
}

// PostgreSQL startup packets: length, then a protocol code.
const (
	pgProtocol3    = 3 << 16
	pgProtocol32   = 3<<16 | 2
	pgSSLRequest   = 80877103
	pgCancel       = 80877102
	pgGSSENCRequst = 80877104
)

func pgClient(b []byte) int {
	if len(b) >= 8 {
		n := binary.BigEndian.Uint32(b)
		switch binary.BigEndian.Uint32(b[4:]) {
		case pgProtocol3, pgProtocol32:
			if n >= 8 && n < 10000 {
				return strong
			}
		case pgSSLRequest, pgGSSENCRequst:
			if n == 8 {
				return strong
			}
		case pgCancel:
			if n == 16 {
				return strong
			}
		}
	}
	// Mid-stream: a frontend message (Query, Parse, Bind, Execute, Sync,
	// Terminate, Describe, Close, Flush) with a sane length.
	if len(b) >= 5 && bytes.IndexByte([]byte("QPBESXDCH"), b[0]) >= 0 {
		if n := binary.BigEndian.Uint32(b[1:]); n >= 4 && n < 1<<24 {
			return weak
		}
	}
	return none
}

func pgServer(b []byte) int {
	if len(b) == 1 && (b[0] == 'S' || b[0] == 'N') {
		return weak // answer to an SSLRequest
	}
	// Authentication request, ParameterStatus, ReadyForQuery, errors,
	// row descriptions and data, command completion.
	if len(b) >= 5 && bytes.IndexByte([]byte("REKSZTDCN1237"), b[0]) >= 0 {
		if n := binary.BigEndian.Uint32(b[1:]); n >= 4 && n < 1<<24 {
			if b[0] == 'R' && n >= 8 && n <= 64 {
				return strong
			}
			return weak
		}
	}
	return none
}

// mysqlPacket parses a MySQL packet header: 3-byte little-endian length
// and a sequence byte.
func mysqlPacket(b []byte) (n int, seq byte, ok bool) {
	if len(b) < 5 {
		return 0, 0, false
	}
	n = int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	return n, b[3], n > 0
}

func mysqlServer(b []byte) int {
	n, seq, ok := mysqlPacket(b)
	if !ok {
		return none
	}
	// The greeting: protocol version 10, a NUL-terminated version string.
	if seq == 0 && b[4] == 10 && n < 1024 {
		if i := bytes.IndexByte(b[5:], 0); i > 0 && printable(b[5:5+i]) {
			return strong
		}
	}
	// A refusal instead of the greeting ("Host ... is not allowed").
	if seq == 0 && b[4] == 0xff && n == len(b)-4 {
		return weak
	}
	// Mid-stream answers: OK, ERR, EOF or a column count.
	if seq > 0 && n == len(b)-4 && (b[4] == 0x00 || b[4] == 0xff || b[4] == 0xfe || b[4] < 0x20) {
		return weak
	}
	return none
}

func mysqlClient(b []byte) int {
	n, seq, ok := mysqlPacket(b)
	if !ok {
		return none
	}
	// Handshake response (seq 1) or a command starting a new exchange
	// (seq 0: COM_QUIT, COM_INIT_DB, COM_QUERY, COM_PING, COM_STMT_*).
	switch {
	case seq == 1 && n >= 32 && n <= len(b)-4+1024:
		return weak
	case seq == 0 && n <= len(b)-4+1<<20:
		switch b[4] {
		case 0x01, 0x02, 0x03, 0x0e, 0x16, 0x17, 0x19, 0x1a:
			return weak
		}
	}
	return none
}

var memcachedCommands = [][]byte{
	[]byte("get "), []byte("gets "), []byte("set "), []byte("add "), []byte("replace "),
	[]byte("append "), []byte("prepend "), []byte("cas "), []byte("delete "),
	[]byte("incr "), []byte("decr "), []byte("touch "), []byte("gat "), []byte("gats "),
	[]byte("stats"), []byte("version\r\n"), []byte("flush_all"), []byte("verbosity "),
	[]byte("mg "), []byte("ms "), []byte("md "), []byte("ma "), []byte("mn\r\n"), []byte("me "),
}

var memcachedReplies = [][]byte{
	[]byte("VALUE "), []byte("END\r\n"), []byte("STORED\r\n"), []byte("NOT_STORED\r\n"),
	[]byte("EXISTS\r\n"), []byte("NOT_FOUND\r\n"), []byte("DELETED\r\n"), []byte("TOUCHED\r\n"),
	[]byte("STAT "), []byte("VERSION "), []byte("CLIENT_ERROR "), []byte("SERVER_ERROR "),
	[]byte("HD"), []byte("VA "), []byte("EN\r\n"), []byte("NF\r\n"), []byte("NS\r\n"), []byte("MN\r\n"),
}

// memcachedClient: the text protocol's commands (lower case, which also
// tells them from HTTP) or a binary request header.
func memcachedClient(b []byte) int {
	for _, c := range memcachedCommands {
		if bytes.HasPrefix(b, c) {
			// Redis accepts "get k" inline too: the server's answer
			// (or the port) decides between them.
			return weak
		}
	}
	if len(b) >= 24 && b[0] == 0x80 && b[1] < 0x50 {
		return weak
	}
	return none
}

func memcachedServer(b []byte) int {
	for _, r := range memcachedReplies {
		if bytes.HasPrefix(b, r) {
			return strong
		}
	}
	if len(b) >= 24 && b[0] == 0x81 && b[1] < 0x50 {
		return strong
	}
	return none
}

// SMTP and FTP both greet with "220"; the text and the client's first
// command tell them apart.
func smtpServer(b []byte) int {
	if !replyCode(b, "220") {
		return none
	}
	if containsFold(firstLine(b), "SMTP") {
		return strong
	}
	return weak
}

func smtpClient(b []byte) int {
	for _, c := range []string{"EHLO ", "HELO ", "MAIL FROM:", "RCPT TO:", "STARTTLS"} {
		if hasPrefixFold(b, c) {
			return strong
		}
	}
	return none
}

func ftpServer(b []byte) int {
	if !replyCode(b, "220") {
		return none
	}
	if containsFold(firstLine(b), "FTP") {
		return strong
	}
	return weak
}

func ftpClient(b []byte) int {
	for _, c := range []string{"USER ", "AUTH TLS", "AUTH SSL", "FEAT\r\n", "SYST\r\n"} {
		if hasPrefixFold(b, c) {
			return strong
		}
	}
	return none
}

func replyCode(b []byte, code string) bool {
	return len(b) >= 5 && string(b[:3]) == code && (b[3] == ' ' || b[3] == '-')
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

func containsFold(b []byte, s string) bool {
	return bytes.Contains(bytes.ToUpper(b), []byte(s))
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
