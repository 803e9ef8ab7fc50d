package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// The live redis test's workload: one connection, one SET every
// liveRedisEvery, liveRedisKeys in all; the target is checked before key
// liveRedisCheckAt is sent, while the connection is still open.
const (
	liveRedisProdIP  = "10.9.0.1"
	liveRedisKeys    = 30
	liveRedisEvery   = 200 * time.Millisecond
	liveRedisCheckAt = 15                     // about 3 s into the connection
	liveRedisGrace   = 500 * time.Millisecond // what the check does not count on yet
	liveRedisMargin  = 1                      // keys the check may miss beyond the grace
)

// TestPrivilegedLiveRedisLongLived: live copy (--live) of a long-lived
// connection. A client keeps one connection to the production redis-server
// A open for about six seconds and sends SET live:i i every 200 ms; tcopy-tun
// copies it from the loopback interface onto the target redis-server B.
// A session reaches the replay when it starts (DESIGN.md, "Streaming
// sessions"), so while the connection is still open B must already hold
// every key sent until half a second before the check (one key of margin).
// Once the client has closed and tcopy-tun has been stopped with SIGINT,
// B holds every key with its value, the run exits 0 and reports one session
// answered identically, and nothing is left in the namespace. The lag from
// A's answer to the key's appearance on B is logged.
func TestPrivilegedLiveRedisLongLived(t *testing.T) {
	requireReal(t, toolGo, toolRedisServer)
	x := newE2E(t)
	x.ns.AddDummy(t, "prod0", liveRedisProdIP+"/24")
	prod := startLiveRedis(t, x.ns, "production", liveRedisProdIP, redisPort)
	tgt := startLiveRedis(t, x.ns, "target", "127.0.0.1", redisPort+1)
	x.snapshot()
	rep := filepath.Join(x.dir, "report.json")
	p := x.start("--live", "lo", "--server", fmt.Sprintf("%s:%d", liveRedisProdIP, redisPort),
		"--target", fmt.Sprintf("127.0.0.1:%d", redisPort+1), "--report", rep, "--progress", "never")
	x.waitTUN(p)

	// B is watched over its Unix socket (not the copied path): the first
	// time its key count reaches k is when key k-1 arrived, since one
	// connection's SETs are applied in order.
	watch := watchKeys(t, tgt.dial(t), liveRedisKeys, 5*time.Millisecond, time.Minute)
	check := tgt.dial(t)

	var conn net.Conn
	if err := x.ns.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", liveRedisProdIP, redisPort), 5*time.Second)
		conn = c
		return err
	}); err != nil {
		t.Fatalf("connect to production: %v", err)
	}
	t.Cleanup(func() { conn.Close() }) // closed by the test below, unless it fails first
	client := newRESP(conn)
	answered := make([]time.Time, liveRedisKeys) // when A answered SET live:i
	began := time.Now()
	for i := range liveRedisKeys {
		time.Sleep(time.Until(began.Add(time.Duration(i) * liveRedisEvery)))
		if i == liveRedisCheckAt {
			now := time.Now()
			want := 0
			for _, at := range answered[:i] {
				if at.Before(now.Add(-liveRedisGrace)) {
					want++
				}
			}
			got, err := check.integer("DBSIZE")
			if err != nil {
				t.Fatalf("target DBSIZE: %v", err)
			}
			t.Logf("%.1fs into the connection: %d keys sent, %d answered more than %v ago, the target holds %d",
				now.Sub(began).Seconds(), i, want, liveRedisGrace, got)
			if got < want-liveRedisMargin {
				t.Errorf("while the connection is open, %.1fs into it: the target holds %d keys, want at least %d of the %d sent (all those answered more than %v ago, less %d)",
					now.Sub(began).Seconds(), got, want-liveRedisMargin, i, liveRedisGrace, liveRedisMargin)
			}
		}
		k, v := fmt.Sprintf("live:%d", i), strconv.Itoa(i)
		if r, err := client.do("SET", k, v); err != nil || r != "OK" {
			t.Fatalf("production SET %s %s: %q, %v", k, v, r, err)
		}
		answered[i] = time.Now()
	}
	time.Sleep(liveRedisEvery)
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	t.Logf("the connection was open %v", closed.Sub(began).Round(time.Millisecond))

	// Every key reaches B, then the copy is stopped.
	appeared, err := watch.wait()
	if err != nil {
		t.Errorf("watching the target: %v", err)
	}
	if appeared[liveRedisKeys-1].IsZero() {
		n := 0
		for _, at := range appeared {
			if !at.IsZero() {
				n++
			}
		}
		p.signal(syscall.SIGKILL)
		t.Fatalf("the target got %d of %d keys within a minute\nstderr:\n%s", n, liveRedisKeys, p.wait(10*time.Second).stderr)
	}
	logLag(t, answered, appeared, closed)
	p.signal(syscall.SIGINT)
	r := p.wait(20 * time.Second)
	if r.code != exitOK {
		t.Errorf("exit %d, want %d (a stopped live copy is a normal end)\n%s", r.code, exitOK, r.stderr)
	}
	for i := range liveRedisKeys {
		k := fmt.Sprintf("live:%d", i)
		if v, err := check.do("GET", k); err != nil || v != strconv.Itoa(i) {
			t.Errorf("target GET %s: %q, %v; want %q", k, v, err, strconv.Itoa(i))
		}
	}
	if n, err := check.integer("DBSIZE"); err != nil || n != liveRedisKeys {
		t.Errorf("target DBSIZE %d, %v; want %d", n, err, liveRedisKeys)
	}
	if n, err := prod.dial(t).integer("DBSIZE"); err != nil || n != liveRedisKeys {
		t.Errorf("production DBSIZE %d, %v; want %d", n, err, liveRedisKeys)
	}
	assertAllIdentical(t, readReport(t, rep), 1)
	for _, s := range []*liveRedis{prod, tgt} {
		if err := s.proc.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("%s: %v", s.proc.name, err)
		}
	}
	x.assertClean()
}

