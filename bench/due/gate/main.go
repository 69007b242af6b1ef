// Command gate is a due v2.4.2 gate for the Switchyard benchmark harness: one network server (TCP or
// WebSocket) with heartbeats off, etcd as registry, Redis as locator, due's packet settings from flags.
//
// due's gate component takes one network server, so the harness starts one gate process per transport.
package main

import (
	"flag"
	"net/http"
	"os"
	"time"

	"github.com/dobyte/due/locate/redis/v2"
	"github.com/dobyte/due/network/tcp/v2"
	"github.com/dobyte/due/network/ws/v2"
	"github.com/dobyte/due/registry/etcd/v2"
	"github.com/dobyte/due/v2"
	"github.com/dobyte/due/v2/cluster/gate"
	"github.com/dobyte/due/v2/network"

	"switchyard.bench/due/internal/packetcfg"
)

func main() {
	fs := flag.NewFlagSet("gate", flag.ExitOnError)
	common := packetcfg.Register(fs)
	transport := fs.String("transport", "tcp", "client transport: tcp or ws")
	addr := fs.String("addr", "127.0.0.1:3553", "client listen address")
	wsPath := fs.String("ws-path", "/", "WebSocket upgrade path")
	link := fs.String("link", "127.0.0.1:0", "gate link (gate<->node) listen address")
	maxConns := fs.Int("max-conns", 100000, "maximum client connections (due's default is 5000)")
	etcdAddr := fs.String("etcd", "127.0.0.1:2379", "etcd address (registry)")
	namespace := fs.String("namespace", "services", "etcd registry namespace")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address (locator)")
	prefix := fs.String("redis-prefix", "due:locate", "Redis locator key prefix")
	id := fs.String("id", "", "instance id (default: random)")
	_ = fs.Parse(os.Args[1:])
	common.Apply()

	var server network.Server
	switch *transport {
	case "tcp":
		server = tcp.NewServer(
			tcp.WithServerListenAddr(*addr),
			tcp.WithServerMaxConnNum(*maxConns),
			tcp.WithServerHeartbeatInterval(0),
		)
	case "ws":
		server = ws.NewServer(
			ws.WithServerListenAddr(*addr),
			ws.WithServerPath(*wsPath),
			ws.WithServerMaxConnNum(*maxConns),
			ws.WithServerHeartbeatInterval(0),
			ws.WithServerCheckOrigin(func(*http.Request) bool { return true }),
			ws.WithServerHandshakeTimeout(10*time.Second),
		)
	default:
		packetcfg.Fail("gate: -transport must be tcp or ws, not %q", *transport)
	}

	opts := []gate.Option{
		gate.WithAddr(*link),
		gate.WithServer(server),
		gate.WithLocator(redis.NewLocator(redis.WithAddrs(*redisAddr), redis.WithPrefix(*prefix))),
		gate.WithRegistry(etcd.NewRegistry(etcd.WithAddrs(*etcdAddr), etcd.WithNamespace(*namespace))),
	}
	if *id != "" {
		opts = append(opts, gate.WithID(*id))
	}

	container := due.NewContainer()
	container.Add(gate.NewGate(opts...))
	container.Serve()
}
