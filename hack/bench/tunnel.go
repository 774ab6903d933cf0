//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/template"
	"time"
)

// The tunnel cases carry raw TCP through hop to an in-process TCP echo and
// compare each with a direct TCP connection to the same echo:
//
//	direct:     client ─TCP─▶ echo
//	spliceref:  client ─HTTP/1.1 CONNECT─▶ splice reference ─TCP─▶ echo
//	              (not hop: the ceiling for h1connect, see spliceref.go)
//	h1connect:  client ─HTTP/1.1 CONNECT─▶ hop "connect" listener ─TCP─▶ echo
//	h2connect:  client ─HTTP/2 CONNECT streams─▶ hop "connect" listener ─TCP─▶ echo
//	tcph2:      client ─TCP─▶ hop "tcph2" listener (tcp_proxy, tunneling_config)
//	              ─HTTP/2 CONNECT─▶ the same hop's "connect" listener ─TCP─▶ echo
//
// The connect listener terminates CONNECT (route connect_config) on both
// HTTP/1.1 and HTTP/2 (codec AUTO, allow_connect). One hop process
// (--base-id 4) holds both listeners; the tcph2 listener is only in its
// bootstrap when tcph2 runs, so a hop without tcp_proxy tunneling can still
// run the other two.
//
// Each target measures bulk throughput (full-duplex tunnels, see runBulk),
// the CPU time the bench process (clients and echo) and hop spent per byte
// of it, and tunnel setups per second (see runSetups). On a machine where
// the load, the echo and hop share the cores, throughput through hop is
// bound by that CPU cost, and the CPU row stays meaningful when other load
// on the machine makes the throughput rows noisy. After each run through
// hop its counters must show that every tunnel arrived as a request over
// the protocol the case claims; the connections hop opened are noted.

// tunnelCase is one way through hop.
type tunnelCase string

const (
	caseH1Connect tunnelCase = "h1connect"
	caseH2Connect tunnelCase = "h2connect"
	caseTCPH2     tunnelCase = "tcph2"
)

// tunnelCases are the cases in the order they run and are printed.
var tunnelCases = []tunnelCase{caseH1Connect, caseH2Connect, caseTCPH2}

// tunnelAuthority is the CONNECT target the clients and tcp_proxy ask for;
// the connect listener routes every authority to the echo.
const tunnelAuthority = "echo:1"

// h1ConnectBar is the least h1connect bulk throughput, as a fraction of
// direct, that hop should reach: the kernel splices both directions.
const h1ConnectBar = 0.80

// parseTunnels parses -tunnels: a comma-separated subset of the cases, or
// "none". The result follows tunnelCases' order.
func parseTunnels(s string) ([]tunnelCase, error) {
	if s == "none" || s == "" {
		return nil, nil
	}
	want := map[tunnelCase]bool{}
	for _, f := range strings.Split(s, ",") {
		c := tunnelCase(strings.TrimSpace(f))
		ok := false
		for _, k := range tunnelCases {
			ok = ok || k == c
		}
		if !ok || want[c] {
			return nil, fmt.Errorf("bench: -tunnels %q: want a list of h1connect, h2connect and tcph2, or none", s)
		}
		want[c] = true
	}
	var cs []tunnelCase
	for _, c := range tunnelCases {
		if want[c] {
			cs = append(cs, c)
		}
	}
	return cs, nil
}

// tunnelBootstrapTemplate is the tunnel hop's Envoy v3 bootstrap.
var tunnelBootstrapTemplate = template.Must(template.New("tunnel").Parse(`admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} }
static_resources:
  listeners:
  - name: connect
    address:
      socket_address: { address: 127.0.0.1, port_value: {{.ConnectPort}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: connect
          codec_type: AUTO
          http2_protocol_options: { allow_connect: true }
          route_config:
            name: connect
            virtual_hosts:
            - name: echo
              domains: ["*"]
              routes:
              - match: { connect_matcher: {} }
                route:
                  cluster: echo
                  upgrade_configs:
                  - upgrade_type: CONNECT
                    connect_config: {}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{{- if .TCPH2Port}}
  - name: tcph2
    address:
      socket_address: { address: 127.0.0.1, port_value: {{.TCPH2Port}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcph2
          cluster: connect_h2
          tunneling_config: { hostname: "{{.Authority}}" }
{{- end}}
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: {{.EchoHost}}, port_value: {{.EchoPort}} }
{{- if .TCPH2Port}}
  - name: connect_h2
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: connect_h2
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{.ConnectPort}} }
{{- end}}
`))

