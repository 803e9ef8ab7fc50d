package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/tun/tuntest"
)

// TestPrivilegedRealMariaDBSchemaThenWorkers: the client that creates the
// schema on one connection and, with that connection still open, starts
// workers on others (DESIGN.md, "Session model"). One mariadb client creates
// a database and a table and stays connected; then five worker connections
// each insert mariadbRowsPerWorker rows into that table and exit; then the
// first connection inserts one last row and closes. The workers end in the
// capture before the schema connection does, so a replay that hands a
// session over only when it ends (emission order = end order) can start the
// workers before the schema exists: "Unknown database"/"doesn't exist",
// fewer rows.
//
// The capture is taken as in runRealScenario (captureReal: tcpdump on the
// server's veth, no packet lost, tshark's count of connections). The
// replayed mariadbd, a fresh instance at --speed 1 and at --speed max, must
// end with the same tables and rows as the captured one; tcopy-tun must
// exit 0 with every session delivered (checkReport). Unlike runRealScenario
// the state is compared also when tcopy-tun exits non-zero, so a failure
// shows the rows that were lost.
func TestPrivilegedRealMariaDBSchemaThenWorkers(t *testing.T) {
	requireReal(t, toolGo, toolTcpdump, toolTshark, toolMariadbd, toolMariadbInstallDB, toolMariadb)
	bin := buildTcopyTun(t)
	e := newRealEnv(t, bin)
	srv := mariadbServer{}
	target := netip.AddrPortFrom(netip.MustParseAddr(realServerIP), mariadbPort)

	cp := captureReal(t, e, srv, shapeEthernet(), mariadbSchemaThenWorkers)
	want, ss := cp.want, cp.sessions
	if !slices.Contains(want, fmt.Sprintf("count %d", mariadbRows)) {
		t.Fatalf("the captured run left the table with other than %d rows:\n%s", mariadbRows, strings.Join(want, "\n"))
	}
	checkSchemaThenWorkersCapture(t, ss)
	t.Logf("mariadb capture: %d packets, %d sessions (the clients ran %v); server state %d lines",
		cp.packets, len(ss), cp.clients.Round(time.Millisecond), len(want))
	if t.Failed() {
		return
	}

	for _, speed := range realSpeeds {
		t.Run("speed-"+speed, func(t *testing.T) {
			inst := srv.start(t, e, "replay-"+speed)
			run, code := e.replayAnyExit(t, e.srv, cp.file, target, speed)
			got := inst.state(t)
			if diff := diffLines(want, got); diff != "" {
				t.Errorf("mariadb state after the replay at speed %s differs from the captured run (- captured run, + replay):\n%s", speed, diff)
			}
			if code != exitOK {
				t.Errorf("tcopy-tun --speed %s: exit status %d, want %d\n%s", speed, code, exitOK, run.stderr)
			}
			if n := allowQuitRaces(run.report, ss); n > 0 {
				t.Logf("speed %s: %d sessions ended by the server's FIN first after COM_QUIT (a close race)", speed, n)
			}
			checkReport(t, srv, run.report, ss, target, speed)
			t.Logf("speed %s: %d sessions in %.3fs (tcopy-tun ran %v); match %v; deviations %v",
				speed, run.report.Summary.Replayed, run.report.Summary.Wall, run.wall.Round(time.Millisecond),
				nonZero(run.report.Totals.Match), nonZero(run.report.Summary.Deviations))
		})
	}
}

var (
	toolMariadbd         = realTool{"mariadbd", "mariadb-server"}
	toolMariadbInstallDB = realTool{"mariadb-install-db", "mariadb-server"}
	toolMariadb          = realTool{"mariadb", "mariadb-client"}
)

// The workload's size: the schema connection's last row is worker 0's
// only row.
const (
	mariadbPort          = 3306
	mariadbWorkers       = 5
	mariadbRowsPerWorker = 40
	mariadbRows          = mariadbWorkers*mariadbRowsPerWorker + 1
)

// mariadbClientArgs is the mariadb command-line client towards the
// capture-phase server, with args added. No option file (--no-defaults must
// come first), no TLS (a replay cannot repeat a TLS session), and each
// result flushed at once (-n), so the test can read it from a pipe.
func mariadbClientArgs(args ...string) []string {
	return append([]string{"mariadb", "--no-defaults", "-h", realServerIP, "-P", strconv.Itoa(mariadbPort),
		"-u", "root", "--skip-ssl", "--batch", "--skip-column-names", "-n"}, args...)
}

