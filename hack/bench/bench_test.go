//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

func TestHistogramBuckets(t *testing.T) {
	values := []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 1<<20 + 12345, 1 << 40, math.MaxUint64 - 1, math.MaxUint64}
	for _, v := range values {
		i := histBucket(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histBucket(%d) = %d, outside [0, %d)", v, i, histBuckets)
		}
		lo, width := histBucketRange(i)
		if v < lo || v-lo >= width {
			t.Errorf("value %d in bucket %d = [%d, %d+%d), not inside", v, i, lo, lo, width)
		}
		if lo >= 1<<histSubBits && float64(width)/float64(lo) > 1.0/(1<<histSubBits) {
			t.Errorf("bucket %d: width %d too wide for lo %d", i, width, lo)
		}
		if v < math.MaxUint64 && histBucket(v+1) < i {
			t.Errorf("histBucket not monotonic at %d", v)
		}
	}
	// Every bucket's range starts where the previous one ended.
	for i := 1; i < histBuckets; i++ {
		plo, pw := histBucketRange(i - 1)
		lo, _ := histBucketRange(i)
		if plo+pw != lo {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, plo+pw)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var uniform, a, b histogram
	for v := uint64(1); v <= 1000; v++ {
		uniform.record(v * 1000) // 1µs .. 1ms in ns
		if v%2 == 0 {
			a.record(v * 1000)
		} else {
			b.record(v * 1000)
		}
	}
	var merged histogram
	merged.merge(&a)
	merged.merge(&b)
	var one histogram
	one.record(123456)

	tests := []struct {
		name string
		h    *histogram
		q    float64
		want uint64
	}{
		{"uniform p50", &uniform, 0.50, 500_000},
		{"uniform p99", &uniform, 0.99, 990_000},
		{"uniform p0 is the minimum", &uniform, 0, 1000},
		{"uniform p100 is the maximum", &uniform, 1, 1_000_000},
		{"merged p50", &merged, 0.50, 500_000},
		{"merged p99", &merged, 0.99, 990_000},
		{"single value", &one, 0.99, 123456},
		{"empty", &histogram{}, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.h.quantile(tt.q)
			if diff := math.Abs(float64(got) - float64(tt.want)); diff > float64(tt.want)/100 {
				t.Errorf("quantile(%v) = %d, want %d within 1%%", tt.q, got, tt.want)
			}
		})
	}
	if merged.n != uniform.n {
		t.Errorf("merged n = %d, want %d", merged.n, uniform.n)
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"typical", "Name:\thop\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n", 12345, false},
		{"no VmRSS (kernel thread)", "Name:\tkthreadd\nState:\tS (sleeping)\n", 0, true},
		{"bad unit", "VmRSS:\t 12 MB\n", 0, true},
		{"not a number", "VmRSS:\t twelve kB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS(strings.NewReader(tt.status))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseVmRSS = (%d, %v), want (%d, error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
	own, err := readVmRSS(os.Getpid())
	if err != nil || own <= 0 {
		t.Errorf("readVmRSS(self) = (%d, %v), want a positive size", own, err)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
	}{
		{[]string{"-hop", "/bin/hop"}, false},
		{[]string{"-direct-only"}, false},
		{nil, true}, // neither -hop nor -direct-only
		{[]string{"-direct-only", "-duration", "0s"}, true},
		{[]string{"-direct-only", "-idle", "0"}, true},
		{[]string{"-direct-only", "extra"}, true},
		{[]string{"-no-such-flag"}, true},
		{[]string{"-hop", "/bin/hop", "-two-hop", "none"}, false},
		{[]string{"-hop", "/bin/hop", "-two-hop", "h2"}, false},
		{[]string{"-hop", "/bin/hop", "-two-hop", "h3"}, true},
		{[]string{"-hop", "/bin/hop", "-tunnels", "h1connect,tcph2"}, false},
		{[]string{"-hop", "/bin/hop", "-tunnels", "h3connect"}, true},
		{[]string{"-hop", "/bin/hop", "-websocket=false", "-tunnels", "none"}, true}, // nothing to run
		{[]string{"-hop", "/bin/hop", "-h2-conns", "0"}, true},
		{[]string{"-hop", "/bin/hop", "-rounds", "0"}, true},
	}
	for _, tt := range tests {
		if _, err := parseFlags(tt.args, io.Discard); (err != nil) != tt.wantErr {
			t.Errorf("parseFlags(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
		}
	}
	// Both two-hop variants by default; none without a hop.
	if o, err := parseFlags([]string{"-hop", "/bin/hop"}, io.Discard); err != nil || len(o.twoHop) != 2 {
		t.Errorf("default -two-hop = %v (%v), want h1 and h2", o.twoHop, err)
	}
	if o, err := parseFlags([]string{"-direct-only"}, io.Discard); err != nil || len(o.twoHop) != 0 {
		t.Errorf("-direct-only -two-hop = %v (%v), want none", o.twoHop, err)
	}
	// Every tunnel case and the WebSocket cases by default; no two-hop
	// cases without the WebSocket ones.
	if o, err := parseFlags([]string{"-hop", "/bin/hop"}, io.Discard); err != nil || !o.websocket || len(o.tunnels) != 3 {
		t.Errorf("defaults: websocket %v, tunnels %v (%v); want true and all three", o.websocket, o.tunnels, err)
	}
	if o, err := parseFlags([]string{"-hop", "/bin/hop", "-websocket=false"}, io.Discard); err != nil || len(o.twoHop) != 0 {
		t.Errorf("-websocket=false -two-hop = %v (%v), want none", o.twoHop, err)
	}
}

// TestBootstrapIsValidEnvoyConfig checks the generated bootstrap against
// Envoy's own protos and validation rules, and that it says what the bench
// relies on.
func TestBootstrapIsValidEnvoyConfig(t *testing.T) {
	y, err := renderBootstrap(9901, 10000, "127.0.0.1:18080")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := loadBootstrap(path)
	if err != nil {
		t.Fatalf("bootstrap does not load as Envoy v3: %v\n%s", err, y)
	}
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 9901 {
		t.Errorf("admin port = %d", got)
	}
	lis := b.GetStaticResources().GetListeners()[0]
	if sa := lis.GetAddress().GetSocketAddress(); sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 10000 {
		t.Errorf("listener address = %v", sa)
	}
	f := lis.GetFilterChains()[0].GetFilters()[0]
	var hcm hcmv3.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatalf("filter %q typed_config: %v", f.GetName(), err)
	}
	if hcm.GetStatPrefix() != "bench" {
		t.Errorf("stat_prefix = %q", hcm.GetStatPrefix())
	}
	if u := hcm.GetUpgradeConfigs(); len(u) != 1 || u[0].GetUpgradeType() != "websocket" {
		t.Errorf("upgrade_configs = %v, want [websocket]", u)
	}
	route := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
	if route.GetMatch().GetPrefix() != "/" || route.GetRoute().GetCluster() != "echo" {
		t.Errorf("route = %v, want prefix / to cluster echo", route)
	}
	if hf := hcm.GetHttpFilters(); len(hf) != 1 || !strings.HasSuffix(hf[0].GetTypedConfig().GetTypeUrl(), ".router.v3.Router") {
		t.Errorf("http_filters = %v, want only the router", hf)
	}
	c := b.GetStaticResources().GetClusters()[0]
	ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if c.GetName() != "echo" || c.GetType().String() != "STATIC" || ep.GetPortValue() != 18080 {
		t.Errorf("cluster = %v", c)
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestStartHopAndStop(t *testing.T) {
	t.Setenv(fakeHopEnv, "proxy")
	echo, err := startEcho()
	if err != nil {
		t.Fatal(err)
	}
	defer echo.stop(testLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	h, err := startHop(ctx, os.Args[0], echo.addr, nil, testLogger())
	if err != nil {
		t.Fatalf("startHop: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + h.ListenAddr + "/through/hop")
	if err != nil {
		h.Stop()
		t.Fatalf("GET through hop: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "path: /through/hop") {
		t.Errorf("echo through hop said:\n%s", body)
	}
	h.Stop()
	select {
	case <-h.exited:
	default:
		t.Errorf("hop still running after Stop")
	}
	if _, err := os.Stat(h.dir); !os.IsNotExist(err) {
		t.Errorf("bootstrap directory %s not removed: %v", h.dir, err)
	}
	h.Stop() // a second Stop is harmless
}

func TestStartHopReportsEarlyExit(t *testing.T) {
	t.Setenv(fakeHopEnv, "fail")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := startHop(ctx, os.Args[0], "127.0.0.1:1", nil, testLogger())
	if err == nil {
		t.Fatal("startHop of a binary that exits = nil error")
	}
	for _, want := range []string{"exited before it was ready", "exit status 3", "refusing to start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestRunDirectOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for about a second")
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-direct-only", "-duration", "300ms", "-conns", "8", "-idle", "50", "-tunnels", "none"}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) != 4 {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[cells[0]] = cells[1:]
	}
	for _, label := range []string{
		"1 KiB × 8 conns: msg/s", "1 KiB × 8 conns: MB/s", "64 KiB × 8 conns: msg/s", "64 KiB × 8 conns: MB/s",
		"1 KiB round trip p50 (µs)", "1 KiB round trip p99 (µs)", "open 50 WebSockets (ms)",
	} {
		r, ok := rows[label]
		if !ok {
			t.Errorf("no row %q in:\n%s", label, out.String())
			continue
		}
		if r[0] == "-" || strings.HasPrefix(r[0], "0") && strings.Trim(r[0], "0.") == "" {
			t.Errorf("row %q: direct = %q, want a positive number", label, r[0])
		}
		if r[1] != "-" || r[2] != "-" {
			t.Errorf("row %q: hop columns = %q, want - without hop", label, r[1:])
		}
	}
}

// TestRunThroughFakeHop runs the whole bench, both two-hop variants
// included, through the fake hop, which speaks HTTP/2 and extended CONNECT
// between the front and the sidecar like hop does.
func TestRunThroughFakeHop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for about two seconds")
	}
	t.Setenv(fakeHopEnv, "proxy")
	t.Setenv("GODEBUG", withXConnect(os.Getenv("GODEBUG")))
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-hop", os.Args[0], "-duration", "200ms", "-conns", "8", "-idle", "100", "-settle", "50ms", "-json", "-tunnels", "none"}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	var rep struct {
		Hop       string   `json:"hop"`
		RSSBefore int64    `json:"hop_rss_before_kib"`
		RSSAfter  int64    `json:"hop_rss_after_kib"`
		TwoHop    []string `json:"two_hop"`
		Rows      []struct {
			Key          string
			Direct, Hop  *float64
			Ratio        *float64 `json:"hop_over_direct"`
			H1Hop, H2Hop *float64
			H2Ratio      *float64 `json:"h2hop_over_h1hop"`
		} `json:"rows"`
	}
	dec := json.NewDecoder(&out)
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode JSON: %v", err)
	}
	if rep.RSSBefore <= 0 || rep.RSSAfter <= 0 {
		t.Errorf("hop RSS before/after = %d/%d KiB, want positive readings", rep.RSSBefore, rep.RSSAfter)
	}
	if len(rep.Rows) != 9 {
		t.Fatalf("got %d rows, want 9", len(rep.Rows))
	}
	if strings.Join(rep.TwoHop, ",") != "h1hop,h2hop" {
		t.Errorf("two_hop = %q, want h1hop and h2hop", rep.TwoHop)
	}
	positive := func(vs ...*float64) bool {
		for _, v := range vs {
			if v == nil || *v <= 0 {
				return false
			}
		}
		return true
	}
	for _, r := range rep.Rows {
		switch r.Key {
		case "idle_rss_kib_per_conn":
			if r.Direct != nil || r.Hop == nil || r.H1Hop != nil || r.H2Hop != nil {
				t.Errorf("%s: direct %s hop %s h1hop %s h2hop %s, want only hop", r.Key, fmtPtr(r.Direct), fmtPtr(r.Hop), fmtPtr(r.H1Hop), fmtPtr(r.H2Hop))
			}
		case "idle_open_ms":
			if !positive(r.Direct, r.Hop, r.Ratio) || r.H1Hop != nil || r.H2Hop != nil {
				t.Errorf("%s: direct %s hop %s h1hop %s h2hop %s, want direct and hop", r.Key, fmtPtr(r.Direct), fmtPtr(r.Hop), fmtPtr(r.H1Hop), fmtPtr(r.H2Hop))
			}
		case frontSidecarCxKey:
			// 2 cases × 8 WebSockets, one connection each over HTTP/1.1;
			// the fake's HTTP/2 client multiplexes them on one.
			if r.H1Hop == nil || *r.H1Hop != 16 || r.H2Hop == nil || *r.H2Hop != 1 || r.H2Ratio != nil {
				t.Errorf("%s: h1hop %s h2hop %s ratio %s, want 16, 1 and no ratio", r.Key, fmtPtr(r.H1Hop), fmtPtr(r.H2Hop), fmtPtr(r.H2Ratio))
			}
		default:
			if !positive(r.Direct, r.Hop, r.Ratio, r.H1Hop, r.H2Hop, r.H2Ratio) {
				t.Errorf("%s: direct %s hop %s ratio %s h1hop %s h2hop %s ratio %s, want all positive", r.Key,
					fmtPtr(r.Direct), fmtPtr(r.Hop), fmtPtr(r.Ratio), fmtPtr(r.H1Hop), fmtPtr(r.H2Hop), fmtPtr(r.H2Ratio))
			}
		}
	}
}

func fmtPtr(v *float64) string {
	if v == nil {
		return "null"
	}
	return strconv.FormatFloat(*v, 'g', 6, 64)
}
