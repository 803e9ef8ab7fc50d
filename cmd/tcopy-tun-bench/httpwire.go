package main

import (
	"strconv"
)

// The bench's HTTP/1.1 convention, shared by the capture generator and the
// target server so that every replayed answer can be identical to the
// captured one (the intercept then counts it as such):
//
//	GET /bytes/<n>?s=<session>&r=<request> HTTP/1.1      → a body of n bytes
//	POST /bytes/<n>?s=<session> with a Content-Length body → the same, after
//	                                                         the body is read
//
// The answer carries no Date or Server header, nothing that varies between
// runs. "Connection: close" in the request is echoed and the server closes
// after the answer.

// benchHost is the Host header of generated requests (the captured server).
const benchHost = "10.1.0.1:8080"

// bodyByte fills every body: the content does not matter to TCP, and one
// value lets a shared buffer serve any length.
const bodyByte = 'x'

// appendRequest appends one request line and headers (and no body) to b.
func appendRequest(b []byte, method string, size int64, sess, req int, bodyLen int64, close bool) []byte {
	b = append(b, method...)
	b = append(b, " /bytes/"...)
	b = strconv.AppendInt(b, size, 10)
	b = append(b, "?s="...)
	b = strconv.AppendInt(b, int64(sess), 10)
	b = append(b, "&r="...)
	b = strconv.AppendInt(b, int64(req), 10)
	b = append(b, " HTTP/1.1\r\nHost: "+benchHost+"\r\nUser-Agent: tcopy-tun-bench/1\r\nAccept: */*\r\n"...)
	if method == "POST" {
		b = append(b, "Content-Type: application/octet-stream\r\nContent-Length: "...)
		b = strconv.AppendInt(b, bodyLen, 10)
		b = append(b, "\r\n"...)
	}
	if close {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendResponseHeader appends the header of the answer to a request for
// n bytes.
func appendResponseHeader(b []byte, n int64, close bool) []byte {
	b = append(b, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "\r\n"...)
	if close {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// notFound is the answer to a request outside the convention; it closes the
// connection, so a replay of a foreign capture shows as different answers
// and early closes rather than hanging.
const notFound = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

// parseTarget returns n from "/bytes/<n>[?...]".
func parseTarget(target []byte) (int64, bool) {
	const prefix = "/bytes/"
	if len(target) <= len(prefix) || string(target[:len(prefix)]) != prefix {
		return 0, false
	}
	var n int64
	digits := 0
	for _, c := range target[len(prefix):] {
		if c == '?' {
			break
		}
		if c < '0' || c > '9' || digits == 18 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits > 0
}
