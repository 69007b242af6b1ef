// Command relay is the "gate" of the harness's plain-relay ceiling: for every client connection it opens
// one TCP connection to the upstream (the echo server) and moves bytes both ways, doing no protocol work.
// TCP clients are relayed through a 64 KiB buffer per direction, one read and one write per batch
// (-splice uses io.Copy, which splices in the kernel; on loopback both measured the same). WebSocket
// clients: gorilla/websocket (the library due's ws network uses) does the handshake; then each binary
// frame's payload (one whole packet) is unmasked and written upstream, and the upstream byte stream is cut
// at packet boundaries (the size field only) into one binary frame each, batching whatever arrived
// together into one write.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

var (
	upstream string
	splice   bool
)

// copyStream moves bytes from src to dst: with io.Copy (kernel splice between TCP sockets) or through a
// 64 KiB user-space buffer, one read and one write per batch.
func copyStream(dst, src net.Conn) {
	if splice {
		io.Copy(dst, src)
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func relayTCP(client net.Conn) {
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		client.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { copyStream(up, client); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { copyStream(client, up); client.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
	client.Close()
	up.Close()
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// relayWS lets gorilla/websocket do the handshake, then moves frames itself on the raw connection so that
// both directions batch like the TCP path: everything read in one go is written in one go.
func relayWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	raw := ws.UnderlyingConn()
	defer raw.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	go clientToUpstream(raw, up)
	upstreamToClient(up, raw)
}

// clientToUpstream unmasks each client frame's payload (one whole packet) into the upstream stream.
func clientToUpstream(raw, up net.Conn) {
	defer up.Close()
	br := bufio.NewReaderSize(raw, 64<<10)
	bw := bufio.NewWriterSize(up, 64<<10)
	var hdr [14]byte
	buf := make([]byte, 0, 4096)
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		opcode := hdr[0] & 0x0f
		masked := hdr[1]&0x80 != 0
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(br, hdr[2:10]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		var mask [4]byte
		if masked {
			if _, err := io.ReadFull(br, mask[:]); err != nil {
				return
			}
		}
		if n > 1<<20 {
			return
		}
		if uint64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		if masked {
			for i := range buf {
				buf[i] ^= mask[i&3]
			}
		}
		switch opcode {
		case 0x8: // close
			return
		case 0x2, 0x0: // binary (and continuation: the benchmark never fragments)
			bw.Write(buf)
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

// upstreamToClient cuts the upstream stream at packet boundaries (size field only) and sends each
// packet as one unmasked binary frame.
func upstreamToClient(up, raw net.Conn) {
	br := bufio.NewReaderSize(up, 64<<10)
	bw := bufio.NewWriterSize(raw, 64<<10)
	var size [4]byte
	var hdr [10]byte
	for {
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(size[:]))
		total := n + 4
		hdr[0] = 0x82 // FIN + binary
		h := 2
		switch {
		case total < 126:
			hdr[1] = byte(total)
		case total <= 0xffff:
			hdr[1] = 126
			binary.BigEndian.PutUint16(hdr[2:4], uint16(total))
			h = 4
		default:
			hdr[1] = 127
			binary.BigEndian.PutUint64(hdr[2:10], uint64(total))
			h = 10
		}
		bw.Write(hdr[:h])
		bw.Write(size[:])
		if _, err := io.CopyN(bw, br, int64(n)); err != nil {
			return
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

func main() {
	tcpAddr := flag.String("tcp", "127.0.0.1:3563", "TCP listen address (empty: off)")
	wsAddr := flag.String("ws", "127.0.0.1:3564", "WebSocket listen address (empty: off)")
	flag.StringVar(&upstream, "upstream", "127.0.0.1:7600", "echo server address")
	flag.BoolVar(&splice, "splice", false, "TCP: relay with io.Copy (splice) instead of a user-space buffer")
	flag.Parse()
	if *wsAddr != "" {
		ln, err := net.Listen("tcp", *wsAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "relay: %v\n", err)
			os.Exit(1)
		}
		go http.Serve(ln, http.HandlerFunc(relayWS))
		fmt.Printf("relay ws on %s -> %s\n", ln.Addr(), upstream)
	}
	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "relay: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("relay tcp on %s -> %s\n", ln.Addr(), upstream)
		for {
			c, err := ln.Accept()
			if err != nil {
				continue
			}
			go relayTCP(c)
		}
	}
	select {}
}
