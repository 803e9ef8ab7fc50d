package tlssession

import (
	"testing"
	"time"

	"github.com/tcopy-tun/tcopy-tun/replay/session"
	"github.com/tcopy-tun/tcopy-tun/replay/tlsdecrypt"
)

// TestPlainEnd: who closed first, by the close_notify alerts' capture
// times, where the TCP FINs say server-fin.
func TestPlainEnd(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	notify := func(client, server time.Duration, alerts ...bool) tlsdecrypt.Result {
		var r tlsdecrypt.Result
		for d, at := range []time.Duration{client, server} {
			if at >= 0 {
				r.Ended[d], r.AlertTime[d] = true, t0.Add(at)
				r.Alert[d] = [2]byte{1, 0} // warning, close_notify
				if len(alerts) > d && !alerts[d] {
					r.Alert[d] = [2]byte{2, 40} // fatal, handshake_failure
				}
			}
		}
		return r
	}
	for _, c := range []struct {
		name string
		end  session.End
		r    tlsdecrypt.Result
		want session.End
	}{
		{"client close_notify only", session.EndServerFIN, notify(0, -1), session.EndClientFIN},
		{"client's before server's", session.EndServerFIN, notify(0, time.Millisecond), session.EndClientFIN},
		{"server's before client's", session.EndServerFIN, notify(time.Millisecond, 0), session.EndServerFIN},
		{"client's alert is fatal", session.EndServerFIN, notify(0, -1, false), session.EndServerFIN},
		{"no alert", session.EndServerFIN, notify(-1, -1), session.EndServerFIN},
		{"server reset", session.EndServerRST, notify(0, -1), session.EndServerRST},
		{"client FIN", session.EndClientFIN, notify(time.Millisecond, 0), session.EndClientFIN},
	} {
		if got := plainEnd(c.end, &c.r); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