// renderTunnelBootstrap returns the tunnel hop's bootstrap: listener
// "connect" on ports[0] terminating CONNECT to cluster "echo" at echo, and,
// when ports has a second entry, listener "tcph2" there.
func renderTunnelBootstrap(adminPort int, ports []int, echo string) ([]byte, error) {
	host, port, err := splitHostPort(echo)
	if err != nil {
		return nil, err
	}
	if len(ports) < 1 || len(ports) > 2 {
		return nil, fmt.Errorf("bench: tunnel hop takes 1 or 2 listener ports, got %d", len(ports))
	}
	p := struct {
		AdminPort, ConnectPort, TCPH2Port, EchoPort int
		EchoHost, Authority                         string
	}{AdminPort: adminPort, ConnectPort: ports[0], EchoHost: host, EchoPort: port, Authority: tunnelAuthority}
	if len(ports) == 2 {
		p.TCPH2Port = ports[1]
	}
	var b strings.Builder
	if err := tunnelBootstrapTemplate.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("bench: tunnel bootstrap: %w", err)
	}
	return []byte(b.String()), nil
}

// tunnelHop is the running tunnel hop.
type tunnelHop struct {
	*hopProcess
	connect string // the connect listener, host:port
	tcph2   string // the tcph2 listener, or "" when tcph2 does not run
}

// startTunnelHop starts the tunnel hop (--base-id 4) in front of echo, with
// the tcph2 listener when withTCPH2.
func startTunnelHop(ctx context.Context, bin, echo string, withTCPH2 bool, verbose io.Writer, log *slog.Logger) (*tunnelHop, error) {
	n := 1
	if withTCPH2 {
		n = 2
	}
	p, err := launchHop(ctx, bin, hopSpec{
		name: "tunnel", baseID: 4, listeners: n,
		render: func(admin int, listen []int) ([]byte, error) { return renderTunnelBootstrap(admin, listen, echo) },
	}, verbose, log)
	if err != nil {
		if withTCPH2 {
			err = fmt.Errorf("%w\n(tcph2 needs tcp_proxy tunneling_config; -tunnels h1connect,h2connect runs without it)", err)
		}
		return nil, err
	}
	th := &tunnelHop{hopProcess: p, connect: p.ListenAddrs[0]}
	if withTCPH2 {
		th.tcph2 = p.ListenAddrs[1]
	}
	return th, nil
}

// tunnelStats are the tunnel hop's counters a case is checked against.
var tunnelStats = []string{
	"http.connect.downstream_rq_http1_total",
	"http.connect.downstream_rq_http2_total",
	"cluster.echo.upstream_cx_total",
	"cluster.connect_h2.upstream_cx_total",
	"tcp.tcph2.downstream_cx_total",
}

// caseCounts are what hop's counters say about one case, summed over its
// runs: how many connections it opened to the echo and, for tcph2, towards
// its own connect listener. A count is -1 when hop does not report it.
type caseCounts struct {
	tunnels, echoCx, h2Cx int64
}

