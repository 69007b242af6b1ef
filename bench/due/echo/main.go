// Command echo is the "node" of the harness's plain-relay ceiling: a TCP server that frames due packets
// (size u32 big-endian, then header, route, seq, body) and answers each data packet at once with the
// same header, route and seq and the body turned from {"message":...} into {"code":0,"message":...} by
// splicing the 9 bytes `"code":0,` after the opening brace. No JSON is parsed and nothing is routed: it
// is the least work that still gives a client the answer the echo route gives.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

var codeField = []byte(`"code":0,`)

func serve(conn net.Conn, hdrLen int) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriterSize(conn, 64<<10)
	var size [4]byte
	body := make([]byte, 0, 4096)
	for {
		if _, err := io.ReadFull(r, size[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(size[:]))
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		heartbeat := n > 0 && body[0]&0x80 != 0
		switch {
		case n == 0 || heartbeat:
			// no answer: heartbeats are off in the benchmark
		case n > hdrLen && body[hdrLen] == '{':
			binary.BigEndian.PutUint32(size[:], uint32(n+len(codeField)))
			w.Write(size[:])
			w.Write(body[:hdrLen+1])
			w.Write(codeField)
			w.Write(body[hdrLen+1:])
		default:
			w.Write(size[:])
			w.Write(body)
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:7600", "listen address")
	routeBytes := flag.Int("route-bytes", 4, "route field width")
	seqBytes := flag.Int("seq-bytes", 4, "seq field width")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo: %v\n", err)
		os.Exit(1)
	}
	hdrLen := 1 + *routeBytes + *seqBytes
	fmt.Printf("echo listening on %s\n", ln.Addr())
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		go serve(conn, hdrLen)
	}
}
