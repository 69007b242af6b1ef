// Command client is the due-side load generator of the Switchyard benchmark harness, written in the
// style of due's own benchmark client: due's client component (cluster/client) over due's TCP or
// WebSocket network client, N connections, requests pushed without waiting for answers (pipelined),
// answers counted in a route handler. On top of due's style it bounds the requests in flight per
// connection (-pipeline, 0 = unbounded as in due's benchmark), records each request's latency by seq in
// an HDR histogram, checks every answer ({"code":0,"message":<the letters sent>}) and prints the same
// JSON report as `switchyard bench --json`, so the harness reads both clients the same way.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/dobyte/due/v2/cluster"
	"github.com/dobyte/due/v2/cluster/client"
	"github.com/dobyte/due/v2/encoding"
	"github.com/dobyte/due/v2/network"

	"switchyard.bench/due/internal/duever"
	"switchyard.bench/due/internal/packetcfg"
)

const maxLatencyMicros = 3_600_000_000

type echoReq struct {
	Message string `json:"message"`
}

type echoRes struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// latency mirrors switchyard bench's LatencyMicros.
type latency struct {
	Min  int64   `json:"min"`
	Mean float64 `json:"mean"`
	P50  int64   `json:"p50"`
	P90  int64   `json:"p90"`
	P99  int64   `json:"p99"`
	P999 int64   `json:"p999"`
	Max  int64   `json:"max"`
}

// report mirrors switchyard bench's BenchReport (same field names and meanings).
type report struct {
	Transport         string  `json:"transport"`
	Target            string  `json:"target"`
	Connections       int     `json:"connections"`
	Pipeline          int     `json:"pipeline"`
	PayloadBytes      int     `json:"payload_bytes"`
	RequestBytes      int     `json:"request_bytes"`
	RequestsOK        uint64  `json:"requests_ok"`
	Errors            uint64  `json:"errors"`
	Timeouts          uint64  `json:"timeouts"`
	Reconnects        uint64  `json:"reconnects"`
	ConnectionsLost   uint64  `json:"connections_lost"`
	UnexpectedPackets uint64  `json:"unexpected_packets"`
	ElapsedSecs       float64 `json:"elapsed_secs"`
	TPS               float64 `json:"tps"`
	LatencyUs         latency `json:"latency_us"`
	Client            string  `json:"client"`
}

type flight struct {
	start   time.Time
	counted bool
}

// connState is what one connection tracks; its handler and its sender share it under mu.
type connState struct {
	conn     *client.Conn
	sem      chan struct{} // nil: unbounded pipeline
	mu       sync.Mutex
	inflight map[int32]flight
	nextSeq  int32
	maxSeq   int32
	hist     *hdrhistogram.Histogram
	ok       uint64
	errors   uint64
	unexpect uint64
	lastDone time.Time
}

func (s *connState) allocSeq() int32 {
	for {
		seq := s.nextSeq
		if s.nextSeq >= s.maxSeq {
			s.nextSeq = 1
		} else {
			s.nextSeq++
		}
		if _, busy := s.inflight[seq]; !busy {
			return seq
		}
	}
}

// plan is shared by every connection: phases and the request budget.
type plan struct {
	measureStart time.Time
	deadline     time.Time // zero: request mode
	budget       atomic.Int64
	claimed      atomic.Int64 // counted requests sent
	answered     atomic.Int64 // counted requests answered (ok or error)
	progress     atomic.Int64 // unix nanos of the last answer of any kind
	message      string
}

// claim says whether another request may be sent now, and whether it counts.
func (p *plan) claim(now time.Time) (send, counted bool) {
	if now.Before(p.measureStart) {
		return true, false
	}
	if !p.deadline.IsZero() {
		if now.Before(p.deadline) {
			p.claimed.Add(1)
			return true, true
		}
		return false, false
	}
	if p.budget.Add(-1) >= 0 {
		p.claimed.Add(1)
		return true, true
	}
	return false, false
}

var (
	states   sync.Map // conn ID -> *connState
	thePlan  = &plan{}
	doneOnce = make(chan struct{})
)

