//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// fakeHopEnv turns the test binary into a stand-in for hop when the bench
// executes it: "proxy" serves the bootstrap (see fakeHop), "fail" prints a
// message and exits 3.
const fakeHopEnv = "HOP_BENCH_FAKE_HOP"

func TestMain(m *testing.M) {
	maybeRunSpliceRef()
	switch mode := os.Getenv(fakeHopEnv); mode {
	case "":
		os.Exit(m.Run())
	case "proxy":
		err := fakeHop(os.Args[1:])
		fmt.Fprintln(os.Stderr, "fake hop:", err)
		os.Exit(1)
	case "fail":
		fmt.Fprintln(os.Stderr, "fake hop: refusing to start")
		os.Exit(3)
	default:
		fmt.Fprintf(os.Stderr, "fake hop: unknown mode %q\n", mode)
		os.Exit(2)
	}
}

// loadBootstrap parses an Envoy bootstrap the way hop will: YAML to JSON,
// strict protojson (unknown fields and unknown Any types rejected), then the
// protos' own validation rules.
func loadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	y, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return &b, nil
}

// fakeHop accepts the command line the bench uses, serves admin /ready and
// /stats, and serves every listener of the bootstrap: each sends all requests
// to the cluster of its first route. A listener whose connection manager has
// http2_protocol_options.allow_connect also takes HTTP/2 with prior
// knowledge; a cluster with explicit HTTP/2 options is reached over HTTP/2,
// WebSockets as extended CONNECT (fakeh2_test.go). A listener whose route
// has a CONNECT connect_config terminates CONNECT, and a tcp_proxy listener
// tunnels over HTTP/2 CONNECT (fakeconnect_test.go). Extended CONNECT needs
// GODEBUG=http2xconnect=1 in the environment. It runs until killed.
func fakeHop(args []string) error {
	if len(args) != 4 || args[0] != "-c" || args[2] != "--base-id" {
		return fmt.Errorf("want -c <file> --base-id N, got %q", args)
	}
	if _, err := strconv.ParseUint(args[3], 10, 32); err != nil {
		return fmt.Errorf("--base-id %q: %w", args[3], err)
	}
	b, err := loadBootstrap(args[1])
	if err != nil {
		return err
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	lis := b.GetStaticResources().GetListeners()
	if admin == nil || len(lis) == 0 {
		return errors.New("want an admin address and a listener")
	}
	st := &fakeStats{}
	clusters := map[string]*fakeCluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		up := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		clusters[c.GetName()] = newFakeCluster(c.GetName(), sockAddr(up), hasExplicitH2(c), st)
	}

	errc := make(chan error, 1+len(lis))
	al, err := net.Listen("tcp", sockAddr(admin))
	if err != nil {
		return err
	}
	go func() { errc <- http.Serve(al, st.adminHandler()) }()
	for _, l := range lis {
		filter := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
		if filter.MessageIs(&tcpproxyv3.TcpProxy{}) {
			p, err := newFakeTCPProxy(filter, clusters, st)
			if err != nil {
				return fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
			ln, err := net.Listen("tcp", sockAddr(l.GetAddress().GetSocketAddress()))
			if err != nil {
				return err
			}
			go func() { errc <- p.serve(ln) }()
			continue
		}
		var hcm hcmv3.HttpConnectionManager
		if err := filter.UnmarshalTo(&hcm); err != nil {
			return err
		}
		name := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
		c, ok := clusters[name]
		if !ok {
			return fmt.Errorf("listener %s routes to unknown cluster %q", l.GetName(), name)
		}
		for _, p := range []int{1, 2} { // reported from the start, 0 included, as Envoy does
			st.declare(fmt.Sprintf("http.%s.downstream_rq_http%d_total", hcm.GetStatPrefix(), p))
		}
		srv := &http.Server{Handler: &fakeListener{prefix: hcm.GetStatPrefix(), cluster: c, stats: st, terminate: terminatesConnect(&hcm)}}
		if hcm.GetHttp2ProtocolOptions().GetAllowConnect() {
			srv.Protocols = new(http.Protocols)
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetUnencryptedHTTP2(true)
		}
		ln, err := net.Listen("tcp", sockAddr(l.GetAddress().GetSocketAddress()))
		if err != nil {
			return err
		}
		go func() { errc <- srv.Serve(ln) }()
	}
	return <-errc
}

func sockAddr(sa *corev3.SocketAddress) string {
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

// hasExplicitH2 reports whether cluster c is configured for HTTP/2 upstream.
func hasExplicitH2(c *clusterv3.Cluster) bool {
	any, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		return false
	}
	var po httpv3.HttpProtocolOptions
	if err := any.UnmarshalTo(&po); err != nil {
		return false
	}
	return po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// fakeStats are the counters the fake reports on admin /stats, by name.
type fakeStats struct{ m sync.Map } // string -> *atomic.Uint64

func (s *fakeStats) declare(name string) *atomic.Uint64 {
	v, _ := s.m.LoadOrStore(name, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

func (s *fakeStats) inc(name string) { s.declare(name).Add(1) }

// adminHandler serves /ready and /stats (text format, optional filter).
func (s *fakeStats) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "LIVE") })
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		re, err := regexp.Compile(r.URL.Query().Get("filter"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.m.Range(func(k, v any) bool {
			if re.MatchString(k.(string)) {
				fmt.Fprintf(w, "%s: %d\n", k, v.(*atomic.Uint64).Load())
			}
			return true
		})
	})
	return mux
}

// fakeListener is one listener: it counts requests by protocol as Envoy's
// http.<prefix>.downstream_rq_http{1,2}_total and hands them to its cluster.
type fakeListener struct {
	prefix    string
	cluster   *fakeCluster
	stats     *fakeStats
	terminate bool // its first route terminates CONNECT (connect_config)
}

func (l *fakeListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.stats.inc(fmt.Sprintf("http.%s.downstream_rq_http%d_total", l.prefix, r.ProtoMajor))
	switch {
	case l.terminate && r.Method == http.MethodConnect && r.Header.Get(":protocol") == "":
		l.cluster.serveTerminate(w, r) // CONNECT in, raw TCP out (fakeconnect_test.go)
	case r.ProtoMajor == 2 && r.Method == http.MethodConnect && r.Header.Get(":protocol") == "websocket":
		l.cluster.serveH2WebSocket(w, r) // RFC 8441 in, HTTP/1.1 upgrade out
	case l.cluster.h2 && websocket.IsWebSocketUpgrade(r):
		l.cluster.serveWebSocketOverH2(w, r) // HTTP/1.1 upgrade in, RFC 8441 out
	default:
		l.cluster.proxy.ServeHTTP(w, r) // HTTP/1.1 in and out, upgrades included
	}
}
