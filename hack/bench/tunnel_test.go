//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/hopproxy/hop/xds/bootstrap"
)

func TestParseTunnels(t *testing.T) {
	tests := []struct {
		in      string
		want    []tunnelCase
		wantErr bool
	}{
		{"h1connect,h2connect,tcph2", tunnelCases, false},
		{"tcph2, h1connect", []tunnelCase{caseH1Connect, caseTCPH2}, false},
		{"h2connect", []tunnelCase{caseH2Connect}, false},
		{"none", nil, false},
		{"", nil, false},
		{"h3connect", nil, true},
		{"h1connect,h1connect", nil, true},
		{"h1connect,", nil, true},
	}
	for _, tt := range tests {
		got, err := parseTunnels(tt.in)
		if (err != nil) != tt.wantErr || !cmp.Equal(got, tt.want) {
			t.Errorf("parseTunnels(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestTunnelBootstrapIsValid loads the tunnel hop's bootstrap the way hop
// does (xds/bootstrap: strict decoding, hop's field allowlist, the protos'
// rules) and the way Envoy would (strict protojson and validation), and
// checks what the cases rely on.
func TestTunnelBootstrapIsValid(t *testing.T) {
	for _, withTCPH2 := range []bool{false, true} {
		ports := []int{10001}
		if withTCPH2 {
			ports = append(ports, 10002)
		}
		y, err := renderTunnelBootstrap(9904, ports, "127.0.0.1:18080")
		b := loadRendered(t, y, err) // Envoy's rules
		path := filepath.Join(t.TempDir(), "bootstrap.yaml")
		if err := os.WriteFile(path, y, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := bootstrap.Load(bootstrap.Options{Path: path}); err != nil {
			t.Errorf("tcph2 %v: hop's bootstrap loader refuses it: %v\n%s", withTCPH2, err, y)
		}

		lis, cls := b.GetStaticResources().GetListeners(), b.GetStaticResources().GetClusters()
		if len(lis) != len(ports) || len(cls) != len(ports) {
			t.Fatalf("tcph2 %v: %d listeners and %d clusters, want %d of each", withTCPH2, len(lis), len(cls), len(ports))
		}
		hcm := hcmOf(t, b, 0)
		if hcm.GetStatPrefix() != "connect" || hcm.GetCodecType().String() != "AUTO" || !hcm.GetHttp2ProtocolOptions().GetAllowConnect() {
			t.Errorf("connect listener: prefix %q codec %v h2 %v", hcm.GetStatPrefix(), hcm.GetCodecType(), hcm.GetHttp2ProtocolOptions())
		}
		route := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
		if route.GetMatch().GetConnectMatcher() == nil || route.GetRoute().GetCluster() != "echo" || !terminatesConnect(hcm) {
			t.Errorf("connect route = %v, want connect_matcher → echo with CONNECT connect_config", route)
		}
		if p := cls[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); cls[0].GetName() != "echo" || p != 18080 {
			t.Errorf("cluster 0 = %q port %d, want echo at 18080", cls[0].GetName(), p)
		}
		if !withTCPH2 {
			continue
		}
		var tp tcpproxyv3.TcpProxy
		if err := lis[1].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatalf("tcph2 listener: %v", err)
		}
		if tp.GetStatPrefix() != "tcph2" || tp.GetCluster() != "connect_h2" || tp.GetTunnelingConfig().GetHostname() != tunnelAuthority {
			t.Errorf("tcp_proxy = %v", &tp)
		}
		c := cls[1]
		var po httpv3.HttpProtocolOptions
		if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&po); err != nil {
			t.Fatalf("connect_h2 protocol options: %v", err)
		}
		ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if c.GetName() != "connect_h2" || po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil || ep.GetPortValue() != 10001 {
			t.Errorf("cluster 1 = %q, %v, endpoint %v; want connect_h2, HTTP/2, the connect listener", c.GetName(), &po, ep)
		}
	}
	if _, err := renderTunnelBootstrap(9904, []int{1, 2, 3}, "127.0.0.1:18080"); err == nil {
		t.Error("renderTunnelBootstrap with three ports = nil error")
	}
}

func TestReadConnectHead(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  bool
		rest     string
	}{
		{"plain 200", "HTTP/1.1 200 OK\r\n\r\n", false, ""},
		{"headers and early bytes", "HTTP/1.1 200 Connection established\r\nServer: x\r\n\r\nabc", false, "abc"},
		{"no reason", "HTTP/1.1 200\r\n\r\n", false, ""},
		{"403", "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", true, ""},
		{"other 2xx", "HTTP/1.1 204 No Content\r\n\r\n", true, ""},
		{"not HTTP", "SSH-2.0-x\r\n\r\n", true, ""},
		{"truncated", "HTTP/1.1 200 OK\r\nServer: x\r\n", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			err := readConnectHead(br)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readConnectHead = %v, want error %v", err, tt.wantErr)
			}
			if rest, _ := io.ReadAll(br); err == nil && string(rest) != tt.rest {
				t.Errorf("left %q after the head, want %q", rest, tt.rest)
			}
		})
	}
}