// checkTunnelStats compares the tunnel hop's counters from before and after
// one run of case c that opened tunnels tunnels: the connect listener
// counted at least that many requests over the case's protocol and none
// over the other; tcph2's listener counted its connections. It returns the
// run's counts. A counter hop does not report is not checked.
func checkTunnelStats(c tunnelCase, before, after map[string]uint64, tunnels int64) (caseCounts, error) {
	delta := func(name string) (int64, bool) {
		a, ok := after[name]
		return int64(a - before[name]), ok
	}
	want, other := tunnelStats[0], tunnelStats[1]
	if c != caseH1Connect {
		want, other = other, want
	}
	if got, ok := delta(want); ok && got < tunnels {
		return caseCounts{}, fmt.Errorf("bench: %s: hop counted %d %s for %d tunnels", c, got, want, tunnels)
	}
	if got, ok := delta(other); ok && got != 0 {
		return caseCounts{}, fmt.Errorf("bench: %s: hop counted %d %s, want 0", c, got, other)
	}
	if c == caseTCPH2 {
		if got, ok := delta(tunnelStats[4]); ok && got < tunnels {
			return caseCounts{}, fmt.Errorf("bench: tcph2: hop counted %d %s for %d tunnels", got, tunnelStats[4], tunnels)
		}
	}
	cc := caseCounts{tunnels: tunnels, echoCx: -1, h2Cx: -1}
	if n, ok := delta(tunnelStats[2]); ok {
		cc.echoCx = n
	}
	if n, ok := delta(tunnelStats[3]); ok && c == caseTCPH2 {
		cc.h2Cx = n
	}
	return cc, nil
}

// add sums two runs' counts; unknown stays unknown.
func (a caseCounts) add(b caseCounts) caseCounts {
	sum := func(x, y int64) int64 {
		if x < 0 || y < 0 {
			return -1
		}
		return x + y
	}
	return caseCounts{tunnels: a.tunnels + b.tunnels, echoCx: sum(a.echoCx, b.echoCx), h2Cx: sum(a.h2Cx, b.h2Cx)}
}

