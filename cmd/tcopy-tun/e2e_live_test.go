package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Live copy (--live): real clients talk to a "production" server on a
// namespace address while tcopy-tun copies their sessions, as they happen,
// from the loopback interface onto a second server through the TUN. The
// first SIGINT ends the capture and lets the sessions finish: exit 0, every
// request copied, every answer identical, nothing left on the host.
func TestPrivilegedE2ELive(t *testing.T) {
	x := newE2E(t)
	x.ns.AddDummy(t, "prod0", "10.9.0.1/24")
	prod := x.startServer("http", "10.9.0.1:8080")
	tgt := x.startServer("http", "127.0.0.1:9090")
	x.snapshot()
	rep := filepath.Join(x.dir, "report.json")
	p := x.start("--live", "lo", "--server", "10.9.0.1:8080", "--target", "127.0.0.1:9090",
		"--report", rep, "--progress", "never")

	x.waitTUN(p)

	// Production traffic: five one-shot requests and one keep-alive
	// connection with three requests.
	var paths []string
	err := x.ns.Do(func() error {
		for i := range 5 {
			path := fmt.Sprintf("/live/%d", i)
			paths = append(paths, path)
			if err := clientSession(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: prod\r\nConnection: close\r\n\r\n", path), 1); err != nil {
				return err
			}
		}
		var reqs string
		for i := range 3 {
			path := fmt.Sprintf("/live/ka/%d", i)
			paths = append(paths, path)
			reqs += fmt.Sprintf("GET %s HTTP/1.1\r\nHost: prod\r\n\r\n", path)
		}
		return clientSession(reqs, 3)
	})
	if err != nil {
		t.Fatalf("production client: %v", err)
	}
	tgt.waitRequests(len(paths), 20*time.Second)
	p.signal(syscall.SIGINT)
	r := p.wait(20 * time.Second)
	prodStats, tgtStats := prod.stop(), tgt.stop()
	if r.code != exitOK {
		t.Fatalf("exit %d, want %d (a stopped live copy is a normal end)\n%s", r.code, exitOK, r.stderr)
	}
	got := map[string]int{}
	for _, c := range tgtStats.Conns {
		for _, q := range c.Requests {
			got[q.Method+" "+q.Path]++
		}
	}
	for _, c := range prodStats.Conns {
		for _, q := range c.Requests {
			got[q.Method+" "+q.Path]--
		}
	}
	for k, v := range got {
		if v != 0 {
			t.Errorf("%s: target got %+d requests compared with production", k, v)
		}
	}
	if len(tgtStats.Conns) != 6 {
		t.Errorf("target saw %d connections, want 6", len(tgtStats.Conns))
	}
	report := readReport(t, rep)
	assertAllIdentical(t, report, 6)
	x.assertClean()
}

// clientSession sends reqs on one connection and reads n HTTP answers (or
// until the server closes).
func clientSession(reqs string, n int) error {
	c, err := net.DialTimeout("tcp", "10.9.0.1:8080", 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, reqs); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	for range n {
		if err := readHTTPAnswer(br); err != nil {
			return err
		}
	}
	return nil
}

func readHTTPAnswer(br *bufio.Reader) error {
	length := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			fmt.Sscan(strings.TrimSpace(v), &length)
		}
	}
	_, err := io.CopyN(io.Discard, br, int64(length))
	return err
}
