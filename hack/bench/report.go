//go:build linux

package main

import (
	"fmt"
	"io"
	"runtime"
)

// report is the result, as printed with -json.
type report struct {
	Conns          int           `json:"conns"`
	DurationPerRun string        `json:"duration_per_case"`
	IdleConns      int           `json:"idle_conns"`
	Hop            string        `json:"hop,omitempty"`
	NumCPU         int           `json:"num_cpu"`
	RSSBeforeKiB   int64         `json:"hop_rss_before_kib,omitempty"`
	RSSAfterKiB    int64         `json:"hop_rss_after_kib,omitempty"`
	TwoHop         []string      `json:"two_hop,omitempty"` // the two-hop targets run: h1hop, h2hop
	Rows           []*row        `json:"rows"`              // the WebSocket cases; empty with -websocket=false
	Tunnels        *tunnelReport `json:"tunnels,omitempty"`
	rowByKey       map[string]*row
}

// row is one metric. A nil value was not measured.
type row struct {
	Key     string   `json:"key"`
	Label   string   `json:"label"`
	Direct  *float64 `json:"direct"`
	Hop     *float64 `json:"hop"`
	Ratio   *float64 `json:"hop_over_direct"`
	H1Hop   *float64 `json:"h1hop"`
	H2Hop   *float64 `json:"h2hop"`
	H2Ratio *float64 `json:"h2hop_over_h1hop"`
	prec    int      // decimals in the table
	noRatio bool     // a count whose ratio means nothing
}

// frontSidecarCxKey is the row counting front→sidecar connections.
const frontSidecarCxKey = "front_sidecar_cx_total"

func newReport(o options) *report {
	r := &report{
		Conns: o.conns, DurationPerRun: o.duration.String(), IdleConns: o.idle,
		NumCPU: runtime.NumCPU(), rowByKey: map[string]*row{},
	}
	if !o.directOnly {
		r.Hop = o.hop
		for _, v := range o.twoHop {
			r.TwoHop = append(r.TwoHop, v.target)
		}
	}
	if len(o.tunnels) > 0 {
		r.Tunnels = newTunnelReport(o)
	}
	if !o.websocket {
		return r
	}
	add := func(key, label string, prec int) *row {
		rw := &row{Key: key, Label: label, prec: prec}
		r.Rows = append(r.Rows, rw)
		r.rowByKey[key] = rw
		return rw
	}
	for _, tc := range throughputCases {
		add("throughput_"+tc.key+"_msgs", fmt.Sprintf("%s × %d conns: msg/s", tc.label, o.conns), 0)
		add("throughput_"+tc.key+"_mbps", fmt.Sprintf("%s × %d conns: MB/s", tc.label, o.conns), 1)
	}
	add("rtt_1k_p50_us", "1 KiB round trip p50 (µs)", 1)
	add("rtt_1k_p99_us", "1 KiB round trip p99 (µs)", 1)
	add("idle_open_ms", fmt.Sprintf("open %d WebSockets (ms)", o.idle), 1)
	add("idle_rss_kib_per_conn", fmt.Sprintf("hop RSS per idle WebSocket at %d (KiB)", o.idle), 1)
	if len(r.TwoHop) > 0 {
		add(frontSidecarCxKey, "front→sidecar connections opened, all cases", 0).noRatio = true
	}
	return r
}

// set records v for target ("direct", "hop", "h1hop" or "h2hop") and
// updates the ratios.
func (r *report) set(key, target string, v float64) {
	rw := r.rowByKey[key]
	switch target {
	case "direct":
		rw.Direct = &v
	case "hop":
		rw.Hop = &v
	case "h1hop":
		rw.H1Hop = &v
	case "h2hop":
		rw.H2Hop = &v
	}
	if !rw.noRatio {
		rw.Ratio = ratio(rw.Hop, rw.Direct)
		rw.H2Ratio = ratio(rw.H2Hop, rw.H1Hop)
	}
}

// ratio is a/b, or nil when either is missing or b is zero.
func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	q := *a / *b
	return &q
}

// writeTable prints the report as markdown tables, columns padded: the
// WebSocket cases (the two-hop columns only when two-hop cases ran), then
// the tunnel cases, each when it ran.
func (r *report) writeTable(w io.Writer) {
	if len(r.Rows) > 0 {
		r.writeWebSocketTable(w)
	}
	if r.Tunnels != nil {
		if len(r.Rows) > 0 {
			fmt.Fprintln(w)
		}
		r.Tunnels.writeTable(w, r.hopName(), r.NumCPU, r.DurationPerRun)
	}
}

// hopName says which hop ran, for the tables' captions.
func (r *report) hopName() string {
	if r.Hop == "" {
		return "hop: not run (-direct-only)"
	}
	return "hop: " + r.Hop
}

func (r *report) writeWebSocketTable(w io.Writer) {
	cell := cellOf
	twoHop := len(r.TwoHop) > 0
	header := []string{"case", "direct", "hop", "hop/direct"}
	if twoHop {
		header = append(header, "h1hop", "h2hop", "h2hop/h1hop")
	}
	table := [][]string{header}
	for _, rw := range r.Rows {
		line := []string{rw.Label, cell(rw.Direct, rw.prec), cell(rw.Hop, rw.prec), cell(rw.Ratio, 2)}
		if twoHop {
			line = append(line, cell(rw.H1Hop, rw.prec), cell(rw.H2Hop, rw.prec), cell(rw.H2Ratio, 2))
		}
		table = append(table, line)
	}
	fmt.Fprintf(w, "WebSocket echo over loopback; %s; %d CPUs; %s per throughput case\n", r.hopName(), r.NumCPU, r.DurationPerRun)
	if twoHop {
		fmt.Fprintln(w, "h1hop/h2hop: client → front hop → sidecar hop → echo, front→sidecar over HTTP/1.1 / over HTTP/2 (extended CONNECT)")
	}
	fmt.Fprintln(w)
	writeMarkdown(w, table)
	if r.RSSAfterKiB != 0 {
		fmt.Fprintf(w, "\nhop VmRSS: %d KiB before, %d KiB with %d idle WebSockets open\n", r.RSSBeforeKiB, r.RSSAfterKiB, r.IdleConns)
	}
}
