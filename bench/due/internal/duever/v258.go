//go:build due258

package duever

import (
	"net/http"
	"time"

	"github.com/dobyte/due/network/tcp/v2"
	"github.com/dobyte/due/network/ws/v2"
	"github.com/dobyte/due/v2/network"
)

// Version is the due release this binary was built against.
const Version = "v2.5.8"

// TCPServer is due's TCP server with heartbeats off.
func TCPServer(s Servers) network.Server {
	return tcp.NewServer(
		tcp.WithServerAddr(s.Addr),
		tcp.WithServerMaxConnNum(s.MaxConns),
		tcp.WithServerHeartbeatInterval(0),
	)
}

// WSServer is due's WebSocket server with heartbeats off, accepting any origin (v2.5.8 has no handshake
// timeout option).
func WSServer(s Servers) network.Server {
	return ws.NewServer(
		ws.WithServerAddr(s.Addr),
		ws.WithServerPath(s.WSPath),
		ws.WithServerMaxConnNum(s.MaxConns),
		ws.WithServerHeartbeatInterval(0),
		ws.WithServerCheckOrigin(func(*http.Request) bool { return true }),
	)
}

// TCPClient is due's TCP client with heartbeats off; timeout bounds the dial (0: due's default).
func TCPClient(addr string, timeout time.Duration) network.Client {
	opts := []tcp.ClientOption{tcp.WithClientAddr(addr), tcp.WithClientHeartbeatInterval(0)}
	if timeout > 0 {
		opts = append(opts, tcp.WithClientDialTimeout(timeout))
	}
	return tcp.NewClient(opts...)
}

// WSClient is due's WebSocket client with heartbeats off; timeout bounds the dial (0: due's default).
func WSClient(url string, timeout time.Duration) network.Client {
	opts := []ws.ClientOption{ws.WithClientUrl(url), ws.WithClientHeartbeatInterval(0)}
	if timeout > 0 {
		opts = append(opts, ws.WithClientDialTimeout(timeout))
	}
	return ws.NewClient(opts...)
}
