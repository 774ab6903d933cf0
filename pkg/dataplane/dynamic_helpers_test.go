package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/admin"
	"github.com/hopproxy/hop/pkg/dataplane"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
)

// The helpers here drive a data plane with Bundles built in the test, the
// way the xDS layer drives it: every call to a builder returns a new proto
// pointer (a changed resource); reusing a returned pointer in the next
// Bundle is an unchanged resource.

// startDynamic starts a data plane with nothing configured, whose removed
// listeners drain for drain.
func startDynamic(t *testing.T, drain time.Duration) *hop {
	t.Helper()
	st := stats.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dp := dataplane.New(log, st, drain)
	h := &hop{t: t, dp: dp, st: st}
	h.admin = admin.New(admin.Options{
		Stats:     st,
		Listeners: dp.ListenerStatus,
		Clusters:  dp.ClusterStatus,
		Ready:     func() bool { return true },
	}).Handler()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() { defer close(done); dp.Shutdown(ctx) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Shutdown did not return 4s after its context ended")
		}
	})
	return h
}

func (h *hop) apply(b snapshot.Bundle) {
	h.t.Helper()
	if err := h.dp.Apply(b); err != nil {
		h.t.Fatalf("apply: %v", err)
	}
}

func parse[T proto.Message](t *testing.T, m T, js string) T {
	t.Helper()
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatalf("parse %T: %v\n%s", m, err, js)
	}
	return m
}

// hcmJSON is an HttpConnectionManager with stat_prefix "t" that takes its
// routes from RDS resource "r" and upgrades WebSockets; extra are more
// fields, each preceded by a comma.
func hcmJSON(extra string) string {
	return `{"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
 "stat_prefix": "t",
 "rds": {"route_config_name": "r", "config_source": {"ads": {}}},
 "upgrade_configs": [{"upgrade_type": "websocket"}],
 "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]` + extra + `}`
}

// newListener returns listener name on addr (host:port) with one filter
// chain holding hcmJSON(hcmExtra).
func newListener(t *testing.T, name, addr, hcmExtra string) *listenerv3.Listener {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, &listenerv3.Listener{}, fmt.Sprintf(`{"name": %q,
 "address": {"socket_address": {"address": %q, "port_value": %s}},
 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": %s}]}]}`,
		name, host, port, hcmJSON(hcmExtra)))
}

// newRoutes returns RouteConfiguration "r": each pair of prefixes is
// (path prefix, cluster), in order.
func newRoutes(t *testing.T, prefixCluster ...string) *routev3.RouteConfiguration {
	t.Helper()
	routes := ""
	for i := 0; i+1 < len(prefixCluster); i += 2 {
		if routes != "" {
			routes += ","
		}
		routes += fmt.Sprintf(`{"match": {"prefix": %q}, "route": {"cluster": %q}}`, prefixCluster[i], prefixCluster[i+1])
	}
	return parse(t, &routev3.RouteConfiguration{}, `{"name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"], "routes": [`+routes+`]}]}`)
}

// newStatic returns a STATIC cluster with one endpoint 127.0.0.1:port;
// extra are more fields, each preceded by a comma (connect_timeout is 1s
// unless extra sets it).
func newStatic(t *testing.T, name string, port int, extra string) *clusterv3.Cluster {
	t.Helper()
	if !strings.Contains(extra, `"connect_timeout"`) {
		extra += `, "connect_timeout": "1s"`
	}
	return parse(t, &clusterv3.Cluster{}, fmt.Sprintf(`{"name": %q, "type": "STATIC",
 "load_assignment": {"cluster_name": %q, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}]}]}%s}`,
		name, name, port, extra))
}

// newEDS returns an EDS cluster fed over ADS.
func newEDS(t *testing.T, name string) *clusterv3.Cluster {
	t.Helper()
	return parse(t, &clusterv3.Cluster{}, fmt.Sprintf(`{"name": %q, "type": "EDS", "connect_timeout": "1s",
 "eds_cluster_config": {"eds_config": {"ads": {}}}}`, name))
}

// newCLA returns the endpoints of EDS resource name: 127.0.0.1 at ports.
func newCLA(t *testing.T, name string, ports ...int) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	eps := ""
	for i, p := range ports {
		if i > 0 {
			eps += ","
		}
		eps += fmt.Sprintf(`{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}`, p)
	}
	return parse(t, &endpointv3.ClusterLoadAssignment{}, fmt.Sprintf(`{"cluster_name": %q, "endpoints": [{"lb_endpoints": [%s]}]}`, name, eps))
}

// namedUpstream is an HTTP upstream that answers every request with its
// name.
func namedUpstream(t *testing.T, name string) int {
	t.Helper()
	return upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
}

// keepAliveClient is an HTTP client limited to one connection to hop,
// which counts the connections it dials.
type keepAliveClient struct {
	t     *testing.T
	c     *http.Client
	dials atomic.Int64
}

func newKeepAliveClient(t *testing.T) *keepAliveClient {
	k := &keepAliveClient{t: t}
	d := &net.Dialer{Timeout: defaultTestTimeout}
	tr := &http.Transport{
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			k.dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	k.c = &http.Client{Transport: tr, Timeout: defaultTestTimeout}
	t.Cleanup(tr.CloseIdleConnections)
	return k
}

// get returns the status and body of GET url.
func (k *keepAliveClient) get(url string) (int, string) {
	k.t.Helper()
	res, err := k.c.Get(url)
	if err != nil {
		k.t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		k.t.Fatalf("GET %s: body: %v", url, err)
	}
	return res.StatusCode, string(b)
}

// dialWS opens a WebSocket through hop at addr.
func dialWS(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	ws, res, err := websocket.DefaultDialer.DialContext(ctx, "ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", addr, err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("websocket dial %s: status %d", addr, res.StatusCode)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// echoOnce sends msg and returns nil if it comes back unchanged.
func echoOnce(ws *websocket.Conn, msg string) error {
	ws.SetWriteDeadline(time.Now().Add(defaultTestTimeout))
	ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_, got, err := ws.ReadMessage()
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, []byte(msg)) {
		return fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return nil
}

// closeWS ends a WebSocket with the close handshake; an error means the
// socket was already broken.
func closeWS(ws *websocket.Conn) error {
	ws.SetWriteDeadline(time.Now().Add(defaultTestTimeout))
	ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if err := ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		return err
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		return fmt.Errorf("close handshake: %v", err)
	}
	return ws.Close()
}

// expectRefused asserts that nothing listens on addr any more.
func expectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want connection refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// waitClosed waits, until deadline, for the peer to close c (a read that
// ends in EOF or a reset, after any bytes) and returns when that happened.
// A read deadline reached first fails the test.
func waitClosed(t *testing.T, c net.Conn, deadline time.Time) time.Time {
	t.Helper()
	c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open at the deadline")
	}
	return time.Now()
}

// drain1s is the drain time of the tests that do not wait for one.
const drain1s = time.Second

// soon is the deadline for things that should happen at once.
func soon() time.Time { return time.Now().Add(2 * time.Second) }
