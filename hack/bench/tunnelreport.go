//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"
)

// tunnelChunk is the size of each bulk write.
const tunnelChunk = 64 << 10

// Keys of the tunnel rows.
const (
	tunnelBulkKey   = "tunnel_bulk_mbps"
	tunnelCPUKey    = "tunnel_bulk_mb_per_cpu_s"
	tunnelSetupsKey = "tunnel_setups_per_s"
)

// tunnelReport is the tunnel part of the result (JSON "tunnels").
type tunnelReport struct {
	Tunnels int      `json:"tunnels"`     // bulk tunnels, and setup workers
	Rounds  int      `json:"rounds"`      // each target's runs per metric, summed
	Chunk   int      `json:"chunk_bytes"` // bytes per bulk write
	H2Conns int      `json:"h2connect_conns"`
	Cases   []string `json:"cases"` // the cases run through hop, in column order
	// Reference is spliceRefName when the splice reference ran (its
	// column comes before the cases), else empty.
	Reference string       `json:"reference,omitempty"`
	Rows      []*tunnelRow `json:"rows"`
	Bar       *barResult   `json:"h1connect_bulk_bar,omitempty"`
	Notes     []string     `json:"notes,omitempty"` // connections hop opened per case
	rowBy     map[string]*tunnelRow
}

// tunnelRow is one metric: direct, and per case (and the reference, under
// its name) its value and its ratio to direct. A missing entry was not
// measured.
type tunnelRow struct {
	Key      string             `json:"key"`
	Label    string             `json:"label"`
	Direct   *float64           `json:"direct"`
	Through  map[string]float64 `json:"through_hop"`
	OverDir  map[string]float64 `json:"over_direct"`
	decimals int
}

// barResult is h1connect bulk throughput against h1ConnectBar, and, when
// the splice reference ran, the reference's bulk throughput over direct
// and h1connect's over the reference's.
type barResult struct {
	Ratio      float64  `json:"ratio"`
	Bar        float64  `json:"bar"`
	Pass       bool     `json:"pass"`
	RefOverDir *float64 `json:"spliceref_over_direct,omitempty"`
	RatioToRef *float64 `json:"ratio_to_spliceref,omitempty"`
}

func newTunnelReport(o options) *tunnelReport {
	tr := &tunnelReport{Tunnels: o.conns, Rounds: o.rounds, Chunk: tunnelChunk, H2Conns: o.h2Conns, rowBy: map[string]*tunnelRow{}}
	if o.spliceRef {
		tr.Reference = spliceRefName
	}
	if !o.directOnly {
		for _, c := range o.tunnels {
			tr.Cases = append(tr.Cases, string(c))
		}
	}
	add := func(key, label string, decimals int) {
		rw := &tunnelRow{Key: key, Label: label, Through: map[string]float64{}, OverDir: map[string]float64{}, decimals: decimals}
		tr.Rows = append(tr.Rows, rw)
		tr.rowBy[key] = rw
	}
	add(tunnelBulkKey, fmt.Sprintf("bulk echo, %d tunnels: MB/s", o.conns), 1)
	add(tunnelCPUKey, "bulk echo: MB per CPU-second (bench + proxy)", 0)
	add(tunnelSetupsKey, fmt.Sprintf("tunnel setups/s, %d workers", o.conns), 0)
	return tr
}

// set records v for target ("direct", the reference or a case) and updates
// the ratios and, for h1connect bulk, the bar.
func (tr *tunnelReport) set(key, target string, v float64) {
	rw := tr.rowBy[key]
	if target == "direct" {
		rw.Direct = &v
	} else {
		rw.Through[target] = v
	}
	if rw.Direct == nil || *rw.Direct == 0 {
		return
	}
	for c, x := range rw.Through {
		rw.OverDir[c] = x / *rw.Direct
	}
	if q, ok := rw.OverDir[string(caseH1Connect)]; ok && key == tunnelBulkKey {
		tr.Bar = &barResult{Ratio: q, Bar: h1ConnectBar, Pass: q >= h1ConnectBar}
		if r, ok := rw.OverDir[spliceRefName]; ok && r > 0 {
			toRef := q / r
			tr.Bar.RefOverDir, tr.Bar.RatioToRef = &r, &toRef
		}
	}
}

