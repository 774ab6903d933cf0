//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The two-hop cases put a second hop between the client and the echo:
//
//	client ─HTTP/1.1─▶ front ─HTTP/1.1 or HTTP/2─▶ sidecar ─HTTP/1.1─▶ echo
//
// The sidecar is one process with one listener (codec AUTO, allow_connect),
// so both variants reach the same listener of the same process. The front is
// one process with one HTTP/1.1 listener per variant, each routed to its own
// cluster aimed at the sidecar: "sidecar_h1" has no protocol options (one
// TCP connection per WebSocket, as an HTTP/1.1 upgrade) and "sidecar_h2" has
// explicit HTTP/2 (every WebSocket an extended CONNECT stream on the front's
// multiplexed connection). The variants run one after the other, so the idle
// listener costs nothing, and everything but the front→sidecar protocol is
// the same code in the same processes: the ratio h2hop/h1hop isolates it.
// After each case the sidecar's own request counters must show that every
// WebSocket of the case arrived over the protocol the variant claims; a hop
// that silently fell back to HTTP/1.1 fails the run instead of passing off
// HTTP/1.1 figures as HTTP/2 ones.

// twoHopVariant is one front→sidecar protocol.
type twoHopVariant struct {
	flag    string // its name in -two-hop
	target  string // its column in the report
	cluster string // the front's cluster to the sidecar
	h2      bool
}

var twoHopVariants = []twoHopVariant{
	{flag: "h1", target: "h1hop", cluster: "sidecar_h1"},
	{flag: "h2", target: "h2hop", cluster: "sidecar_h2", h2: true},
}

// sidecarPrefix is the sidecar listener's name and stat_prefix.
const sidecarPrefix = "sidecar"

// parseTwoHop parses -two-hop: a comma-separated subset of h1, h2, or
// "none". The result follows twoHopVariants' order.
func parseTwoHop(s string) ([]twoHopVariant, error) {
	if s == "none" || s == "" {
		return nil, nil
	}
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ok := false
		for _, v := range twoHopVariants {
			ok = ok || v.flag == f
		}
		if !ok || want[f] {
			return nil, fmt.Errorf("bench: -two-hop %q: want a list of h1 and h2, or none", s)
		}
		want[f] = true
	}
	var vs []twoHopVariant
	for _, v := range twoHopVariants {
		if want[v.flag] {
			vs = append(vs, v)
		}
	}
	return vs, nil
}

// renderSidecarBootstrap is the sidecar: listener "sidecar" taking HTTP/1.1
// and HTTP/2 (extended CONNECT allowed), routed to cluster "echo" at
// upstream over HTTP/1.1.
func renderSidecarBootstrap(adminPort, listenPort int, upstream string) ([]byte, error) {
	host, port, err := splitHostPort(upstream)
	if err != nil {
		return nil, err
	}
	return executeBootstrap(bootstrapParams{
		AdminPort: adminPort,
		Listeners: []listenerParams{{Name: sidecarPrefix, Port: listenPort, Cluster: "echo", AcceptH2: true}},
		Clusters:  []clusterParams{{Name: "echo", Host: host, Port: port}},
	})
}

// renderFrontBootstrap is the front: for each of twoHopVariants a listener
// "front_<flag>" on the matching port of listenPorts, routed to the
// variant's cluster, every cluster aimed at the sidecar listener.
func renderFrontBootstrap(adminPort int, listenPorts []int, sidecar string) ([]byte, error) {
	if len(listenPorts) != len(twoHopVariants) {
		return nil, fmt.Errorf("bench: front needs %d listener ports, got %d", len(twoHopVariants), len(listenPorts))
	}
	host, port, err := splitHostPort(sidecar)
	if err != nil {
		return nil, err
	}
	p := bootstrapParams{AdminPort: adminPort}
	for i, v := range twoHopVariants {
		p.Listeners = append(p.Listeners, listenerParams{Name: "front_" + v.flag, Port: listenPorts[i], Cluster: v.cluster})
		p.Clusters = append(p.Clusters, clusterParams{Name: v.cluster, Host: host, Port: port, H2: v.h2})
	}
	return executeBootstrap(p)
}

// twoHop is the running front → sidecar topology.
type twoHop struct {
	sidecar, front *hopProcess
}

