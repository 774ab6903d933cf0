package listener

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

const tcpProxyFilter = `filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tp, cluster: echo}}]`

// startTCPProxyListener binds listener "l" (YAML of its remaining fields)
// with a cluster "echo" pointing at a TCP echo server, drain time drain.
func startTCPProxyListener(t *testing.T, rest string, drain time.Duration) *testListener {
	t.Helper()
	checkNoLeaks(t)
	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { echoLn.Close(); <-echoDone })

	j, err := yaml.YAMLToJSON([]byte("name: l\naddress: {socket_address: {address: 127.0.0.1, port_value: 0}}\n" + rest))
	if err != nil {
		t.Fatal(err)
	}
	lp := &listenerv3.Listener{}
	if err := protojson.Unmarshal(j, lp); err != nil {
		t.Fatal(err)
	}
	st := stats.New()
	l, err := snapshot.CompileListener(lp, filter.NewRegistry(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cm := upstream.NewManager(st, nil)
	port := uint32(echoLn.Addr().(*net.TCPAddr).Port)
	if _, err := cm.Add(&clusterv3.Cluster{
		Name:                 "echo",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "echo", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			}}}},
		}}},
	}); err != nil {
		t.Fatal(err)
	}
	tr := &tunnel.Tracker{}
	m := New(slog.New(slog.DiscardHandler), st, &hcm.Env{Clusters: cm, Tunnels: tr}, drain)
	if err := m.Reconcile([]*snapshot.Listener{l}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Shutdown(ctx)
		tr.Shutdown(ctx)
		cm.Close()
	})
	return &testListener{m: m, st: st, addr: m.Addr("l").String()}
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// TestTCPProxyTLSChain: a chain that terminates TLS is handshaken first,
// then its plaintext is proxied; the listener's accounting ends with the
// connection.
func TestTCPProxyTLSChain(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "127.0.0.1")
	tl := startTCPProxyListener(t, "filter_chains: [{"+tlsSocket(leaf, "")+", "+tcpProxyFilter+"}]", time.Second)
	c := tlsDial(t, tl.addr, &tls.Config{RootCAs: pki.Pool})
	echoOnce(t, c, "over tls")
	c.Close()
	waitStat(t, tl, "listener.127.0.0.1_0.downstream_cx_active", 0)
	for name, want := range map[string]int64{
		"listener.127.0.0.1_0.ssl.handshake":         1,
		"listener.127.0.0.1_0.downstream_cx_destroy": 1,
		"tcp.tp.downstream_cx_total":                 1,
		"tcp.tp.downstream_cx_rx_bytes_total":        int64(len("over tls")),
		"cluster.echo.upstream_cx_total":             1,
		"listener.127.0.0.1_0.no_filter_chain_match": 0,
	} {
		if got := tl.stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestTCPProxyDrainCuts: a tcp_proxy connection of a removed listener goes
// on during the drain time and is cut at its end.
func TestTCPProxyDrainCuts(t *testing.T) {
	tl := startTCPProxyListener(t, "filter_chains: [{"+tcpProxyFilter+"}]", 200*time.Millisecond)
	c := dialTCP(t, tl.addr)
	echoOnce(t, c, "before")
	if err := tl.m.Reconcile(nil); err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "draining") // still open right after the removal
	if err := closedByPeer(c); err != nil {
		t.Fatalf("not cut at the end of the drain: %v", err)
	}
	waitStat(t, tl, "listener.127.0.0.1_0.downstream_cx_active", 0)
}
