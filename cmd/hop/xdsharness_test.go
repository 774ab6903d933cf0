package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/hack/echo/echoserver"
	"github.com/hopproxy/hop/xds/xdstest"
)

const testNode = "hop-test"

// backend is a named echo upstream on loopback: plain requests get the
// echo description with an x-backend header naming it; WebSockets echo.
type backend struct {
	name string
	addr string
}

func startBackend(t *testing.T, name string) backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo := echoserver.New()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-backend", name)
		echo.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return backend{name: name, addr: ln.Addr().String()}
}

// startControlPlane starts a go-control-plane management server on
// loopback for the test.
func startControlPlane(t *testing.T) *xdstest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := xdstest.Start(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(); cancel() })
	return s
}

// adsBootstrap is a bootstrap that takes listeners and clusters over ADS
// (delta when delta is set) from the management server at xdsAddr, through
// a static HTTP/2 cluster as Envoy users write it.
func adsBootstrap(xdsAddr string, adminPort int, delta bool) string {
	host, port, _ := net.SplitHostPort(xdsAddr)
	api := "GRPC"
	if delta {
		api = "DELTA_GRPC"
	}
	return fmt.Sprintf(`
node: {id: %s, cluster: test-cluster, metadata: {team: platform}, locality: {zone: z1}}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
dynamic_resources:
  ads_config:
    api_type: %s
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, testNode, adminPort, api, host, port)
}

// hopRun is a hop started by run() in the test process.
type hopRun struct {
	t        *testing.T
	adminURL string
	done     chan int
	errb     *syncBuffer
	exited   bool
}

// startHop runs hop on bootstrap (YAML) with --drain-time-s drain and
// waits until its admin interface answers /ready with 200.
func startHop(t *testing.T, bootstrapYAML string, adminPort int, drain int) *hopRun {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrapYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &hopRun{t: t, adminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort), done: make(chan int, 1), errb: &syncBuffer{}}
	var out syncBuffer
	go func() {
		h.done <- run([]string{"-c", path, "--base-id", "1", "-l", "info", "--drain-time-s", strconv.Itoa(drain)}, &out, h.errb)
	}()
	t.Cleanup(h.stop)
	waitReady(t, h.adminURL, h.done, h.errb)
	return h
}

func (h *hopRun) stop() {
	if h.exited {
		return
	}
	h.exited = true
	res, err := http.Post(h.adminURL+"/quitquitquit", "", nil)
	if err == nil {
		res.Body.Close()
	}
	select {
	case code := <-h.done:
		if code != 0 {
			h.t.Errorf("hop exited %d: %s", code, h.errb.String())
		}
	case <-time.After(3 * defaultTestTimeout):
		h.t.Errorf("hop did not exit after /quitquitquit")
	}
}

// stat returns a stat's value from /stats (-1 when absent).
func (h *hopRun) stat(name string) int64 {
	h.t.Helper()
	body := httpGet(h.t, h.adminURL+"/stats?filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// waitStat waits until a stat satisfies ok.
func (h *hopRun) waitStat(name string, ok func(int64) bool) int64 {
	h.t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		v := h.stat(name)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("stat %s = %d, never as wanted\n%s", name, v, h.errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configDump returns /config_dump decoded as generic JSON.
func (h *hopRun) configDump(resource string) map[string]any {
	h.t.Helper()
	url := h.adminURL + "/config_dump"
	if resource != "" {
		url += "?resource=" + resource
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(httpGet(h.t, url)), &out); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// get sends GET url and returns the status, the x-backend and
// x-route-version headers, and the body.
func get(client *http.Client, url string) (status int, backend, version, body string, err error) {
	res, err := client.Get(url)
	if err != nil {
		return 0, "", "", "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("x-backend"), res.Header.Get("x-route-version"), string(b), nil
}

// waitRoute polls url until the response comes from backend with route
// version; it returns how long that took.
func waitRoute(t *testing.T, client *http.Client, url, backend, version string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for {
		status, b, v, body, err := get(client, url)
		if err == nil && status == 200 && b == backend && v == version {
			return time.Since(start)
		}
		last = fmt.Sprintf("status %d backend %q version %q err %v body %.200q", status, b, v, err, body)
		if time.Since(start) > within {
			t.Fatalf("GET %s: not served by %s with route version %s within %v; last: %s", url, backend, version, within, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