// writeTable prints the tunnel table, the bar's verdict and the notes.
func (tr *tunnelReport) writeTable(w io.Writer, hopName string, cpus int, duration string) {
	cols := tr.Cases
	if tr.Reference != "" {
		cols = append([]string{tr.Reference}, cols...)
	}
	header := []string{"case", "direct"}
	for _, c := range cols {
		header = append(header, c, c+"/direct")
	}
	table := [][]string{header}
	for _, rw := range tr.Rows {
		line := []string{rw.Label, cellOf(rw.Direct, rw.decimals)}
		for _, c := range cols {
			line = append(line, cellOf(lookup(rw.Through, c), rw.decimals), cellOf(lookup(rw.OverDir, c), 2))
		}
		table = append(table, line)
	}
	fmt.Fprintf(w, "TCP tunnels over loopback to a TCP echo; %s; %d CPUs; %s per case and metric, %d round(s) summed\n", hopName, cpus, duration, tr.Rounds)
	fmt.Fprintf(w, "bulk: %d full-duplex tunnels writing %d KiB chunks; setups: %d workers, each connect → 1-byte echo → half-close → EOF → close\n",
		tr.Tunnels, tr.Chunk>>10, tr.Tunnels)
	if tr.Reference != "" {
		fmt.Fprintf(w, "%s: the splice reference, a minimal HTTP/1.1 CONNECT proxy in its own process whose tunnels are io.Copy between TCP connections (splice)\n", tr.Reference)
	}
	for _, c := range tr.Cases {
		fmt.Fprintf(w, "%s: %s\n", c, caseDescription(tunnelCase(c), tr.H2Conns))
	}
	fmt.Fprintln(w)
	writeMarkdown(w, table)
	if tr.Bar != nil {
		verdict := "FAIL"
		if tr.Bar.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "\n%s: h1connect bulk throughput is %.0f%% of direct (bar: %.0f%%)\n", verdict, 100*tr.Bar.Ratio, 100*tr.Bar.Bar)
		if tr.Bar.RefOverDir != nil {
			fmt.Fprintf(w, "the splice reference reaches %.0f%% of direct on this machine; h1connect reaches %.0f%% of the reference\n",
				100**tr.Bar.RefOverDir, 100**tr.Bar.RatioToRef)
		}
	}
	for _, n := range tr.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// caseDescription says how case c reaches the echo.
func caseDescription(c tunnelCase, h2Conns int) string {
	switch c {
	case caseH1Connect:
		return "HTTP/1.1 CONNECT terminated by hop, one connection per tunnel"
	case caseH2Connect:
		return fmt.Sprintf("HTTP/2 CONNECT terminated by hop, a stream per tunnel over %d kept connections (h2c)", h2Conns)
	case caseTCPH2:
		return "TCP into hop's tcp_proxy, tunnelled over HTTP/2 CONNECT to hop's own CONNECT listener"
	}
	return ""
}

func lookup(m map[string]float64, k string) *float64 {
	if v, ok := m[k]; ok {
		return &v
	}
	return nil
}

func cellOf(v *float64, decimals int) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.*f", decimals, *v)
}

// writeMarkdown prints table (header first) as a markdown table, every
// column but the first right-aligned and all padded.
func writeMarkdown(w io.Writer, table [][]string) {
	widths := make([]int, len(table[0]))
	for _, line := range table {
		for i, c := range line {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	pad := func(s string, n int, right bool) string {
		fill := strings.Repeat(" ", n-len([]rune(s)))
		if right {
			return fill + s
		}
		return s + fill
	}
	for i, line := range table {
		cells := make([]string, len(line))
		for j, c := range line {
			cells[j] = pad(c, widths[j], j > 0)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		if i == 0 {
			seps := make([]string, len(line))
			for j := range seps {
				seps[j] = strings.Repeat("-", widths[j])
				if j > 0 {
					seps[j] = seps[j][1:] + ":"
				}
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(seps, " | "))
		}
	}
}
