package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/resource"
	"github.com/hopproxy/hop/xds/xdstest"
)

// logBuffer collects log output and wakes waiters on every write.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// waitFor blocks until the log, from offset from, has a line containing
// every one of parts, and returns the offset after that line.
func (l *logBuffer) waitFor(ctx context.Context, t *testing.T, from int, parts ...string) int {
	t.Helper()
	for {
		l.mu.Lock()
		text, ch := l.buf.String(), l.changed
		l.mu.Unlock()
		off := from
		for _, line := range strings.SplitAfter(text[from:], "\n") {
			off += len(line)
			if !strings.HasSuffix(line, "\n") {
				break
			}
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return off
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no log line with %q; log:\n%s", parts, text)
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes data next to path and renames it over path, so that the
// control plane never sees a half-written file.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "tmp")
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func listeners(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString("- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: " + n + "\n")
	}
	return b.String()
}

func resourceNames(t *testing.T, resp *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, a := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		names = append(names, l.GetName())
	}
	slices.Sort(names) // a snapshot does not keep the order
	return names
}

func TestServesAndPushesChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	lds := filepath.Join(dir, "listeners.yaml")
	writeFile(t, lds, listeners("a"))
	writeFile(t, filepath.Join(dir, "cluster.json"),
		`{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "c", "type": "STATIC"}`)
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a resource file")

	logs := newLogBuffer()
	log := slog.New(slog.NewTextHandler(logs, nil))
	cp, err := start(ctx, config{dir: dir, addr: "127.0.0.1:0", node: "test-node", interval: 2 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		cp.serve(ctx)
	}()
	defer func() {
		cancel()
		<-served
	}()

	conn, err := grpc.NewClient(cp.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func(step, version string, names ...string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if resp.GetVersionInfo() != version || strings.Join(resourceNames(t, resp), ",") != strings.Join(names, ",") {
			t.Fatalf("%s: got %s %v, want %s %v", step, resp.GetVersionInfo(), resourceNames(t, resp), version, names)
		}
		return resp
	}
	send := func(req *discoveryv3.DiscoveryRequest) {
		t.Helper()
		req.TypeUrl = client.ListenerType
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}

	send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "test-node"}})
	v1 := recv("first", "v1", "a")
	send(&discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: v1.GetNonce()})
	at := logs.waitFor(ctx, t, 0, "msg=ACK", "version=v1", "type=Listener")

	replaceFile(t, lds, listeners("a", "bb"))
	v2 := recv("edited", "v2", "a", "bb")
	send(&discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResponseNonce: v2.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "listener bb: no good"}})
	at = logs.waitFor(ctx, t, at, "msg=NACK", "version=v1", `error_detail="listener bb: no good"`)
	// go-control-plane answers a NACK by sending the same snapshot again.
	again := recv("after the NACK", "v2", "a", "bb")
	send(&discoveryv3.DiscoveryRequest{VersionInfo: "v2", ResponseNonce: again.GetNonce()})
	at = logs.waitFor(ctx, t, at, "msg=ACK", "version=v2")

	// A file that does not parse keeps the last snapshot and uses no
	// version; the next good edit is v3.
	replaceFile(t, lds, listeners("a")+"  bogus_field: 1\n")
	at = logs.waitFor(ctx, t, at, "not pushed", "version=v2", "bogus_field")
	replaceFile(t, lds, listeners("a", "ccc"))
	v3 := recv("fixed", "v3", "a", "ccc")
	send(&discoveryv3.DiscoveryRequest{VersionInfo: "v3", ResponseNonce: v3.GetNonce()})
	logs.waitFor(ctx, t, at, "msg=ACK", "version=v3")

	// Delta ADS serves the same snapshot.
	delta, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "test-node"}, TypeUrl: client.ClusterType}); err != nil {
		t.Fatal(err)
	}
	dresp, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if dresp.GetSystemVersionInfo() != "v3" || len(dresp.GetResources()) != 1 || dresp.GetResources()[0].GetName() != "c" {
		t.Fatalf("delta: %v", dresp)
	}
}

