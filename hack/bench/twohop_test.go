//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// loadRendered writes y to a file and loads it as hop would.
func loadRendered(t *testing.T, y []byte, err error) *bootstrapv3.Bootstrap {
	t.Helper()
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
	return b
}

// hcmOf returns listener i's connection manager.
func hcmOf(t *testing.T, b *bootstrapv3.Bootstrap, i int) *hcmv3.HttpConnectionManager {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[i].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	return &hcm
}

func TestTwoHopBootstrapsAreValidEnvoyConfig(t *testing.T) {
	t.Run("sidecar", func(t *testing.T) {
		y, err := renderSidecarBootstrap(9902, 10001, "127.0.0.1:18080")
		b := loadRendered(t, y, err)
		if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 9902 {
			t.Errorf("admin port = %d", got)
		}
		lis := b.GetStaticResources().GetListeners()
		if len(lis) != 1 || lis[0].GetAddress().GetSocketAddress().GetPortValue() != 10001 {
			t.Fatalf("listeners = %v, want one on port 10001", lis)
		}
		hcm := hcmOf(t, b, 0)
		if hcm.GetStatPrefix() != sidecarPrefix || hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
			t.Errorf("stat_prefix %q codec %v, want %q AUTO", hcm.GetStatPrefix(), hcm.GetCodecType(), sidecarPrefix)
		}
		if !hcm.GetHttp2ProtocolOptions().GetAllowConnect() {
			t.Errorf("http2_protocol_options = %v, want allow_connect", hcm.GetHttp2ProtocolOptions())
		}
		if u := hcm.GetUpgradeConfigs(); len(u) != 1 || u[0].GetUpgradeType() != "websocket" {
			t.Errorf("upgrade_configs = %v, want [websocket]", u)
		}
		if c := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); c != "echo" {
			t.Errorf("route cluster = %q, want echo", c)
		}
		cls := b.GetStaticResources().GetClusters()
		if len(cls) != 1 || cls[0].GetName() != "echo" || len(cls[0].GetTypedExtensionProtocolOptions()) != 0 {
			t.Errorf("clusters = %v, want only echo, HTTP/1.1", cls)
		}
	})
	t.Run("front", func(t *testing.T) {
		y, err := renderFrontBootstrap(9903, []int{10002, 10003}, "127.0.0.1:10001")
		b := loadRendered(t, y, err)
		lis := b.GetStaticResources().GetListeners()
		if len(lis) != 2 {
			t.Fatalf("got %d listeners, want 2", len(lis))
		}
		cls := b.GetStaticResources().GetClusters()
		if len(cls) != 2 {
			t.Fatalf("got %d clusters, want 2", len(cls))
		}
		for i, v := range twoHopVariants {
			if p := lis[i].GetAddress().GetSocketAddress().GetPortValue(); p != uint32(10002+i) {
				t.Errorf("%s: listener port %d", v.target, p)
			}
			hcm := hcmOf(t, b, i)
			if hcm.GetHttp2ProtocolOptions() != nil {
				t.Errorf("%s: front listener has http2_protocol_options; it is an HTTP/1.1 listener", v.target)
			}
			if u := hcm.GetUpgradeConfigs(); len(u) != 1 || u[0].GetUpgradeType() != "websocket" {
				t.Errorf("%s: upgrade_configs = %v, want [websocket]", v.target, u)
			}
			if c := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); c != v.cluster {
				t.Errorf("%s: route cluster = %q, want %q", v.target, c, v.cluster)
			}
			c := cls[i]
			ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if c.GetName() != v.cluster || ep.GetPortValue() != 10001 {
				t.Errorf("%s: cluster %q endpoint %v, want %q at the sidecar", v.target, c.GetName(), ep, v.cluster)
			}
			opts := c.GetTypedExtensionProtocolOptions()
			if !v.h2 {
				if len(opts) != 0 {
					t.Errorf("%s: protocol options %v, want none (HTTP/1.1)", v.target, opts)
				}
				continue
			}
			var po httpv3.HttpProtocolOptions
			if err := opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&po); err != nil {
				t.Fatalf("%s: HttpProtocolOptions: %v", v.target, err)
			}
			if !po.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetAllowConnect() {
				t.Errorf("%s: protocol options %v, want explicit HTTP/2 with allow_connect", v.target, &po)
			}
		}
	})
	if _, err := renderFrontBootstrap(9903, []int{10002}, "127.0.0.1:10001"); err == nil {
		t.Error("renderFrontBootstrap with one port for two listeners = nil error")
	}
}

