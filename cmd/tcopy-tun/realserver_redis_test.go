package main

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// TestPrivilegedRealRedis: redis-server driven by redis-benchmark, one
// connection per request (-k 0) and pipelined (-P 10). The replayed server
// must end with the same DEBUG DIGEST (the whole dataset), the same number
// of keys, the same calls per command (INFO commandstats) and the same
// number of connections; every session delivered, and answers identical
// except where the answer depends on the order of concurrent sessions
// (INCR, LPUSH, ...: see redisServer.checkMatch).
func TestPrivilegedRealRedis(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark, toolRedisServer, toolRedisCli, toolRedisBenchmark)
	bin := buildTcopyTun(t)
	t.Run("keepalive-off", func(t *testing.T) {
		runRealScenario(t, bin, realScenario{server: redisServer{}, shape: shapeEthernet(), drive: redisBenchmark("-k", "0", "-n", "150", "-c", "10")})
	})
	t.Run("pipelined", func(t *testing.T) {
		runRealScenario(t, bin, realScenario{server: redisServer{}, shape: shapeEthernet(), drive: redisBenchmark("-P", "10", "-n", "2000", "-c", "4")})
	})
}

// redisPort is where the suite's redis-server listens.
const redisPort = 6379

// redisBenchmark returns a drive function that runs redis-benchmark from the
// client namespace with args added to a fixed test set: SET and GET of
// random keys (-r), INCR and LPUSH (answers depend on order), HSET and SADD.
// Every value is the same (-d 16 bytes of 'x'), so the final dataset does
// not depend on the order of concurrent sessions, only on what arrived.
func redisBenchmark(args ...string) func(t *testing.T, e *realEnv) {
	return func(t *testing.T, e *realEnv) {
		t.Helper()
		a := append([]string{"redis-benchmark", "-h", realServerIP, "-p", strconv.Itoa(redisPort),
			"-r", "1000", "-d", "16", "-t", "set,get,incr,lpush,hset,sadd", "-q"}, args...)
		out := runClient(t, e.cli, a...)
		for _, test := range []string{"SET", "GET", "INCR", "LPUSH", "HSET", "SADD"} {
			if !strings.Contains(out, test+": ") {
				t.Fatalf("redis-benchmark did not run %s:\n%s", test, out)
			}
		}
		if strings.Contains(out, "Error") || strings.Contains(out, "Could not") {
			t.Fatalf("redis-benchmark reported an error:\n%s", out)
		}
	}
}

// redisServer runs redis-server in the foreground without persistence.
type redisServer struct{}

func (redisServer) name() string { return "redis" }
func (redisServer) port() uint16 { return redisPort }

type redisInstance struct {
	proc *realProc
	ns   *tuntest.Netns
	sock string
}

func (redisServer) start(t *testing.T, e *realEnv, tag string) realInstance {
	t.Helper()
	// DEBUG DIGEST is the comparison; "local" allows it on the Unix socket
	// only.
	p, sock := startRedisServer(t, e.srv, "redis-server "+tag, redisPort, []string{realServerIP, "127.0.0.1"},
		"--enable-debug-command", "local")
	return &redisInstance{proc: p, ns: e.srv, sock: sock}
}

// startRedisServer runs redis-server in ns in the foreground, without
// persistence, on port at the addresses binds and on a Unix socket (its
// path is returned), with the options extra added. It returns once the
// server accepts connections at binds[0].
func startRedisServer(t *testing.T, ns *tuntest.Netns, name string, port int, binds []string, extra ...string) (*realProc, string) {
	t.Helper()
	dir := shortTempDir(t, "tcopytest-redis-")
	sock := filepath.Join(dir, "redis.sock")
	args := append([]string{"redis-server", "--port", strconv.Itoa(port), "--bind"}, binds...)
	args = append(args, "--protected-mode", "no", "--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", dir, "--logfile", "", "--unixsocket", sock)
	p := startProc(t, ns, name, append(args, extra...)...)
	p.waitListening(t, ns, net.JoinHostPort(binds[0], strconv.Itoa(port)))
	return p, sock
}

