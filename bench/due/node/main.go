// Command node is a due node (v2.4.2, or v2.5.8 with the due258 build tag) for the Switchyard benchmark
// harness: route 1 is a stateless JSON echo, {"message": s} -> {"code":0,"message": s}, the handler of
// due's own benchmark and of Switchyard's demo node. etcd as registry, Redis as locator, JSON codec.
package main

import (
	"flag"
	"os"

	"github.com/dobyte/due/locate/redis/v2"
	"github.com/dobyte/due/registry/etcd/v2"
	"github.com/dobyte/due/v2"
	"github.com/dobyte/due/v2/cluster/node"
	"github.com/dobyte/due/v2/encoding"
	"github.com/dobyte/due/v2/log"

	"switchyard.bench/due/internal/packetcfg"
)

const echoRoute = 1

type echoReq struct {
	Message string `json:"message"`
}

type echoRes struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func echo(ctx node.Context) {
	req := &echoReq{}
	res := &echoRes{}
	if err := ctx.Parse(req); err != nil {
		res.Code = 1
	} else {
		res.Message = req.Message
	}
	if err := ctx.Response(res); err != nil {
		log.Errorf("response failed: %v", err)
	}
}

func main() {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	common := packetcfg.Register(fs)
	link := fs.String("link", "127.0.0.1:0", "node link (gate<->node) listen address")
	etcdAddr := fs.String("etcd", "127.0.0.1:2379", "etcd address (registry)")
	namespace := fs.String("namespace", "services", "etcd registry namespace")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address (locator)")
	prefix := fs.String("redis-prefix", "due:locate", "Redis locator key prefix")
	id := fs.String("id", "", "instance id (default: random)")
	_ = fs.Parse(os.Args[1:])
	common.Apply()
	packetcfg.FreeOSMemoryOnSignal()

	opts := []node.Option{
		node.WithAddr(*link),
		node.WithCodec(encoding.Invoke("json")),
		node.WithLocator(redis.NewLocator(redis.WithAddrs(*redisAddr), redis.WithPrefix(*prefix))),
		node.WithRegistry(etcd.NewRegistry(etcd.WithAddrs(*etcdAddr), etcd.WithNamespace(*namespace))),
	}
	if *id != "" {
		opts = append(opts, node.WithID(*id))
	}
	component := node.NewNode(opts...)
	component.Proxy().Router().AddRouteHandler(echoRoute, echo) // stateless, unauthorized

	container := due.NewContainer()
	container.Add(component)
	container.Serve()
}