func TestParseTwoHop(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"h1,h2", []string{"h1hop", "h2hop"}, false},
		{"h2, h1", []string{"h1hop", "h2hop"}, false},
		{"h2", []string{"h2hop"}, false},
		{"h1", []string{"h1hop"}, false},
		{"none", nil, false},
		{"", nil, false},
		{"h3", nil, true},
		{"h1,h1", nil, true},
		{"h1,", nil, true},
	}
	for _, tt := range tests {
		vs, err := parseTwoHop(tt.in)
		var got []string
		for _, v := range vs {
			got = append(got, v.target)
		}
		if (err != nil) != tt.wantErr || !cmp.Equal(got, tt.want) {
			t.Errorf("parseTwoHop(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseStats(t *testing.T) {
	in := "cluster.a.upstream_cx_total: 12\n" +
		"http.sidecar.downstream_rq_http2_total: 64\n" +
		"cluster.a.upstream_rq_time: P0(nan,1) P25(nan,2)\n" + // a histogram
		"server.version: abc\n" + // a text readout
		"no separator here\n"
	got, err := parseStats(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"cluster.a.upstream_cx_total": 12, "http.sidecar.downstream_rq_http2_total": 64}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseStats (-want +got):\n%s", diff)
	}
}

func TestCheckProtocol(t *testing.T) {
	h1, h2 := twoHopVariants[0], twoHopVariants[1]
	rq1, rq2 := sidecarRequestStats[0], sidecarRequestStats[1]
	stats := func(n1, n2 uint64) map[string]uint64 { return map[string]uint64{rq1: n1, rq2: n2} }
	tests := []struct {
		name          string
		v             twoHopVariant
		before, after map[string]uint64
		wantErr       string
	}{
		{"h2 all over HTTP/2", h2, stats(5, 10), stats(5, 74), ""},
		{"h2 more streams than WebSockets", h2, stats(0, 0), stats(0, 70), ""},
		{"h1 all over HTTP/1.1", h1, stats(3, 64), stats(67, 64), ""},
		{"h2 fell back to HTTP/1.1", h2, stats(0, 0), stats(64, 0), "0 requests in http.sidecar.downstream_rq_http2_total"},
		{"h2 partly HTTP/1.1", h2, stats(0, 0), stats(1, 64), "and 1 in"},
		{"h1 over HTTP/2", h1, stats(0, 0), stats(0, 64), "0 requests in http.sidecar.downstream_rq_http1_total"},
		{"too few", h2, stats(0, 0), stats(0, 63), "63 requests"},
		{"stat missing", h2, map[string]uint64{}, map[string]uint64{rq1: 0}, "its /stats has no " + rq2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkProtocol(tt.v, tt.before, tt.after, 64)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("checkProtocol = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("checkProtocol = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestWriteTableTwoHopColumns(t *testing.T) {
	o, err := parseFlags([]string{"-hop", "/bin/hop", "-conns", "2", "-idle", "3"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(o)
	r.set("throughput_1k_msgs", "direct", 100)
	r.set("throughput_1k_msgs", "hop", 50)
	r.set("throughput_1k_msgs", "h1hop", 40)
	r.set("throughput_1k_msgs", "h2hop", 30)
	r.set(frontSidecarCxKey, "h1hop", 128)
	r.set(frontSidecarCxKey, "h2hop", 1)
	var out bytes.Buffer
	r.writeTable(&out)
	rows := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		cells := strings.Split(strings.Trim(line, "| "), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) == 7 {
			rows[cells[0]] = cells[1:]
		}
	}
	for label, want := range map[string][]string{
		"case":                   {"direct", "hop", "hop/direct", "h1hop", "h2hop", "h2hop/h1hop"},
		"1 KiB × 2 conns: msg/s": {"100", "50", "0.50", "40", "30", "0.75"},
		"front→sidecar connections opened, all cases": {"-", "-", "-", "128", "1", "-"},
		"open 3 WebSockets (ms)":                      {"-", "-", "-", "-", "-", "-"},
	} {
		if diff := cmp.Diff(want, rows[label]); diff != "" {
			t.Errorf("row %q (-want +got):\n%s\ntable:\n%s", label, diff, out.String())
		}
	}
}

func TestStartTwoHopThroughFakeHop(t *testing.T) {
	t.Setenv(fakeHopEnv, "proxy")
	t.Setenv("GODEBUG", withXConnect(os.Getenv("GODEBUG")))
	echo, err := startEcho()
	if err != nil {
		t.Fatal(err)
	}
	defer echo.stop(testLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	th, err := startTwoHop(ctx, os.Args[0], echo.addr, nil, testLogger())
	if err != nil {
		t.Fatalf("startTwoHop: %v", err)
	}
	defer th.Stop()
	for _, v := range twoHopVariants {
		before, err := th.sidecarRequests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := runThroughput(ctx, loadConfig{URL: th.url(v), Conns: 4, MsgSize: 100, Duration: 50 * time.Millisecond, OpTimeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("%s: %v", v.target, th.explain(err))
		}
		if res.Messages == 0 {
			t.Errorf("%s: no messages echoed", v.target)
		}
		after, err := th.sidecarRequests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkProtocol(v, before, after, 4); err != nil {
			t.Errorf("%v", err)
		}
	}
	cx, err := th.frontConnections(ctx, twoHopVariants)
	if err != nil {
		t.Fatal(err)
	}
	if cx["h1hop"] != 4 || cx["h2hop"] != 1 {
		t.Errorf("front→sidecar connections = %v, want h1hop 4 (one per WebSocket) and h2hop 1", cx)
	}
}

// withXConnect adds http2xconnect=1 to a GODEBUG value, which the fake hop's
// HTTP/2 server needs to accept extended CONNECT.
func withXConnect(godebug string) string {
	if godebug == "" {
		return "http2xconnect=1"
	}
	return godebug + ",http2xconnect=1"
}
