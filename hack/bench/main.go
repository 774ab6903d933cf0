//go:build linux

// Command bench measures WebSocket echo through hop against the same load
// sent straight to the echo upstream, and prints the ratio hop/direct; then
// across two hops, front → sidecar, over HTTP/1.1 and over HTTP/2, and
// prints the ratio h2hop/h1hop; then raw TCP tunnels through hop (HTTP/1.1
// and HTTP/2 CONNECT termination, tcp_proxy over HTTP/2 CONNECT) against a
// direct TCP connection to the same TCP echo (see tunnel.go).
//
//	go run ./hack/bench -hop ./bin/hop        # what `make bench` runs
//	go run ./hack/bench -hop ./bin/hop -two-hop none   # only direct and hop
//	go run ./hack/bench -hop ./bin/hop -websocket=false -rounds 3   # only the tunnels
//	go run ./hack/bench -hop ./bin/hop -tunnels h1connect,h2connect  # without tcp_proxy tunneling
//	go run ./hack/bench -direct-only          # no hop: exercise the client
//
// It starts the echo upstream (hack/echo/echoserver) in-process on loopback,
// writes a temporary Envoy v3 bootstrap (one HTTP listener with WebSocket
// upgrades routed to a STATIC cluster "echo"), starts `<hop> -c <file>
// --base-id 1`, waits for admin /ready, and then runs:
//
//   - idle: opens -idle WebSockets (handshake plus one 16-byte echo each) and
//     reports the wall time; through hop it also reads hop's VmRSS before and
//     after (each after -settle) and reports the growth per connection;
//   - throughput: -conns connections each send a 1 KiB (then 64 KiB) binary
//     message and wait for its echo, in a loop for -duration; it reports
//     messages/s, MB/s of payload echoed, and round-trip p50/p99 (1 KiB).
//
// The throughput cases also run against two more targets (see twohop.go),
// unless -two-hop says otherwise: "h1hop", a front hop (HTTP/1.1 listener)
// whose cluster reaches a sidecar hop (codec AUTO, allow_connect, routed to
// the echo) over HTTP/1.1, one connection per WebSocket; and "h2hop", the
// same over HTTP/2, every WebSocket an extended CONNECT stream (RFC 8441) on
// the front's multiplexed connection. The sidecar (--base-id 2) and the
// front (--base-id 3, one listener per variant) are two more hop processes,
// started like the first. The sidecar's request counters confirm each
// case's protocol, and the front's cluster counters show how many
// connections carried the WebSockets. -two-hop none skips them.
//
// The tunnel cases (-tunnels, all three by default; -websocket=false runs
// only them) start one more hop (--base-id 4) and measure, per case, bulk
// echo throughput, the CPU the bench and hop spent per byte, and tunnel
// setups per second. With h1connect it also measures the splice reference,
// a minimal CONNECT proxy that splices (see spliceref.go; -splice-ref=false
// skips it). h1connect's bulk throughput is held against 80 % of direct and
// the verdict printed, with h1connect's and the reference's ratios; it does
// not fail the run. -rounds repeats
// every target's runs in turn and sums them, which evens out a machine
// whose background load changes.
//
// Any other Envoy-compatible binary can stand in for hop. Everything runs on
// loopback and every wait is bounded. Linux only (/proc, prctl).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hopproxy/hop/hack/echo/echoserver"
)

