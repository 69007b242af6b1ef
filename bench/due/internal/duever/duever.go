// Package duever hides the option names that differ between the due versions the harness builds: v2.4.2
// (the default, from the module proxy, go.mod) and v2.5.8 (build tag due258, built against a due source
// tree by bench/run.py). v2.5.8 renamed the listen and dial options and dropped the WebSocket server's
// handshake timeout; everything else the harness programs use is the same in both.
package duever

import "time"

// Servers are the gate's client-facing server settings.
type Servers struct {
	Addr             string
	WSPath           string
	MaxConns         int
	HandshakeTimeout time.Duration // WebSocket only; v2.5.8 has no such option and ignores it
}