// note describes the counts for the report, or is empty when hop reported
// none of them.
func (a caseCounts) note(c tunnelCase) string {
	var parts []string
	if a.echoCx >= 0 {
		parts = append(parts, fmt.Sprintf("%d connections to the echo", a.echoCx))
	}
	if a.h2Cx >= 0 {
		parts = append(parts, fmt.Sprintf("%d HTTP/2 connections tcph2→connect", a.h2Cx))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: %d tunnels; hop opened %s", c, a.tunnels, strings.Join(parts, ", "))
}

// tunnelTarget is direct, the splice reference or one case, with its
// dialer and its sums over rounds.
type tunnelTarget struct {
	name    string     // "direct", spliceRefName or the case
	c       tunnelCase // "" for direct and the reference
	dial    dialFunc
	bulk    bulkResult // summed over rounds
	bulkCPU time.Duration
	setups  setupResult
	counts  caseCounts
}

// runTunnelCases measures the direct baseline and, unless o.directOnly,
// each case of o.tunnels through a tunnel hop, into rep. Each metric runs
// in o.rounds rounds, every target once per round in order, and sums its
// rounds: a change in the machine's background load then weighs on every
// target rather than on the one that happened to run during it.
func runTunnelCases(ctx context.Context, o options, verbose io.Writer, log *slog.Logger, rep *report) error {
	echo, err := startTCPEcho()
	if err != nil {
		return err
	}
	defer func() {
		if err := echo.stop(); err != nil {
			log.Warn("tcp echo", "err", err)
		}
	}()
	log.Info("tcp echo upstream listening", "addr", echo.addr)
	targets := []*tunnelTarget{{name: "direct", dial: dialTCP(echo.addr)}}

	var ref *spliceRef
	if o.spliceRef {
		if ref, err = startSpliceRef(ctx, echo.addr); err != nil {
			return err
		}
		defer ref.Stop()
		log.Info("splice reference listening", "addr", ref.addr, "pid", ref.Pid())
		targets = append(targets, &tunnelTarget{name: spliceRefName, dial: dialH1Connect(ref.addr, tunnelAuthority)})
	}
	var hop *tunnelHop
	if !o.directOnly {
		withTCPH2 := false
		for _, c := range o.tunnels {
			withTCPH2 = withTCPH2 || c == caseTCPH2
		}
		if hop, err = startTunnelHop(ctx, o.hop, echo.addr, withTCPH2, verbose, log); err != nil {
			return err
		}
		defer hop.Stop()
		for _, c := range o.tunnels {
			t := &tunnelTarget{name: string(c), c: c}
			switch c {
			case caseH1Connect:
				t.dial = dialH1Connect(hop.connect, tunnelAuthority)
			case caseH2Connect:
				h2, err := newH2Client(ctx, hop.connect, tunnelAuthority, o.h2Conns)
				if err != nil {
					return hop.explain(err)
				}
				defer h2.Close()
				t.dial = h2.dial
			case caseTCPH2:
				t.dial = dialTCP(hop.tcph2)
			}
			targets = append(targets, t)
		}
	}

	load := tunnelLoad{Conns: o.conns, Chunk: tunnelChunk, Duration: o.duration, OpTimeout: o.opTimeout}
	for _, metric := range []string{tunnelBulkKey, tunnelSetupsKey} {
		for round := 1; round <= o.rounds; round++ {
			for _, t := range targets {
				log.Info("tunnel case", "metric", metric, "target", t.name, "round", round, "conns", o.conns, "duration", o.duration)
				err := runTunnelTarget(ctx, t, metric, load, hop, ref)
				if err != nil && hop != nil && ctx.Err() == nil {
					err = hop.explain(err)
				}
				if err != nil {
					return err
				}
			}
		}
	}
	tr := rep.Tunnels
	for _, t := range targets {
		tr.set(tunnelBulkKey, t.name, t.bulk.MBPerSec())
		if t.bulkCPU > 0 {
			tr.set(tunnelCPUKey, t.name, float64(t.bulk.Total)/1e6/t.bulkCPU.Seconds())
		}
		tr.set(tunnelSetupsKey, t.name, t.setups.PerSec())
		if t.c == "" {
			continue
		}
		if n := t.counts.note(t.c); n != "" {
			tr.Notes = append(tr.Notes, n)
			log.Info(n)
		}
	}
	return nil
}

// benchCPU is the CPU time used so far by this process (the clients and
// the echo) plus, each when it runs, the tunnel hop and the splice
// reference. An idle one adds next to nothing to a run through the other.
func benchCPU(hop *tunnelHop, ref *spliceRef) (time.Duration, error) {
	cpu, err := selfCPU()
	if err != nil {
		return 0, err
	}
	var pids []int
	if hop != nil {
		pids = append(pids, hop.Pid())
	}
	if ref != nil {
		pids = append(pids, ref.Pid())
	}
	for _, pid := range pids {
		c, err := processCPU(pid)
		if err != nil {
			return 0, err
		}
		cpu += c
	}
	return cpu, nil
}

// runTunnelTarget runs one round of metric against t and adds it to t's
// sums; through hop it also checks hop's counters for the run.
func runTunnelTarget(ctx context.Context, t *tunnelTarget, metric string, load tunnelLoad, hop *tunnelHop, ref *spliceRef) error {
	var before map[string]uint64
	if t.c != "" {
		var err error
		if before, err = readStats(ctx, hop.AdminAddr, tunnelStats); err != nil {
			return err
		}
	}
	load.Dial = t.dial
	var tunnels int64
	if metric == tunnelBulkKey {
		cpu0, err := benchCPU(hop, ref)
		if err != nil {
			return err
		}
		res, err := runBulk(ctx, load)
		if err != nil {
			return fmt.Errorf("%s bulk: %w", t.name, err)
		}
		cpu1, err := benchCPU(hop, ref)
		if err != nil {
			return err
		}
		t.bulk.Echoed += res.Echoed
		t.bulk.Elapsed += res.Elapsed
		t.bulk.Total += res.Total
		t.bulkCPU += cpu1 - cpu0
		tunnels = int64(load.Conns)
	} else {
		res, err := runSetups(ctx, load)
		if err != nil {
			return fmt.Errorf("%s setups: %w", t.name, err)
		}
		t.setups.Setups += res.Setups
		t.setups.Elapsed += res.Elapsed
		tunnels = res.Setups
	}
	if t.c == "" {
		return nil
	}
	after, err := readStats(ctx, hop.AdminAddr, tunnelStats)
	if err != nil {
		return err
	}
	cc, err := checkTunnelStats(t.c, before, after, tunnels)
	if err != nil {
		return err
	}
	if t.counts == (caseCounts{}) {
		t.counts = cc
	} else {
		t.counts = t.counts.add(cc)
	}
	return nil
}
