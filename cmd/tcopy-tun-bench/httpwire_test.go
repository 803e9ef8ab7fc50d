package main

import (
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int64
		okay bool
	}{
		{"/bytes/256", 256, true},
		{"/bytes/0?s=1&r=2", 0, true},
		{"/bytes/268435456?s=3", 268435456, true},
		{"/bytes/", 0, false},
		{"/bytes/?s=1", 0, false},
		{"/bytes/12a", 0, false},
		{"/bytes/-1", 0, false},
		{"/other/12", 0, false},
		{"/bytes/1234567890123456789", 0, false}, // beyond 18 digits
	} {
		n, ok := parseTarget([]byte(tc.in))
		if n != tc.n || ok != tc.okay {
			t.Errorf("parseTarget(%q) = %d, %v; want %d, %v", tc.in, n, ok, tc.n, tc.okay)
		}
	}
}

func TestWireFormat(t *testing.T) {
	get := string(appendRequest(nil, "GET", 256, 7, 3, 0, true))
	want := "GET /bytes/256?s=7&r=3 HTTP/1.1\r\nHost: 10.1.0.1:8080\r\nUser-Agent: tcopy-tun-bench/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if get != want {
		t.Errorf("GET request:\n%q\nwant\n%q", get, want)
	}
	post := string(appendRequest(nil, "POST", 5, 1, 0, 1<<20, false))
	want = "POST /bytes/5?s=1&r=0 HTTP/1.1\r\nHost: 10.1.0.1:8080\r\nUser-Agent: tcopy-tun-bench/1\r\nAccept: */*\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n"
	if post != want {
		t.Errorf("POST request:\n%q\nwant\n%q", post, want)
	}
	resp := string(appendResponseHeader(nil, 42, false))
	want = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 42\r\n\r\n"
	if resp != want {
		t.Errorf("response header %q, want %q", resp, want)
	}
	if r := string(appendResponseHeader(nil, 0, true)); r != "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" {
		t.Errorf("closing response header %q", r)
	}
}

func TestHeaderHelpers(t *testing.T) {
	if v, ok := headerValue([]byte("Content-LENGTH:  12 \r\n"), "content-length"); !ok || string(v) != "12" {
		t.Errorf("headerValue: %q %v", v, ok)
	}
	if _, ok := headerValue([]byte("Content-Lengthx: 12\r\n"), "content-length"); ok {
		t.Error("headerValue matched a longer name")
	}
	if _, ok := headerValue([]byte("no colon\r\n"), "connection"); ok {
		t.Error("headerValue matched a line without a colon")
	}
	for in, want := range map[string]int64{"0": 0, "123": 123, "999999999999999999": 999999999999999999} {
		if n, ok := parseUint([]byte(in)); !ok || n != want {
			t.Errorf("parseUint(%q) = %d, %v", in, n, ok)
		}
	}
	for _, in := range []string{"", "-1", "1x", "9999999999999999999"} {
		if _, ok := parseUint([]byte(in)); ok {
			t.Errorf("parseUint(%q) accepted", in)
		}
	}
	for line, want := range map[string]string{
		"GET /bytes/1 HTTP/1.1\r\n":  "GET",
		"POST /bytes/1 HTTP/1.0\r\n": "POST",
		"PUT /bytes/1 HTTP/1.1\r\n":  "OTHER",
	} {
		if m, tgt, ok := parseRequestLine([]byte(line)); !ok || m != want || string(tgt) != "/bytes/1" {
			t.Errorf("parseRequestLine(%q) = %q %q %v", line, m, tgt, ok)
		}
	}
	if _, _, ok := parseRequestLine([]byte("GET /x SPDY/3\r\n")); ok {
		t.Error("parseRequestLine accepted a non-HTTP/1 line")
	}
}