// The demo resources parse, are consistent for ADS and pass hop's
// validation.
func TestDemoResources(t *testing.T) {
	res, err := loadDir(filepath.Join("..", "..", "testdata", "localcp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSnapshot(res); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{client.ListenerType: "demo", client.ClusterType: "echo", client.RouteType: "demo-routes"}
	if len(res) != len(want) {
		t.Fatalf("types: %s", summary(res))
	}
	for url, name := range want {
		if len(res[url]) != 1 || nameOf(res[url][0]) != name {
			t.Fatalf("%s: %s", url, summary(res))
		}
		if err := resource.Validate(res[url][0]); err != nil {
			t.Errorf("%s %s: %v", url, name, err)
		}
	}
	hcmOK := false
	l := res[client.ListenerType][0].(*listenerv3.Listener)
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		hcmOK = hcmOK || strings.Contains(f.GetTypedConfig().GetTypeUrl(), "HttpConnectionManager")
	}
	rc := res[client.RouteType][0].(*routev3.RouteConfiguration)
	c := res[client.ClusterType][0].(*clusterv3.Cluster)
	port := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	if !hcmOK || rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster() != "echo" || port != 18081 {
		t.Errorf("demo resources changed: %v\n%v\n%v", l, rc, c)
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"a.yaml", "name: x\n", `want a mapping with an "@type"`},
		{"a.yaml", "- 1\n", `want a mapping with an "@type"`},
		{"a.yaml", "5\n", "want a resource or a list"},
		{"a.yaml", "\"@type\": type.googleapis.com/no.Such\nname: x\n", "no.Such"},
		{"a.yaml", "\"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n", "has no name"},
		{"a.yaml", "a: [\n", "yaml"},
		{"a.yaml", "", "empty file"},
	}
	for _, tc := range tests {
		p := filepath.Join(t.TempDir(), tc.name)
		writeFile(t, p, tc.data)
		_, err := loadFile(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: error %v, want one naming the file and containing %q", tc.data, err, tc.want)
		}
	}
	// An empty file holds nothing; a name twice across files is an error.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "empty.yaml"), "# nothing yet\n")
	writeFile(t, filepath.Join(dir, ".swap.yaml"), "not: [valid")
	if res, err := loadDir(dir); err != nil || len(res) != 0 {
		t.Fatalf("empty file: %v, %v", res, err)
	}
	writeFile(t, filepath.Join(dir, "a.yaml"), listeners("x"))
	writeFile(t, filepath.Join(dir, "b.yml"), listeners("x"))
	if _, err := loadDir(dir); err == nil || !strings.Contains(err.Error(), `Listener "x" is also defined in`) {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestSameResources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), listeners("x1", "y1"))
	a, err := loadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := loadDir(dir)
	if !sameResources(a, b) {
		t.Error("same files differ")
	}
	b[client.ListenerType][1] = proto.Clone(b[client.ListenerType][0])
	if sameResources(a, b) {
		t.Error("different resources are the same")
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, args := range [][]string{
		{"-nope"},
		{"extra"},
		{"-dir", ""},
		{"-interval", "0s"},
		{"-dir", filepath.Join(t.TempDir(), "missing"), "-addr", "127.0.0.1:0"},
		{"-dir", t.TempDir(), "-addr", "not-an-address"},
	} {
		if err := run(context.Background(), args, io.Discard, log); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}

func TestRepeatedNACKsLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	cp := &controlPlane{log: slog.New(slog.NewTextHandler(&buf, nil))}
	runs := map[string]*nackRun{}
	nack := xdstest.Request{Stream: 1, TypeURL: client.RouteType, Version: "v1", Nonce: "5", Error: "bad route"}
	for range 12 {
		cp.logRequest(nack, runs)
	}
	other := nack
	other.Stream = 2
	cp.logRequest(other, runs) // another stream is another run
	cp.logRequest(xdstest.Request{Stream: 1, TypeURL: client.RouteType, Version: "v2", Nonce: "6"}, runs)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		got = append(got, line[strings.Index(line, "msg="):])
	}
	want := []string{
		`msg=NACK stream=1 type=RouteConfiguration nonce=5 version=v1 error_detail="bad route"`,
		`msg=NACK stream=1 type=RouteConfiguration nonce=5 version=v1 error_detail="bad route" times=11`,
		`msg=NACK stream=2 type=RouteConfiguration nonce=5 version=v1 error_detail="bad route"`,
		`msg="NACKed in a row" stream=1 type=RouteConfiguration times=12`,
		`msg=ACK stream=1 type=RouteConfiguration nonce=6 version=v2`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