func main() {
	maybeRunSpliceRef()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	hop        string
	directOnly bool
	duration   time.Duration
	conns      int
	idle       int
	settle     time.Duration
	opTimeout  time.Duration
	twoHop     []twoHopVariant
	websocket  bool
	tunnels    []tunnelCase
	spliceRef  bool
	h2Conns    int
	rounds     int
	json       bool
	verbose    bool
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.hop, "hop", "", "path to the hop binary (or any Envoy-compatible proxy)")
	fs.BoolVar(&o.directOnly, "direct-only", false, "skip hop: measure only the direct path")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each throughput case")
	fs.IntVar(&o.conns, "conns", 64, "concurrent connections in the throughput cases")
	fs.IntVar(&o.idle, "idle", 1000, "idle WebSockets opened for the RSS case")
	fs.DurationVar(&o.settle, "settle", time.Second, "pause before each RSS reading")
	fs.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "bound on each handshake and on the last round trip of a case")
	twoHop := fs.String("two-hop", "h1,h2", "front→sidecar variants to run: h1, h2, both (h1,h2) or none")
	fs.BoolVar(&o.websocket, "websocket", true, "run the WebSocket cases (idle, throughput, two-hop)")
	tunnels := fs.String("tunnels", "h1connect,h2connect,tcph2", "TCP tunnel cases to run: a list of h1connect, h2connect, tcph2, or none")
	fs.BoolVar(&o.spliceRef, "splice-ref", true, "with h1connect, also measure the splice reference: a minimal CONNECT proxy that splices (see spliceref.go)")
	fs.IntVar(&o.h2Conns, "h2-conns", 4, "HTTP/2 connections the h2connect client spreads its streams over")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds of the tunnel cases; each round runs every target once per metric, and rounds are summed")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	fs.BoolVar(&o.verbose, "v", false, "copy hop's output to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.twoHop, err = parseTwoHop(*twoHop); err != nil {
		return o, err
	}
	if o.tunnels, err = parseTunnels(*tunnels); err != nil {
		return o, err
	}
	if o.directOnly || !o.websocket {
		o.twoHop = nil
	}
	o.spliceRef = o.spliceRef && !o.directOnly && slices.Contains(o.tunnels, caseH1Connect)
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	case o.hop == "" && !o.directOnly:
		return o, errors.New("bench: -hop <path> is required (or -direct-only)")
	case o.duration <= 0 || o.settle < 0 || o.opTimeout <= 0:
		return o, errors.New("bench: -duration and -op-timeout must be positive, -settle not negative")
	case o.conns < 1 || o.idle < 1 || o.h2Conns < 1 || o.rounds < 1:
		return o, errors.New("bench: -conns, -idle, -h2-conns and -rounds must be at least 1")
	case !o.websocket && len(o.tunnels) == 0:
		return o, errors.New("bench: nothing to run: -websocket=false and -tunnels none")
	}
	return o, nil
}

// throughputCases are the message sizes measured, in order.
var throughputCases = []struct {
	key   string
	label string
	size  int
}{
	{"1k", "1 KiB", 1 << 10},
	{"64k", "64 KiB", 64 << 10},
}

// run is the whole program; main only adds signals and the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "bench")

	// Bound the whole run: every case, the settles, and generous slack.
	var runs int
	if o.websocket {
		runs += len(throughputCases) * (2 + len(o.twoHop))
	}
	if len(o.tunnels) > 0 {
		runs += 2 * o.rounds * (1 + len(o.tunnels)) // bulk and setups, direct and each case
		if o.spliceRef {
			runs += 2 * o.rounds
		}
	}
	budget := time.Duration(runs)*(o.duration+o.opTimeout) + 2*o.settle + 2*time.Minute
	ctx, cancel := context.WithTimeoutCause(ctx, budget, fmt.Errorf("bench: the run took longer than %v", budget))
	defer cancel()

	if err := raiseNoFile(uint64(2*o.idle + 4*o.conns + 256)); err != nil {
		return err
	}
	var verbose io.Writer
	if o.verbose {
		verbose = stderr
	}

	rep := newReport(o)
	if o.websocket {
		if err := runWebSocketCases(ctx, o, verbose, log, rep); err != nil {
			return err
		}
	}
	if len(o.tunnels) > 0 {
		if err := runTunnelCases(ctx, o, verbose, log, rep); err != nil {
			return err
		}
	}

	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		return nil
	}
	rep.writeTable(stdout)
	return nil
}