func onEcho(ctx *client.Context) {
	v, ok := states.Load(ctx.CID())
	if !ok {
		return
	}
	st := v.(*connState)
	res := echoRes{}
	parseErr := ctx.Parse(&res)
	now := time.Now()
	thePlan.progress.Store(now.UnixNano())

	st.mu.Lock()
	f, found := st.inflight[ctx.Seq()]
	if !found {
		st.unexpect++
		st.mu.Unlock()
		return
	}
	delete(st.inflight, ctx.Seq())
	if f.counted {
		st.lastDone = now
		if parseErr == nil && res.Code == 0 && res.Message == thePlan.message {
			st.ok++
			us := now.Sub(f.start).Microseconds()
			if us < 1 {
				us = 1
			}
			_ = st.hist.RecordValue(min(us, maxLatencyMicros))
		} else {
			st.errors++
		}
	}
	st.mu.Unlock()
	if st.sem != nil {
		<-st.sem
	}
	if f.counted {
		thePlan.answered.Add(1)
	}
}

func send(st *connState, route int32, req *echoReq, stop <-chan struct{}) {
	for {
		if st.sem != nil {
			select {
			case st.sem <- struct{}{}:
			case <-stop:
				return
			}
		}
		now := time.Now()
		ok, counted := thePlan.claim(now)
		if !ok {
			return
		}
		st.mu.Lock()
		seq := st.allocSeq()
		st.inflight[seq] = flight{start: now, counted: counted}
		st.mu.Unlock()
		if err := st.conn.Push(&cluster.Message{Route: route, Seq: seq, Data: req}); err != nil {
			fmt.Fprintf(os.Stderr, "push failed: %v\n", err)
			return
		}
	}
}

