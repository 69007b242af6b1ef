// Package packetcfg holds the settings every harness program shares: due's packet layout (byte order,
// route and seq widths, largest message) and run mode, set from flags before due starts. The log level
// comes from ../etc/etc.toml (DUE_ETC): due's log.SetLogger closes the previous logger's console
// writer, which is the process's standard output, so it cannot be replaced from code.
package packetcfg

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/dobyte/due/v2/mode"
	"github.com/dobyte/due/v2/packet"
)

// Flags are the packet and mode flags common to the due gate, node and client.
type Flags struct {
	RouteBytes  int
	SeqBytes    int
	BufferBytes int
	Mode        string
}

// Register adds the common flags to fs.
func Register(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.IntVar(&f.RouteBytes, "route-bytes", 4, "route field width (1, 2 or 4), due's benchmark uses 4")
	fs.IntVar(&f.SeqBytes, "seq-bytes", 4, "seq field width (0, 1, 2 or 4), due's benchmark uses 4")
	fs.IntVar(&f.BufferBytes, "buffer-bytes", 65536, "largest message body due packs (packet.bufferBytes)")
	fs.StringVar(&f.Mode, "mode", "release", "due run mode: debug (due's default, logs every packet at debug level), test, release")
	return f
}

// Apply installs the global packer and the run mode. Call it before creating any due component.
func (f *Flags) Apply() {
	mode.SetMode(f.Mode)
	packet.SetPacker(packet.NewPacker(
		packet.WithByteOrder(binary.BigEndian),
		packet.WithRouteBytes(f.RouteBytes),
		packet.WithSeqBytes(f.SeqBytes),
		packet.WithBufferBytes(f.BufferBytes),
		packet.WithHeartbeatTime(false),
	))
}

// Fail prints a message and exits with status 2.
func Fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(2)
}

// FreeOSMemoryOnSignal makes SIGUSR1 force a garbage collection and return freed memory to the OS
// (debug.FreeOSMemory), printing "freed" to standard error when done. The idle-memory test reads the
// gate's RSS as-is and after this, since Go keeps freed heap until its scavenger returns it.
func FreeOSMemoryOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			debug.FreeOSMemory()
			fmt.Fprintln(os.Stderr, "freed")
		}
	}()
}
