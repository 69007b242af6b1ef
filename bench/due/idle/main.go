// Command idle opens many connections to a gate and keeps them open and silent (no data, no heartbeat),
// spreading them over several 127.x source addresses so no source runs out of ephemeral ports. It prints
// "ready <n>" when all are open, then holds them until its standard input closes or it is signalled.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3553", "gate address host:port")
	transport := flag.String("transport", "tcp", "tcp or ws")
	wsPath := flag.String("ws-path", "/", "WebSocket path")
	count := flag.Int("count", 1000, "connections to open")
	sources := flag.String("sources", "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5", "source addresses, comma-separated")
	parallel := flag.Int("parallel", 64, "connections opened at once")
	flag.Parse()

	srcs := strings.Split(*sources, ",")
	conns := make([]any, *count)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *count {
					return
				}
				local := &net.TCPAddr{IP: net.ParseIP(strings.TrimSpace(srcs[i%len(srcs)]))}
				dialer := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
				var err error
				switch *transport {
				case "tcp":
					conns[i], err = dialer.Dial("tcp", *addr)
				case "ws":
					d := websocket.Dialer{
						NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
							return dialer.DialContext(ctx, network, a)
						},
						HandshakeTimeout: 10 * time.Second,
						ReadBufferSize:   1024,
						WriteBufferSize:  1024,
					}
					var c *websocket.Conn
					var resp *http.Response
					c, resp, err = d.Dial("ws://"+*addr+*wsPath, nil)
					if resp != nil && resp.Body != nil {
						resp.Body.Close()
					}
					conns[i] = c
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	open := int64(*count) - failed.Load()
	if failed.Load() > 0 {
		fmt.Fprintf(os.Stderr, "idle: %d connections failed, first: %v\n", failed.Load(), firstErr.Load())
	}
	fmt.Printf("ready %d\n", open)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() {
		bufio.NewReader(os.Stdin).ReadString(0)
		close(eof)
	}()
	select {
	case <-sig:
	case <-eof:
	}
	_ = conns
}
