package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tcopy-tun/tcopy-tun/intercept"
)

// outputs are the files a replay writes. Each is opened (created) before
// anything is set up or sent, so that a path that cannot be written fails
// at once instead of after the whole replay, and each is written when the
// run ends, also when it was interrupted.
//
// A new output is one line in outputFlags (which opens it first) and one in
// writeOutputs (which writes it when the run ends); an output written as the
// run goes is opened the same way and written like the pcap.
type outputs struct {
	files map[string]*outFile // by flag name
	pcap  *intercept.PcapWriter
}

// outputFlags lists the output flags and their file names (empty: not asked
// for). "-" is standard output.
func outputFlags(f *replayFlags) []outputFlag {
	return []outputFlag{
		{"--report", f.report},
		{"--html", f.html},
		{"--write-pcap", f.writePcap},
	}
}

type outputFlag struct{ flag, name string }

type outFile struct {
	flag, name string
	w          io.Writer // the file, or standard output
	f          *os.File  // nil for standard output
	created    bool      // the file did not exist before: removed if the run fails before writing it
	written    bool
}

// openOutputs opens every output file asked for. A file is created if it
// does not exist; an existing one is truncated only when written (write),
// so a run that fails before that leaves it as it was. On error nothing is
// left open or created.
func openOutputs(e env, f *replayFlags) (*outputs, error) {
	o := &outputs{files: map[string]*outFile{}}
	seen := map[string]string{}
	for _, of := range outputFlags(f) {
		if of.name == "" {
			continue
		}
		if of.name == "-" {
			o.files[of.flag] = &outFile{flag: of.flag, name: of.name, w: e.stdout}
			continue
		}
		abs, err := filepath.Abs(of.name)
		if err != nil {
			o.discard()
			return nil, fmt.Errorf("%s %q: %w", of.flag, of.name, err)
		}
		if other, ok := seen[abs]; ok {
			o.discard()
			return nil, fmt.Errorf("%s and %s name the same file %q", other, of.flag, of.name)
		}
		seen[abs] = of.flag
		_, statErr := os.Stat(of.name)
		file, err := os.OpenFile(of.name, os.O_WRONLY|os.O_CREATE, 0o666) // as os.Create: the umask decides
		if err != nil {
			o.discard()
			return nil, fmt.Errorf("%s: %w", of.flag, err)
		}
		o.files[of.flag] = &outFile{flag: of.flag, name: of.name, w: file, f: file, created: os.IsNotExist(statErr)}
	}
	if out := o.files["--write-pcap"]; out != nil {
		// The capture is written as the run goes, from its first packet.
		if err := out.truncate(); err != nil {
			o.discard()
			return nil, err
		}
		pw, err := intercept.NewPcapWriter(out.w, intercept.PcapOptions{Interface: f.tunName, SnapLen: f.pcapSnap})
		if err != nil {
			o.discard()
			return nil, fmt.Errorf("--write-pcap %q: %w", out.name, err)
		}
		o.pcap = pw
	}
	return o, nil
}

// writeOutputs writes the outputs that are made when the run has ended
// (also after an interrupt), in order; the first error stops it.
func writeOutputs(o *outputs, res *runResult) error {
	if err := o.write("--report", res.report.out.WriteJSON); err != nil {
		return err
	}
	if err := o.write("--html", writeHTML(res.report)); err != nil {
		return err
	}
	return nil
}

// truncate empties a regular file before it is first written (a pipe or a
// device has nothing to truncate).
func (of *outFile) truncate() error {
	if of.written {
		return nil
	}
	of.written = true
	if of.f == nil {
		return nil
	}
	if st, err := of.f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil
	}
	if err := of.f.Truncate(0); err != nil {
		return fmt.Errorf("%s %q: %w", of.flag, of.name, err)
	}
	return nil
}

// write writes the output of flag with fn and closes its file (nothing when
// flag was not asked for).
func (o *outputs) write(flag string, fn func(w io.Writer) error) error {
	of := o.files[flag]
	if of == nil {
		return nil
	}
	if err := of.truncate(); err != nil {
		return err
	}
	err := fn(of.w)
	if err == nil && of.f != nil {
		err = of.f.Close()
		of.f = nil
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", flag, of.name, err)
	}
	return nil
}

// closePcap flushes and closes the capture once the stack that fed it is
// gone. It returns the capture's counters.
func (o *outputs) closePcap() (intercept.PcapStats, error) {
	if o.pcap == nil {
		return intercept.PcapStats{}, nil
	}
	of := o.files["--write-pcap"]
	err := o.pcap.Close()
	s := o.pcap.Stats()
	if of.f != nil {
		if cerr := of.f.Close(); err == nil {
			err = cerr
		}
		of.f = nil
	}
	if err != nil {
		return s, fmt.Errorf("--write-pcap %q: %w", of.name, err)
	}
	return s, nil
}

// discard closes what is still open, and removes the files this run created
// and never wrote: a run that fails before replaying leaves no empty files
// behind. A capture that holds no packet counts as not written.
func (o *outputs) discard() {
	if o.pcap != nil {
		o.pcap.Close()
		if o.pcap.Stats().Packets == 0 {
			if of := o.files["--write-pcap"]; of != nil {
				of.written = false
			}
		}
	}
	for _, of := range o.files {
		if of.f == nil {
			continue
		}
		of.f.Close()
		of.f = nil
		if of.created && !of.written {
			os.Remove(of.name)
		}
	}
}
