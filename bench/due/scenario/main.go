// Command scenario drives due's own client (cluster/client over network/tcp or network/ws, JSON codec,
// due's packer) through the demo game of a Switchyard gate, as a due game client would: two players log
// in (route 2), join a room (route 4, stateful), ask whoami (route 3, stateful and authorized), and one
// says a line (route 5) that both receive as push 6 (seq 0). It prints one JSON line with what it saw
// and exits 0, or prints the first failure and exits 1. The regular test suite runs it against
// `switchyard dev` (tests/due_client.rs): it shows that due clients connect unchanged.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dobyte/due/v2/cluster"
	"github.com/dobyte/due/v2/cluster/client"
	"github.com/dobyte/due/v2/encoding"
	"github.com/dobyte/due/v2/network"

	"switchyard.bench/due/internal/duever"
	"switchyard.bench/due/internal/packetcfg"
)

// reply is one packet a player received: its route, seq and JSON body.
type reply struct {
	Route int32          `json:"route"`
	Seq   int32          `json:"seq"`
	Body  map[string]any `json:"body"`
}

// inbox maps a connection ID to its player's queue of received packets.
var inbox sync.Map

func onPacket(ctx *client.Context) {
	body := map[string]any{}
	if err := ctx.Parse(&body); err != nil {
		body = map[string]any{"parse_error": err.Error()}
	}
	if ch, ok := inbox.Load(ctx.CID()); ok {
		ch.(chan reply) <- reply{Route: ctx.Route(), Seq: ctx.Seq(), Body: body}
	}
}

type player struct {
	name  string
	uid   int
	conn  *client.Conn
	inbox chan reply
	held  []reply // received while waiting for something else
	seq   int32
}

// request sends body on route with the next seq and waits for the packet that answers it.
func (p *player) request(route int32, body any, timeout time.Duration) reply {
	p.seq++
	if err := p.conn.Push(&cluster.Message{Route: route, Seq: p.seq, Data: body}); err != nil {
		fail("%s: push route %d: %v", p.name, route, err)
	}
	return p.await(timeout, func(r reply) bool { return r.Route == route && r.Seq == p.seq })
}

// await returns the first received packet that matches (keeping the others for later), failing after
// timeout.
func (p *player) await(timeout time.Duration, match func(reply) bool) reply {
	for i, r := range p.held {
		if match(r) {
			p.held = append(p.held[:i], p.held[i+1:]...)
			return r
		}
	}
	deadline := time.After(timeout)
	for {
		select {
		case r := <-p.inbox:
			if match(r) {
				return r
			}
			p.held = append(p.held, r)
		case <-deadline:
			fail("%s: no answer within %v", p.name, timeout)
		}
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "scenario: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	fs := flag.NewFlagSet("scenario", flag.ExitOnError)
	common := packetcfg.Register(fs)
	addr := fs.String("addr", "127.0.0.1:3553", "gate address host:port")
	transport := fs.String("transport", "tcp", "tcp or ws")
	wsPath := fs.String("ws-path", "/", "WebSocket path")
	room := fs.String("room", "due-room", "room the players join")
	_ = fs.Parse(os.Args[1:])
	common.Apply()

	var netClient network.Client
	switch *transport {
	case "tcp":
		netClient = duever.TCPClient(*addr, 0)
	case "ws":
		path := *wsPath
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		netClient = duever.WSClient("ws://"+*addr+path, 0)
	default:
		packetcfg.Fail("scenario: -transport must be tcp or ws")
	}
	component := client.NewClient(client.WithClient(netClient), client.WithCodec(encoding.Invoke("json")))
	proxy := component.Proxy()
	for _, route := range []int32{2, 3, 4, 5, 6} {
		proxy.AddRouteHandler(route, onPacket)
	}
	component.Init()
	component.Start()

	players := []*player{{name: "ada", uid: 9001}, {name: "bob", uid: 9002}}
	for _, p := range players {
		conn, err := proxy.Dial()
		if err != nil {
			fail("%s: dial %s over %s: %v", p.name, *addr, *transport, err)
		}
		p.conn = conn
		p.inbox = make(chan reply, 64)
		inbox.Store(conn.ID(), p.inbox)
	}

	const wait = 5 * time.Second
	out := map[string]any{}
	for _, p := range players {
		out["login_"+p.name] = p.request(2, map[string]any{"uid": p.uid, "name": p.name}, wait).Body
		out["whoami_"+p.name] = p.request(3, map[string]any{}, wait).Body
		out["join_"+p.name] = p.request(4, map[string]any{"room": *room}, wait).Body
	}
	ada, bob := players[0], players[1]
	out["say"] = ada.request(5, map[string]any{"room": *room, "text": "hello from due"}, wait).Body
	isPush := func(r reply) bool { return r.Route == 6 && r.Seq == 0 }
	out["push_bob"] = bob.await(wait, isPush)
	out["push_ada"] = ada.await(wait, isPush)
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	for _, p := range players {
		_ = p.conn.Close()
	}
}