// mariadbSchemaThenWorkers is the workload. Worker w inserts rows (w, 1..N);
// the schema connection inserts (0, 1). The primary key makes the final
// table independent of how the workers' inserts interleave.
func mariadbSchemaThenWorkers(t *testing.T, e *realEnv) {
	t.Helper()
	schema, stdin := startProcStdin(t, e.cli, "mariadb schema", mariadbClientArgs()...)
	write := func(s string) {
		t.Helper()
		if _, err := io.WriteString(stdin, s); err != nil {
			t.Fatalf("write to the schema connection: %v\n%s", err, schema.out.String())
		}
	}
	// A migration that takes a while (the SLEEP): a replay that starts the
	// workers next to it, instead of after it, loses nearly every row, not
	// just the first few. The SELECT tells the test that the table exists,
	// and it carries the client's acknowledgement of the CREATE TABLE answer
	// to the capture.
	write("CREATE DATABASE tt;\n" +
		"DO SLEEP(0.3);\n" +
		"CREATE TABLE tt.t (w INT NOT NULL, s INT NOT NULL, v VARCHAR(64) NOT NULL, PRIMARY KEY (w, s)) ENGINE=InnoDB;\n" +
		"SELECT 'schema-ready';\n")
	schema.waitOutput(t, "schema-ready")
	time.Sleep(20 * time.Millisecond)

	var workers []*realProc
	for w := 1; w <= mariadbWorkers; w++ {
		var q strings.Builder
		for s := 1; s <= mariadbRowsPerWorker; s++ {
			fmt.Fprintf(&q, "INSERT INTO tt.t VALUES (%d, %d, 'worker %d row %d');\n", w, s, w, s)
		}
		workers = append(workers, startProc(t, e.cli, fmt.Sprintf("mariadb worker %d", w), mariadbClientArgs("-e", q.String())...))
	}
	for _, p := range workers {
		if err := p.wait(t, realClientTimeout); err != nil || strings.TrimSpace(p.out.String()) != "" {
			t.Fatalf("%s: %v\n%s", p.name, err, p.out.String())
		}
	}
	if schema.exited() {
		t.Fatalf("the schema connection ended before the workers were done: %v\n%s", schema.err, schema.out.String())
	}
	// The workers have ended; the schema connection, still open, writes
	// the last row. (Nothing whose answer depends on the workers' progress,
	// such as a COUNT(*): a replay at another speed may answer it
	// differently, and the test would then be about that.)
	write("INSERT INTO tt.t VALUES (0, 1, 'schema connection, last');\n")
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := schema.wait(t, realClientTimeout); err != nil {
		t.Fatalf("schema connection: %v\n%s", err, schema.out.String())
	}
	if got := strings.TrimSpace(schema.out.String()); got != "schema-ready" {
		t.Fatalf("schema connection printed %q, want only \"schema-ready\"", got)
	}
}

// checkSchemaThenWorkersCapture checks that the capture holds the scenario
// the test is about: six sessions, the first to start is the last to end,
// and the five workers started after it and ended before it.
func checkSchemaThenWorkersCapture(t *testing.T, ss []*session.Session) {
	t.Helper()
	if len(ss) != 1+mariadbWorkers {
		t.Fatalf("%d sessions in the capture, want %d (the schema connection and %d workers)", len(ss), 1+mariadbWorkers, mariadbWorkers)
	}
	first := ss[0]
	for _, s := range ss {
		if s.StartOffset < first.StartOffset {
			first = s
		}
	}
	end := func(s *session.Session) time.Duration { return s.StartOffset + s.Duration }
	for _, s := range ss {
		if s == first {
			continue
		}
		if s.StartOffset <= first.StartOffset || end(s) >= end(first) {
			t.Errorf("worker session %s ran +%v..+%v, not inside the schema session %s's +%v..+%v",
				s.Client, s.StartOffset, end(s), first.Client, first.StartOffset, end(first))
		}
	}
	t.Logf("schema session %s: +%v..+%v; %d workers inside it", first.Client, first.StartOffset.Round(time.Millisecond), end(first).Round(time.Millisecond), len(ss)-1)
}

// mariadbServer runs mariadbd in the foreground on a fresh data directory,
// without grant tables (any user, no password: the replayed handshake's
// answer to another server's challenge is then accepted) and without name
// resolution (the replay's client addresses have no names).
type mariadbServer struct{}

func (mariadbServer) name() string { return "mariadb" }
func (mariadbServer) port() uint16 { return mariadbPort }

type mariadbInstance struct {
	proc *realProc
	ns   *tuntest.Netns
	sock string
}