func TestCheckTunnelStats(t *testing.T) {
	st := func(h1, h2, echo, h2cx, tcp uint64) map[string]uint64 {
		return map[string]uint64{tunnelStats[0]: h1, tunnelStats[1]: h2, tunnelStats[2]: echo, tunnelStats[3]: h2cx, tunnelStats[4]: tcp}
	}
	zero := st(0, 0, 0, 0, 0)
	tests := []struct {
		name     string
		c        tunnelCase
		after    map[string]uint64
		wantErr  string
		wantNote string
	}{
		{"h1connect", caseH1Connect, st(100, 0, 100, 0, 0), "", "h1connect: 100 tunnels; hop opened 100 connections to the echo"},
		{"h1connect over HTTP/2", caseH1Connect, st(100, 3, 100, 0, 0), "3 http.connect.downstream_rq_http2_total, want 0", ""},
		{"h1connect too few", caseH1Connect, st(99, 0, 100, 0, 0), "counted 99", ""},
		{"h2connect", caseH2Connect, st(0, 100, 100, 0, 0), "", "h2connect: 100 tunnels; hop opened 100 connections to the echo"},
		{"h2connect over HTTP/1.1", caseH2Connect, st(1, 100, 100, 0, 0), "1 http.connect.downstream_rq_http1_total", ""},
		{"tcph2", caseTCPH2, st(0, 100, 100, 1, 100), "", "tcph2: 100 tunnels; hop opened 100 connections to the echo, 1 HTTP/2 connections tcph2→connect"},
		{"tcph2 connections missing", caseTCPH2, st(0, 100, 100, 1, 7), "counted 7 tcp.tcph2.downstream_cx_total", ""},
		{"counters absent", caseH2Connect, map[string]uint64{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := checkTunnelStats(tt.c, zero, tt.after, 100)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if note := cc.note(tt.c); err != nil || note != tt.wantNote {
				t.Errorf("= %q, %v; want note %q", note, err, tt.wantNote)
			}
		})
	}
	// Rounds add up; a count hop did not report stays unknown.
	sum := caseCounts{tunnels: 10, echoCx: 10, h2Cx: -1}.add(caseCounts{tunnels: 5, echoCx: 5, h2Cx: 2})
	if sum != (caseCounts{tunnels: 15, echoCx: 15, h2Cx: -1}) {
		t.Errorf("add = %+v", sum)
	}
}