func main() {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	common := packetcfg.Register(fs)
	addr := fs.String("addr", "127.0.0.1:3553", "gate address host:port")
	transport := fs.String("transport", "tcp", "tcp or ws")
	wsPath := fs.String("ws-path", "/", "WebSocket path")
	conns := fs.Int("connections", 50, "connections to open")
	pipeline := fs.Int("pipeline", 1, "requests kept in flight per connection (0: unbounded, as due's benchmark)")
	payloadBytes := fs.Int("payload-bytes", 1024, "letters in the echoed message")
	requests := fs.Int64("requests", 0, "counted requests in total (0: use -duration)")
	duration := fs.Float64("duration", 10, "seconds of measurement when -requests is 0")
	route := fs.Int("route", 1, "echo route")
	timeoutMs := fs.Int("timeout-ms", 5000, "give up when no answer arrives for this long (the rest are timeouts)")
	warmup := fs.Float64("warmup-secs", 1, "seconds of load before measuring (not counted)")
	jsonOut := fs.Bool("json", false, "print the report as one JSON line")
	_ = fs.Parse(os.Args[1:])
	common.Apply()
	if *conns < 1 || *pipeline < 0 {
		packetcfg.Fail("client: -connections must be >= 1 and -pipeline >= 0")
	}

	var (
		netClient network.Client
		target    string
	)
	switch *transport {
	case "tcp":
		target = *addr
		netClient = duever.TCPClient(target, time.Duration(*timeoutMs)*time.Millisecond)
	case "ws":
		path := *wsPath
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		target = "ws://" + *addr + path
		netClient = duever.WSClient(target, time.Duration(*timeoutMs)*time.Millisecond)
	default:
		packetcfg.Fail("client: -transport must be tcp or ws")
	}

	letters := make([]byte, *payloadBytes)
	for i := range letters {
		letters[i] = byte('a' + i%26)
	}
	thePlan.message = string(letters)
	req := &echoReq{Message: thePlan.message}
	body, _ := json.Marshal(req)
	requestBytes := 4 + 1 + common.RouteBytes + common.SeqBytes + len(body)

	component := client.NewClient(
		client.WithClient(netClient),
		client.WithCodec(encoding.Invoke("json")),
	)
	proxy := component.Proxy()
	proxy.AddRouteHandler(int32(*route), onEcho)
	component.Init()
	component.Start()

	maxSeq := int32(math.MaxInt32)
	switch common.SeqBytes {
	case 1:
		maxSeq = math.MaxInt8
	case 2:
		maxSeq = math.MaxInt16
	}
	all := make([]*connState, 0, *conns)
	for i := 0; i < *conns; i++ {
		conn, err := proxy.Dial()
		if err != nil {
			packetcfg.Fail("client: could not open the connections: %v", err)
		}
		hist := hdrhistogram.New(1, maxLatencyMicros, 3)
		st := &connState{conn: conn, inflight: make(map[int32]flight), nextSeq: 1, maxSeq: maxSeq, hist: hist}
		if *pipeline > 0 {
			st.sem = make(chan struct{}, *pipeline)
		}
		states.Store(conn.ID(), st)
		all = append(all, st)
	}

	start := time.Now()
	thePlan.measureStart = start.Add(time.Duration(*warmup * float64(time.Second)))
	if *requests > 0 {
		thePlan.budget.Store(*requests)
	} else {
		thePlan.deadline = thePlan.measureStart.Add(time.Duration(*duration * float64(time.Second)))
	}
	thePlan.progress.Store(start.UnixNano())
	stop := make(chan struct{})
	for _, st := range all {
		go send(st, int32(*route), req, stop)
	}

	// Wait until every counted request is answered, or no answer came for the timeout.
	timeout := time.Duration(*timeoutMs) * time.Millisecond
	var timedOut bool
	for {
		time.Sleep(2 * time.Millisecond)
		now := time.Now()
		sendingOver := (*requests > 0 && thePlan.budget.Load() <= 0) ||
			(!thePlan.deadline.IsZero() && now.After(thePlan.deadline))
		if sendingOver && thePlan.answered.Load() >= thePlan.claimed.Load() {
			break
		}
		if now.Sub(time.Unix(0, thePlan.progress.Load())) > timeout {
			timedOut = true
			break
		}
	}
	close(stop)

	rep := report{
		Transport: *transport, Target: target, Connections: *conns, Pipeline: *pipeline,
		PayloadBytes: *payloadBytes, RequestBytes: requestBytes, Client: "due",
	}
	total := hdrhistogram.New(1, maxLatencyMicros, 3)
	var lastDone time.Time
	for _, st := range all {
		st.mu.Lock()
		total.Merge(st.hist)
		rep.RequestsOK += st.ok
		rep.Errors += st.errors
		rep.UnexpectedPackets += st.unexpect
		if timedOut {
			for _, f := range st.inflight {
				if f.counted {
					rep.Timeouts++
				}
			}
		}
		if st.lastDone.After(lastDone) {
			lastDone = st.lastDone
		}
		st.mu.Unlock()
	}
	if !lastDone.IsZero() {
		rep.ElapsedSecs = lastDone.Sub(thePlan.measureStart).Seconds()
	}
	if rep.ElapsedSecs > 0 {
		rep.TPS = float64(rep.RequestsOK) / rep.ElapsedSecs
	}
	if total.TotalCount() > 0 {
		rep.LatencyUs = latency{
			Min: total.Min(), Mean: total.Mean(), P50: total.ValueAtQuantile(50), P90: total.ValueAtQuantile(90),
			P99: total.ValueAtQuantile(99), P999: total.ValueAtQuantile(99.9), Max: total.Max(),
		}
	}
	for _, st := range all {
		_ = st.conn.Close()
	}

	if *jsonOut {
		out, _ := json.Marshal(rep)
		fmt.Println(string(out))
	} else {
		fmt.Printf("target       %s %s\nconnections  %d x pipeline %d\npayload      %d letters (%d B per request)\n",
			rep.Transport, rep.Target, rep.Connections, rep.Pipeline, rep.PayloadBytes, rep.RequestBytes)
		fmt.Printf("requests     %d ok, %d errors, %d timeouts\nelapsed      %.3f s\nthroughput   %.1f requests/s\n",
			rep.RequestsOK, rep.Errors, rep.Timeouts, rep.ElapsedSecs, rep.TPS)
		l := rep.LatencyUs
		fmt.Printf("latency      p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms (mean %.3f ms)\n",
			float64(l.P50)/1000, float64(l.P90)/1000, float64(l.P99)/1000, float64(l.P999)/1000, float64(l.Max)/1000, l.Mean/1000)
	}
	if timedOut || rep.Errors > 0 {
		os.Exit(1)
	}
}