func (mariadbServer) start(t *testing.T, e *realEnv, tag string) realInstance {
	t.Helper()
	dir := shortTempDir(t, "tcopytest-mariadb-")
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), realClientTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--skip-name-resolve", "--datadir="+data,
		// --force: no check that the host name resolves (a machine
		// without /etc/hosts fails it); the server runs without grants.
		"--force",
		"--user=root", "--auth-root-authentication-method=normal", "--skip-test-db",
		"--innodb-log-file-size=8M").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "mariadb.sock")
	p := startProc(t, e.srv, "mariadbd "+tag, "mariadbd", "--no-defaults",
		"--datadir="+data, "--socket="+sock, "--pid-file="+filepath.Join(dir, "mariadbd.pid"),
		"--tmpdir="+dir, "--bind-address="+realServerIP, "--port="+strconv.Itoa(mariadbPort),
		"--user=root", "--skip-grant-tables", "--skip-name-resolve", "--skip-ssl",
		"--performance-schema=OFF", "--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M")
	p.waitListening(t, e.srv, fmt.Sprintf("%s:%d", realServerIP, mariadbPort))
	return &mariadbInstance{proc: p, ns: e.srv, sock: sock}
}

// state reads, over the Unix socket (not captured, not replayed), whether
// the database and table exist, the rows per worker, a hash of every row in
// key order, CHECKSUM TABLE, and the statements and unclean ends the server
// counted. A query that fails is a line too ("error ..."), so a replay that
// lost the schema shows as a difference, not as a test error.
func (m *mariadbInstance) state(t *testing.T) []string {
	t.Helper()
	query := func(q string) (string, bool) {
		out, err := m.ns.Output("mariadb", "--no-defaults", "-S", m.sock, "-u", "root",
			"--batch", "--skip-column-names", "-e", q)
		if err != nil {
			return "error " + strings.Join(strings.Fields(out), " "), false
		}
		return strings.TrimSpace(out), true
	}
	var lines []string
	add := func(prefix, q string) {
		out, _ := query(q)
		for _, l := range strings.Split(out, "\n") {
			lines = append(lines, prefix+" "+strings.Join(strings.Fields(l), " "))
		}
	}
	add("schema", "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'tt'")
	add("count", "SELECT COUNT(*) FROM tt.t")
	add("worker", "SELECT w, COUNT(*), MIN(s), MAX(s) FROM tt.t GROUP BY w ORDER BY w")
	if rows, ok := query("SELECT w, s, v FROM tt.t ORDER BY w, s"); ok {
		h := sha256.Sum256([]byte(rows))
		lines = append(lines, "rows sha256 "+hex.EncodeToString(h[:8]))
	} else {
		lines = append(lines, "rows "+rows)
	}
	add("checksum", "CHECKSUM TABLE tt.t")
	add("status", "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_create_db', 'Com_create_table', 'Com_insert', 'Aborted_clients')")
	if err := m.proc.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("mariadbd exit: %v", err)
	}
	return sortedLines(strings.Join(lines, "\n"))
}

// allowQuitRaces is, for the MySQL protocol, what checkReport's closeRace
// is for HTTP: the client sends COM_QUIT and closes at once, the server
// closes as soon as it has read it, so which FIN comes first depends on
// scheduling, in the capture as in the replay. It marks such sessions as
// ended as captured, in r, and returns how many there were.
func allowQuitRaces(r *realReport, ss []*session.Session) int {
	fins := map[string]bool{session.EndClientFIN.String(): true, session.EndServerFIN.String(): true}
	n := 0
	for i := range r.Sessions {
		row := &r.Sessions[i]
		if row.ID >= uint64(len(ss)) || row.EndReplayed == row.EndCaptured || !fins[row.EndCaptured] || !fins[row.EndReplayed] {
			continue
		}
		if cs := ss[row.ID]; len(cs.Chunks) > 0 && bytes.HasSuffix(cs.Chunks[len(cs.Chunks)-1].Data, mysqlQuit) {
			row.EndReplayed = row.EndCaptured
			r.Totals.EndMismatch--
			n++
		}
	}
	return n
}

// mysqlQuit is a COM_QUIT packet: payload length 1, sequence 0, command 1.
var mysqlQuit = []byte{1, 0, 0, 0, 1}

// checkMatch accepts every match class: each answer of a replayed session
// differs from the capture (the greeting carries a connection id and a
// random challenge), and the server's state is what the test compares.
func (mariadbServer) checkMatch(*session.Session, string) error { return nil }
