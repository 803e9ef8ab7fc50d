// Command tcopy-tun replays captured TCP sessions against a live target on one
// host. See the README for usage; `tcopy-tun help` lists the commands.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// Exit codes. They are part of the command's interface (README, "Exit codes").
const (
	exitOK       = 0 // everything asked for was done
	exitFailure  = 1 // the run completed but some sessions failed, requests regressed from --baseline, the target was slower than --fail-slower allows, or a runtime error
	exitUsage    = 2 // bad flags or arguments, or an output file that cannot be created
	exitInput    = 3 // the capture could not be read or holds nothing to replay
	exitPriv     = 4 // missing privileges (CAP_NET_ADMIN) or host setup failed
	exitSignaled = 5 // interrupted by SIGINT/SIGTERM; the report was still written
)

// env is what a command needs from the process: argument list and streams.
// Commands never touch os.Stdout etc. directly, so tests can run them in
// process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// log receives the command's messages (see log.go); nil: text on
	// stderr.
	log *slog.Logger
}

func main() {
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(run(e, os.Args[1:]))
}

func run(e env, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "inspect":
			return runInspect(e, args[1:])
		case "demo":
			return runDemo(e, args[1:])
		case "help", "-h", "-help", "--help":
			usage(e.stdout)
			fmt.Fprintln(e.stdout)
			parseReplayFlags([]string{"--help"}, e.stdout)
			return exitOK
		}
	}
	return runReplay(e, args)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `tcopy-tun copies captured TCP sessions onto a live test server, on one host.

usage:
  tcopy-tun --pcap FILE|- --target HOST:PORT [flags] replay a capture (root or CAP_NET_ADMIN)
  tcopy-tun --live IFACE --target HOST:PORT [flags]  copy live traffic from an interface
  tcopy-tun --pcap-listen ADDR --target HOST:PORT    copy what capture agents on other hosts
                                                      stream (tcpdump -U --immediate-mode -w - | nc -N HOST PORT)
  tcopy-tun inspect [-v] [--json] FILE|-             list what a capture holds (no privileges)
  tcopy-tun demo                                      replay the bundled capture against a bundled
                                                      server in a private network namespace
  tcopy-tun help                                      this text

Exit codes: 0 every session succeeded; 1 some failed (or a runtime error);
2 bad flags, or an output file that cannot be created; 3 unreadable capture
or nothing to replay; 4 missing privileges or host setup refused;
5 interrupted (the report and the pcap are still written).
`)
}
