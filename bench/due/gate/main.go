// Command gate is a due gate (v2.4.2, or v2.5.8 with the due258 build tag) for the Switchyard benchmark harness: one network server (TCP or
// WebSocket) with heartbeats off, etcd as registry, Redis as locator, due's packet settings from flags.
//
// due's gate component takes one network server, so the harness starts one gate process per transport.
// SIGUSR1 forces a garbage collection and returns freed memory to the OS (the idle-memory test reads RSS
// as-is and after it).
package main

import (
	"flag"
	"os"
	"time"

	"github.com/dobyte/due/locate/redis/v2"
	"github.com/dobyte/due/registry/etcd/v2"
	"github.com/dobyte/due/v2"
	"github.com/dobyte/due/v2/cluster/gate"
	"github.com/dobyte/due/v2/network"

	"switchyard.bench/due/internal/duever"
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

	settings := duever.Servers{Addr: *addr, WSPath: *wsPath, MaxConns: *maxConns, HandshakeTimeout: 10 * time.Second}
	var server network.Server
	switch *transport {
	case "tcp":
		server = duever.TCPServer(settings)
	case "ws":
		server = duever.WSServer(settings)
	default:
		packetcfg.Fail("gate: -transport must be tcp or ws, not %q", *transport)
	}
	packetcfg.FreeOSMemoryOnSignal()

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
