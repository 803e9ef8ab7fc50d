package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		err  bool
	}{
		{"65536", 65536, false},
		{"64KiB", 64 << 10, false},
		{"64k", 64 << 10, false},
		{"32MiB", 32 << 20, false},
		{"32MB", 32 << 20, false},
		{"1GiB", 1 << 30, false},
		{"2GiB", 0, true}, // past what an int socket option holds
		{"0", 0, true},
		{"-1", 0, true},
		{"MiB", 0, true},
		{"12TiB", 0, true},
		{"1.5MiB", 0, true},
		{"", 0, true},
	} {
		got, err := parseSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestLiveBufferFlag(t *testing.T) {
	f, err := parseReplayFlags([]string{"--live", "lo", "--target", "127.0.0.1:80", "--live-buffer", "4MiB"}, io.Discard)
	if err != nil || f.liveBuf != 4<<20 {
		t.Fatalf("--live-buffer 4MiB: %v, %+v", err, f)
	}
	for _, args := range [][]string{
		{"--pcap", "x.pcap", "--target", "127.0.0.1:80", "--live-buffer", "4MiB"},
		{"--live", "lo", "--target", "127.0.0.1:80", "--live-buffer", "lots"},
	} {
		_, err := parseReplayFlags(args, io.Discard)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line", args, err)
		}
	}
}