// startTwoHop starts the sidecar (--base-id 2) in front of upstream, then
// the front (--base-id 3) in front of the sidecar, each ready on return.
func startTwoHop(ctx context.Context, bin, upstream string, verbose io.Writer, log *slog.Logger) (*twoHop, error) {
	sidecar, err := launchHop(ctx, bin, hopSpec{
		name: "sidecar", baseID: 2, listeners: 1,
		render: func(admin int, listen []int) ([]byte, error) {
			return renderSidecarBootstrap(admin, listen[0], upstream)
		},
	}, verbose, log)
	if err != nil {
		return nil, err
	}
	front, err := launchHop(ctx, bin, hopSpec{
		name: "front", baseID: 3, listeners: len(twoHopVariants),
		render: func(admin int, listen []int) ([]byte, error) {
			return renderFrontBootstrap(admin, listen, sidecar.ListenAddr)
		},
	}, verbose, log)
	if err != nil {
		sidecar.Stop()
		return nil, err
	}
	return &twoHop{sidecar: sidecar, front: front}, nil
}

// url is the WebSocket URL of variant v on the front.
func (th *twoHop) url(v twoHopVariant) string {
	for i, w := range twoHopVariants {
		if w == v {
			return "ws://" + th.front.ListenAddrs[i] + "/bench"
		}
	}
	return "" // unreachable: v comes from twoHopVariants
}

// explain adds both processes' state and output to err.
func (th *twoHop) explain(err error) error { return th.sidecar.explain(th.front.explain(err)) }

// Stop stops the front, then the sidecar.
func (th *twoHop) Stop() {
	th.front.Stop()
	th.sidecar.Stop()
}

// sidecarRequestStats are the sidecar counters checkProtocol compares.
var sidecarRequestStats = []string{
	"http." + sidecarPrefix + ".downstream_rq_http1_total",
	"http." + sidecarPrefix + ".downstream_rq_http2_total",
}

// sidecarRequests reads the sidecar's request counters by protocol.
func (th *twoHop) sidecarRequests(ctx context.Context) (map[string]uint64, error) {
	return readStats(ctx, th.sidecar.AdminAddr, sidecarRequestStats)
}

// checkProtocol compares the sidecar's request counters from before and
// after a case of variant v that opened conns WebSockets: at least conns
// requests arrived over v's protocol and none over the other.
func checkProtocol(v twoHopVariant, before, after map[string]uint64, conns int) error {
	want, other := sidecarRequestStats[0], sidecarRequestStats[1]
	if v.h2 {
		want, other = other, want
	}
	for _, name := range sidecarRequestStats {
		if _, ok := after[name]; !ok {
			return fmt.Errorf("bench: %s: cannot tell which protocol reached the sidecar: its /stats has no %s", v.target, name)
		}
	}
	got, stray := after[want]-before[want], after[other]-before[other]
	if got < uint64(conns) || stray != 0 {
		return fmt.Errorf("bench: %s: the sidecar counted %d requests in %s and %d in %s during a case of %d WebSockets; want all %d in the first",
			v.target, got, want, stray, other, conns, conns)
	}
	return nil
}

// readStats fetches the named counters from a hop's admin /stats (Envoy's
// text format, "name: value" per line). Names the hop does not report are
// absent from the result.
func readStats(ctx context.Context, adminAddr string, names []string) (map[string]uint64, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	u := "http://" + adminAddr + "/stats?filter=" + url.QueryEscape("^("+strings.Join(quoted, "|")+")$")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: stats: %w", err)
	}
	tr := &http.Transport{DisableKeepAlives: true} // Proxy nil: never an environment proxy
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: stats: GET %s: status %d", u, resp.StatusCode)
	}
	all, err := parseStats(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(names))
	for _, n := range names {
		if v, ok := all[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

// parseStats reads "name: value" lines with an unsigned integer value (the
// counters and gauges of Envoy's text /stats); other lines, such as
// histograms, are skipped.
func parseStats(r io.Reader) (map[string]uint64, error) {
	out := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64); err == nil {
			out[strings.TrimSpace(name)] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: stats: %w", err)
	}
	return out, nil
}

// frontConnections reads, per variant, how many connections the front's
// cluster to the sidecar has opened (upstream_cx_total); variants whose
// counter is missing are absent. This shows the multiplexing: about one per
// WebSocket over HTTP/1.1, a handful over HTTP/2.
func (th *twoHop) frontConnections(ctx context.Context, vs []twoHopVariant) (map[string]uint64, error) {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = "cluster." + v.cluster + ".upstream_cx_total"
	}
	got, err := readStats(ctx, th.front.AdminAddr, names)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for i, v := range vs {
		if n, ok := got[names[i]]; ok {
			out[v.target] = n
		}
	}
	return out, nil
}

// variantOf returns the variant whose report column is target; false for
// the single-hop targets.
func variantOf(target string) (twoHopVariant, bool) {
	for _, v := range twoHopVariants {
		if v.target == target {
			return v, true
		}
	}
	return twoHopVariant{}, false
}