// state reads, over the Unix socket (no TCP, so nothing of it is captured
// or replayed): the dataset digest, the number of keys, the calls and
// failures per command, and the connections received. The queries are the
// same at every instance, so they count the same on both sides.
func (r *redisInstance) state(t *testing.T) []string {
	t.Helper()
	cli := func(args ...string) string {
		return r.ns.Run(t, append([]string{"redis-cli", "-s", r.sock}, args...)...)
	}
	var lines []string
	for _, l := range strings.Split(cli("INFO", "commandstats"), "\n") {
		l = strings.TrimSpace(l)
		cmd, rest, ok := strings.Cut(l, ":")
		if !ok || !strings.HasPrefix(cmd, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls", "rejected_calls", "failed_calls":
				lines = append(lines, fmt.Sprintf("%s %s %s", strings.TrimPrefix(cmd, "cmdstat_"), k, v))
			}
		}
	}
	for _, l := range strings.Split(cli("INFO", "stats"), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == "total_connections_received" {
			lines = append(lines, "connections "+v)
		}
	}
	lines = append(lines, "digest "+strings.TrimSpace(cli("DEBUG", "DIGEST")), "keys "+strings.TrimSpace(cli("DBSIZE")))
	if err := r.proc.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("redis-server exit: %v", err)
	}
	return sortedLines(strings.Join(lines, "\n"))
}

// redisOrderFree are the commands whose answer does not depend on what
// other sessions did before: their sessions must be answered identically.
// Answers of the others (INCR's counter, LPUSH's length, HSET/SADD's
// "was it new", GET racing the last SET session's close) depend on the order
// in which concurrent sessions reach the server, which a replay at another
// speed need not keep; their server-side effect is still checked by the
// digest.
var redisOrderFree = map[string]bool{"SET": true, "MSET": true, "PING": true, "CONFIG": true}

func (redisServer) checkMatch(s *session.Session, match string) error {
	var client bytes.Buffer
	for _, c := range s.Chunks {
		client.Write(c.Data)
	}
	cmds, err := redisCommands(client.Bytes())
	if err != nil {
		return fmt.Errorf("client stream: %w", err)
	}
	orderFree := true
	for c := range cmds {
		orderFree = orderFree && redisOrderFree[c]
	}
	switch {
	case orderFree && match != "identical":
		return fmt.Errorf("match %s for commands %v, want identical", match, cmds)
	case !orderFree && match != "identical" && match != "same-length" && match != "different":
		return fmt.Errorf("match %s for commands %v, want identical, same-length or different", match, cmds)
	}
	return nil
}

// redisCommands counts the commands in a client stream (RESP arrays of bulk
// strings, or inline commands).
func redisCommands(b []byte) (map[string]int, error) {
	cmds := map[string]int{}
	line := func() (string, error) {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return "", fmt.Errorf("unterminated line %.20q", b)
		}
		l := string(b[:i])
		b = b[i+2:]
		return l, nil
	}
	for len(b) > 0 {
		if b[0] != '*' {
			l, err := line()
			if err != nil {
				return nil, err
			}
			if f := strings.Fields(l); len(f) > 0 {
				cmds[strings.ToUpper(f[0])]++
			}
			continue
		}
		l, err := line()
		if err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(l[1:])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("array header %q", l)
		}
		for i := 0; i < n; i++ {
			h, err := line()
			if err != nil {
				return nil, err
			}
			size, err := strconv.Atoi(strings.TrimPrefix(h, "$"))
			if !strings.HasPrefix(h, "$") || err != nil || size < 0 || size+2 > len(b) {
				return nil, fmt.Errorf("bulk header %q", h)
			}
			if i == 0 {
				cmds[strings.ToUpper(string(b[:size]))]++
			}
			b = b[size+2:]
		}
	}
	return cmds, nil
}