// runWebSocketCases runs the WebSocket cases (idle, throughput; single hop
// and two-hop) into rep.
func runWebSocketCases(ctx context.Context, o options, verbose io.Writer, log *slog.Logger, rep *report) error {
	echo, err := startEcho()
	if err != nil {
		return err
	}
	defer echo.stop(log)
	log.Info("echo upstream listening", "addr", echo.addr)

	targets := []string{"direct"}
	urls := map[string]string{"direct": "ws://" + echo.addr + "/bench"}
	var (
		hop *hopProcess
		th  *twoHop
	)
	if !o.directOnly {
		hop, err = startHop(ctx, o.hop, echo.addr, verbose, log)
		if err != nil {
			return err
		}
		defer hop.Stop()
		targets = append(targets, "hop")
		urls["hop"] = "ws://" + hop.ListenAddr + "/bench"
		if len(o.twoHop) > 0 {
			if th, err = startTwoHop(ctx, o.hop, echo.addr, verbose, log); err != nil {
				return err
			}
			defer th.Stop()
			for _, v := range o.twoHop {
				targets = append(targets, v.target)
				urls[v.target] = th.url(v)
			}
		}
	}
	// When a hop fails mid-run, its exit status and last words explain why;
	// after an interrupt or the overall deadline they are noise.
	explain := func(target string, err error) error {
		if ctx.Err() != nil {
			return err
		}
		if _, ok := variantOf(target); ok {
			return th.explain(err)
		}
		if hop != nil {
			return hop.explain(err)
		}
		return err
	}

	// Idle first, so hop's heap is not already inflated by the load cases.
	// Only direct and the single hop: the two-hop cases are about throughput.
	for _, t := range targets {
		if _, twoHopCase := variantOf(t); twoHopCase {
			continue
		}
		log.Info("idle case", "target", t, "conns", o.idle)
		if err := measureIdle(ctx, o, t, urls[t], hop, log, rep); err != nil {
			return explain(t, err)
		}
	}
	for _, tc := range throughputCases {
		for _, t := range targets {
			log.Info("throughput case", "target", t, "size", tc.label, "conns", o.conns, "duration", o.duration)
			v, twoHopCase := variantOf(t)
			var before map[string]uint64
			if twoHopCase {
				if before, err = th.sidecarRequests(ctx); err != nil {
					return explain(t, err)
				}
			}
			res, err := runThroughput(ctx, loadConfig{
				URL: urls[t], Conns: o.conns, MsgSize: tc.size, Duration: o.duration, OpTimeout: o.opTimeout,
			})
			if err != nil {
				return explain(t, err)
			}
			if twoHopCase {
				after, err := th.sidecarRequests(ctx)
				if err == nil {
					err = checkProtocol(v, before, after, o.conns)
				}
				if err != nil {
					return explain(t, err)
				}
			}
			rep.set("throughput_"+tc.key+"_msgs", t, res.MsgPerSec())
			rep.set("throughput_"+tc.key+"_mbps", t, res.MBPerSec(tc.size))
			if tc.size == 1<<10 {
				rep.set("rtt_1k_p50_us", t, float64(res.P50)/float64(time.Microsecond))
				rep.set("rtt_1k_p99_us", t, float64(res.P99)/float64(time.Microsecond))
			}
		}
	}

	if th != nil {
		cx, err := th.frontConnections(ctx, o.twoHop)
		if err != nil {
			return explain(o.twoHop[0].target, err)
		}
		for _, v := range o.twoHop {
			if n, ok := cx[v.target]; ok {
				rep.set(frontSidecarCxKey, v.target, float64(n))
			} else {
				log.Warn("front does not report cluster.<name>.upstream_cx_total", "cluster", v.cluster)
			}
		}
	}
	return nil
}

// measureIdle opens o.idle idle connections to url and records the time it
// took; for hop it also records VmRSS growth per connection. A warm-up of
// o.conns connections first faults in hop's code and one-time state, so the
// "before" reading already includes them.
func measureIdle(ctx context.Context, o options, target, url string, hop *hopProcess, log *slog.Logger, rep *report) error {
	var before int64
	if hop != nil && target == "hop" {
		warm, _, err := openIdle(ctx, url, min(o.conns, o.idle), o.opTimeout)
		if err != nil {
			return err
		}
		closeAll(warm)
		if err := sleepCtx(ctx, o.settle); err != nil {
			return err
		}
		if before, err = readVmRSS(hop.Pid()); err != nil {
			return err
		}
	}
	conns, res, err := openIdle(ctx, url, o.idle, o.opTimeout)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	rep.set("idle_open_ms", target, float64(res.Open)/float64(time.Millisecond))
	if hop == nil || target != "hop" {
		return nil
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return err
	}
	after, err := readVmRSS(hop.Pid())
	if err != nil {
		return err
	}
	rep.RSSBeforeKiB, rep.RSSAfterKiB = before, after
	rep.set("idle_rss_kib_per_conn", "hop", float64(after-before)/float64(o.idle))
	log.Info("hop rss", "before_kib", before, "after_kib", after, "conns", o.idle)
	return nil
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bench: %w", context.Cause(ctx))
	}
}

// echoUpstream is the in-process echo server. Handlers are counted so stop
// can wait for hijacked WebSocket handlers, which http.Server does not track.
type echoUpstream struct {
	addr     string
	srv      *http.Server
	handlers sync.WaitGroup
}

func startEcho() (*echoUpstream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: echo listen: %w", err)
	}
	e := &echoUpstream{addr: l.Addr().String()}
	h := echoserver.New()
	e.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.handlers.Add(1)
			defer e.handlers.Done()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go e.srv.Serve(l)
	return e, nil
}

// stop closes the server and waits (bounded) for the echo handlers, which
// end once their clients, or hop, have closed.
func (e *echoUpstream) stop(log *slog.Logger) {
	e.srv.Close()
	done := make(chan struct{})
	go func() { e.handlers.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("echo handlers still running at exit")
	}
}