func TestTunnelReport(t *testing.T) {
	o, err := parseFlags([]string{"-hop", "/bin/hop", "-conns", "8", "-tunnels", "h1connect,h2connect", "-splice-ref=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		h1      float64
		verdict string
	}{{900, "PASS: h1connect bulk throughput is 90% of direct (bar: 80%)"}, {700, "FAIL: h1connect bulk throughput is 70% of direct (bar: 80%)"}} {
		rep := newReport(o)
		tr := rep.Tunnels
		tr.set(tunnelBulkKey, "h1connect", tt.h1) // before direct: ratios wait for it
		tr.set(tunnelBulkKey, "direct", 1000)
		tr.set(tunnelBulkKey, "h2connect", 250)
		tr.set(tunnelSetupsKey, "direct", 8000)
		tr.Notes = append(tr.Notes, "h1connect: 1 tunnels")
		var out bytes.Buffer
		rep.writeTable(&out)
		s := out.String()
		for _, want := range []string{tt.verdict, "note: h1connect: 1 tunnels", "over 4 kept connections", "1 round(s) summed"} {
			if !strings.Contains(s, want) {
				t.Errorf("output lacks %q:\n%s", want, s)
			}
		}
		if strings.Contains(s, "tcph2") {
			t.Errorf("output mentions tcph2, which did not run:\n%s", s)
		}
		rows := tableRows(s)
		for label, want := range map[string][]string{
			"case":                       {"direct", "h1connect", "h1connect/direct", "h2connect", "h2connect/direct"},
			"bulk echo, 8 tunnels: MB/s": {"1000.0", strconv.FormatFloat(tt.h1, 'f', 1, 64), strconv.FormatFloat(tt.h1/1000, 'f', 2, 64), "250.0", "0.25"},
			"tunnel setups/s, 8 workers": {"8000", "-", "-", "-", "-"},
		} {
			if !cmp.Equal(rows[label], want) {
				t.Errorf("row %q = %q, want %q", label, rows[label], want)
			}
		}
	}
	// Without h1connect there is no verdict.
	o.tunnels = []tunnelCase{caseH2Connect}
	rep := newReport(o)
	rep.Tunnels.set(tunnelBulkKey, "direct", 1000)
	rep.Tunnels.set(tunnelBulkKey, "h2connect", 250)
	var out bytes.Buffer
	rep.Tunnels.writeTable(&out, "hop: x", 2, "1s")
	if strings.Contains(out.String(), "PASS") || strings.Contains(out.String(), "FAIL") {
		t.Errorf("verdict without h1connect:\n%s", out.String())
	}
}

// TestTunnelReportSpliceRef checks the reference's column, which comes
// right after direct, and the verdict's second line, which sets h1connect
// against the reference.
func TestTunnelReportSpliceRef(t *testing.T) {
	o, err := parseFlags([]string{"-hop", "/bin/hop", "-conns", "8", "-tunnels", "h1connect"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.spliceRef {
		t.Fatal("the splice reference is off by default with h1connect")
	}
	rep := newReport(o)
	tr := rep.Tunnels
	tr.set(tunnelBulkKey, "direct", 1000)
	tr.set(tunnelBulkKey, "h1connect", 540)
	tr.set(tunnelBulkKey, spliceRefName, 600)
	var out bytes.Buffer
	rep.writeTable(&out)
	s := out.String()
	for _, want := range []string{
		"FAIL: h1connect bulk throughput is 54% of direct (bar: 80%)",
		"the splice reference reaches 60% of direct on this machine; h1connect reaches 90% of the reference",
		"spliceref: the splice reference, a minimal HTTP/1.1 CONNECT proxy",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	rows := tableRows(s)
	if want := []string{"direct", "spliceref", "spliceref/direct", "h1connect", "h1connect/direct"}; !cmp.Equal(rows["case"], want) {
		t.Errorf("columns = %q, want %q", rows["case"], want)
	}
	if want := []string{"1000.0", "600.0", "0.60", "540.0", "0.54"}; !cmp.Equal(rows["bulk echo, 8 tunnels: MB/s"], want) {
		t.Errorf("bulk row = %q, want %q", rows["bulk echo, 8 tunnels: MB/s"], want)
	}
	// Without h1connect, or with -direct-only, there is no reference.
	for _, args := range [][]string{{"-hop", "/bin/hop", "-tunnels", "h2connect"}, {"-direct-only"}} {
		o, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if o.spliceRef {
			t.Errorf("%q: splice reference on", args)
		}
	}
}

// TestSpliceRefProxies runs the splice reference in-process: a CONNECT
// with bytes right behind its head gets 200, then every byte echoed, and a
// half-close comes back as EOF; closing the control stops it.
func TestSpliceRefProxies(t *testing.T) {
	echo, err := startTCPEcho()
	if err != nil {
		t.Fatal(err)
	}
	defer echo.stop()
	pr, pw := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serveSpliceRef(echo.addr, pr, outW) }()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := makePayload(256 << 10)
	// The head and the first bytes in one write, as a client may send them.
	if _, err := c.Write(append([]byte("CONNECT echo:1 HTTP/1.1\r\nHost: echo:1\r\n\r\n"), payload[:100]...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if err := readConnectHead(br); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.Write(payload[100:])
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}
	pw.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveSpliceRef after control EOF = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("serveSpliceRef still running after control EOF")
	}
}

// tableRows maps each markdown table row's first cell to the others.
func tableRows(s string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[cells[0]] = cells[1:]
	}
	return rows
}

// TestRunBulkDetectsLostHalfClose runs a bulk case against an echo that
// never passes the half-close on: the case must fail within its grace.
func TestRunBulkDetectsLostHalfClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hold := make(chan struct{})
	defer close(hold)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
				<-hold // no CloseWrite: the tunnel stays open
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = runBulk(ctx, tunnelLoad{Dial: dialTCP(l.Addr().String()), Conns: 2, Chunk: 4 << 10, Duration: 50 * time.Millisecond, OpTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Errorf("runBulk = %v, want a not-finished error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("runBulk took %v to give up", d)
	}
}

func TestRunTunnelsDirectOnly(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-direct-only", "-websocket=false", "-duration", "100ms", "-conns", "4"}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	s := out.String()
	if strings.Contains(s, "WebSocket") || strings.Contains(s, "PASS") || strings.Contains(s, "FAIL") {
		t.Errorf("output has WebSocket rows or a verdict:\n%s", s)
	}
	// A 100 ms bulk window under -race on a busy machine may echo nothing
	// in time, so bulk needs only a number; every worker completes at
	// least one setup, so setups must be positive.
	rows := tableRows(s)
	for _, tt := range []struct {
		label    string
		positive bool
	}{{"bulk echo, 4 tunnels: MB/s", false}, {"bulk echo: MB per CPU-second (bench + proxy)", false}, {"tunnel setups/s, 4 workers", true}} {
		cells := rows[tt.label]
		if len(cells) != 1 {
			t.Errorf("row %q = %q, want only a direct value, in:\n%s", tt.label, cells, s)
			continue
		}
		v, err := strconv.ParseFloat(cells[0], 64)
		if err != nil || v < 0 || tt.positive && v == 0 {
			t.Errorf("row %q: direct = %q, want a number, positive: %v", tt.label, cells[0], tt.positive)
		}
	}
}

// TestRunTunnelsThroughFakeHop runs every tunnel case through the fake hop,
// which terminates CONNECT on HTTP/1.1 and HTTP/2 and tunnels tcp_proxy over
// HTTP/2 like hop does.
func TestRunTunnelsThroughFakeHop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for about a second")
	}
	t.Setenv(fakeHopEnv, "proxy")
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-hop", os.Args[0], "-websocket=false", "-duration", "50ms", "-conns", "4", "-h2-conns", "2", "-rounds", "2", "-json"}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	var rep struct {
		Rows    []json.RawMessage `json:"rows"`
		Tunnels struct {
			Cases []string `json:"cases"`
			Rows  []struct {
				Key     string
				Direct  *float64
				Through map[string]float64 `json:"through_hop"`
				Ratio   map[string]float64 `json:"over_direct"`
			} `json:"rows"`
			Reference string     `json:"reference"`
			Bar       *barResult `json:"h1connect_bulk_bar"`
			Notes     []string   `json:"notes"`
		} `json:"tunnels"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode JSON: %v\n%s", err, out.String())
	}
	if len(rep.Rows) != 0 {
		t.Errorf("%d WebSocket rows with -websocket=false", len(rep.Rows))
	}
	tr := rep.Tunnels
	if !cmp.Equal(tr.Cases, []string{"h1connect", "h2connect", "tcph2"}) {
		t.Errorf("cases = %q", tr.Cases)
	}
	if tr.Reference != spliceRefName {
		t.Errorf("reference = %q, want %q", tr.Reference, spliceRefName)
	}
	if len(tr.Rows) != 3 {
		t.Fatalf("got %d tunnel rows, want 3", len(tr.Rows))
	}
	// Bulk windows this short through a race-instrumented fake may echo
	// nothing in time; the case still checked every byte and the
	// half-close (runBulk). Every worker completes at least one setup.
	for _, r := range tr.Rows {
		if r.Direct == nil {
			t.Errorf("%s: no direct value", r.Key)
			continue
		}
		for _, c := range append([]string{tr.Reference}, tr.Cases...) {
			v, ok := r.Through[c]
			if !ok || v < 0 || r.Key == tunnelSetupsKey && (v <= 0 || r.Ratio[c] <= 0) {
				t.Errorf("%s %s: %v (ratio %v)\n%s", r.Key, c, v, r.Ratio[c], out.String())
			}
		}
		if r.Key == tunnelBulkKey && *r.Direct > 0 && (tr.Bar == nil || tr.Bar.Bar != h1ConnectBar) {
			t.Errorf("bar = %+v, want h1connect against %v", tr.Bar, h1ConnectBar)
		}
	}
	// The fake multiplexes every tcph2 tunnel on one HTTP/2 connection.
	if len(tr.Notes) != 3 || !strings.Contains(tr.Notes[2], ", 1 HTTP/2 connections tcph2→connect") {
		t.Errorf("notes = %q", tr.Notes)
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"typical", "1234 (hop) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 12 0 100 0 0", 3250 * time.Millisecond, false},
		{"name with spaces and parens", "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 1 2 0 0", 30 * time.Millisecond, false},
		{"short", "1 (x) S 1 2 3", 0, true},
		{"no name", "1 x S", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 2", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Errorf("processCPU(self): %v", err)
	}
}