// logLag logs how long after production answered each key the target had
// it, and how many keys the target had before the client closed.
func logLag(t *testing.T, answered, appeared []time.Time, closed time.Time) {
	t.Helper()
	var lags []time.Duration
	before := 0
	for i, at := range appeared {
		lags = append(lags, at.Sub(answered[i]))
		if at.Before(closed) {
			before++
		}
	}
	slices.Sort(lags)
	t.Logf("lag from production's answer to the key on the target (polled every 5ms): min %v, median %v, max %v; %d of %d keys there before the client closed",
		lags[0].Round(time.Millisecond), lags[len(lags)/2].Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond), before, len(lags))
}

// liveRedis is a redis-server of the live test, without persistence, on
// addr:port in the namespace and on a Unix socket the test talks to.
type liveRedis struct {
	proc *realProc
	sock string
}

func startLiveRedis(t *testing.T, ns *tuntest.Netns, name, addr string, port int) *liveRedis {
	t.Helper()
	p, sock := startRedisServer(t, ns, "redis-server "+name, port, []string{addr})
	return &liveRedis{proc: p, sock: sock}
}

// dial connects to the server's Unix socket; the connection is closed when
// the test ends.
func (r *liveRedis) dial(t *testing.T) *respClient {
	t.Helper()
	c, err := net.DialTimeout("unix", r.sock, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", r.proc.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return newRESP(c)
}

// respClient is a minimal RESP client: one command at a time, simple replies.
type respClient struct {
	c  net.Conn
	br *bufio.Reader
}

func newRESP(c net.Conn) *respClient { return &respClient{c: c, br: bufio.NewReader(c)} }

// do sends one command and returns its reply: the text of a simple string
// or integer, the bytes of a bulk string, "(nil)" for a nil bulk string; an
// error reply is an error.
func (r *respClient) do(args ...string) (string, error) {
	if err := r.c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(r.c, b.String()); err != nil {
		return "", err
	}
	line, err := r.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bulk header %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r.br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// integer runs a command whose reply is an integer.
func (r *respClient) integer(args ...string) (int, error) {
	s, err := r.do(args...)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// keyWatch polls a server's key count and records when it first reached
// each count.
type keyWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	appeared   []time.Time // [k]: when the count first reached k+1
	err        error
}

// watchKeys polls DBSIZE on c every period until the count reaches n, limit
// has passed or the test ends.
func watchKeys(t *testing.T, c *respClient, n int, period, limit time.Duration) *keyWatch {
	w := &keyWatch{stop: make(chan struct{}), done: make(chan struct{}), appeared: make([]time.Time, n)}
	go func() {
		defer close(w.done)
		timeout := time.NewTimer(limit)
		defer timeout.Stop()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			got, err := c.integer("DBSIZE")
			now := time.Now()
			w.mu.Lock()
			w.err = err
			for k := 0; k < min(got, n); k++ {
				if w.appeared[k].IsZero() {
					w.appeared[k] = now
				}
			}
			w.mu.Unlock()
			if err != nil || got >= n {
				return
			}
			select {
			case <-tick.C:
			case <-timeout.C:
				return
			case <-w.stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(w.stop)
		<-w.done
	})
	return w
}

// wait waits for the watch to end and returns when each count was first
// reached (zero: never), and the error that ended it early.
func (w *keyWatch) wait() ([]time.Time, error) {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.appeared), w.err
}
