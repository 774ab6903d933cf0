package watch

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/pkg/dataplane"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
)

// Push-to-serving: the time from a response's bytes to the new snapshot
// serving (decode each Any, validate, compile, swap), for a route
// configuration of 1,000 routes and 100 clusters, through the real data
// plane.

type dpApplier struct{ dp *dataplane.DataPlane }

func (a dpApplier) Check(m proto.Message) error { return a.dp.Check(m) }
func (a dpApplier) Apply(b Bundle) error        { return a.dp.Apply(snapshot.Bundle(b)) }

type nopSource struct{}

func (nopSource) Watch(string, bool, []string, client.Handler) {}

func benchWatcher(b *testing.B) *Watcher {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	bs := &bootstrapv3.Bootstrap{DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
		AdsConfig: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC, GrpcServices: []*corev3.GrpcService{{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "xds"}},
		}}},
		LdsConfig: ads, CdsConfig: ads,
	}}
	log := slog.New(slog.DiscardHandler)
	st := stats.New()
	dp := dataplane.New(log, st, time.Second)
	b.Cleanup(func() { dp.Shutdown(context.Background()) })
	w, err := New(Options{Bootstrap: bs, Applier: dpApplier{dp}, Stats: st, Log: log})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	w.ctx, w.cancel, w.started = ctx, cancel, true
	w.sources["ads"] = nopSource{}
	return w
}

func benchRoutes(version string, clusters int) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: "r1"}
	for v := 0; v < 10; v++ {
		vh := &routev3.VirtualHost{Name: fmt.Sprintf("vh%d", v), Domains: []string{fmt.Sprintf("host%d.example.com", v)}}
		for r := 0; r < 100; r++ {
			vh.Routes = append(vh.Routes, &routev3.Route{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/svc%d/", r)}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("c%d", (v*100+r)%clusters)},
					UpgradeConfigs:   []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}},
				}},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-version", Value: version}}},
			})
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	return rc
}

func benchCluster(i int, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 fmt.Sprintf("c%d", i),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(timeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: fmt.Sprintf("c%d", i), Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(20000 + i)},
				}}},
			}}}},
		}}},
	}
}

func benchListener(b *testing.B) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	h, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "bench",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r1", ConfigSource: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	return &listenerv3.Listener{
		Name: "l1",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h}}}}},
	}
}

// wire turns resources into what arrives on the stream: Any bytes.
func wire(b *testing.B, ms ...proto.Message) []*anypb.Any {
	var out []*anypb.Any
	for _, m := range ms {
		a, err := anypb.New(m)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// push decodes the Anys as the client does and hands the update over.
func push(b *testing.B, w *Watcher, typeURL, version string, anys []*anypb.Any) {
	u := client.Update{TypeURL: typeURL, Version: version, FullState: typeURL == client.ListenerType || typeURL == client.ClusterType}
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			b.Fatal(err)
		}
		name := ""
		if n, ok := m.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		u.Resources = append(u.Resources, client.Resource{Name: name, Message: m})
	}
	if err := w.handlers[typeURL].OnUpdate(u); err != nil {
		b.Fatal(err)
	}
}

func setupBench(b *testing.B) *Watcher {
	w := benchWatcher(b)
	var cs []proto.Message
	for i := 0; i < 100; i++ {
		cs = append(cs, benchCluster(i, time.Second))
	}
	push(b, w, client.ClusterType, "c0", wire(b, cs...))
	push(b, w, client.ListenerType, "l0", wire(b, benchListener(b)))
	push(b, w, client.RouteType, "r0", wire(b, benchRoutes("r0", 100)))
	if len(w.lds.active) != 1 || len(w.cds.active) != 100 {
		b.Fatalf("setup: %d listeners, %d clusters active", len(w.lds.active), len(w.cds.active))
	}
	return w
}

// BenchmarkPushRoutes1000: one RDS response carrying a changed route
// configuration of 1,000 routes over 10 virtual hosts, to serving.
func BenchmarkPushRoutes1000(b *testing.B) {
	w := setupBench(b)
	anys := [2][]*anypb.Any{wire(b, benchRoutes("a", 100)), wire(b, benchRoutes("b", 100))}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		push(b, w, client.RouteType, fmt.Sprint(i), anys[i%2])
	}
}

// BenchmarkPushClusters100: one CDS response in which all 100 clusters
// changed (connect_timeout), to serving.
func BenchmarkPushClusters100(b *testing.B) {
	w := setupBench(b)
	var anys [2][]*anypb.Any
	for k := range anys {
		var cs []proto.Message
		for i := 0; i < 100; i++ {
			cs = append(cs, benchCluster(i, time.Duration(k+2)*time.Second))
		}
		anys[k] = wire(b, cs...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		push(b, w, client.ClusterType, fmt.Sprint(i), anys[i%2])
	}
}

// BenchmarkPushAll: listeners, clusters and routes of the whole
// configuration pushed into a fresh hop (the first push), to serving.
func BenchmarkPushAll(b *testing.B) {
	var cs []proto.Message
	for i := 0; i < 100; i++ {
		cs = append(cs, benchCluster(i, time.Second))
	}
	clusters, listeners, routes := wire(b, cs...), wire(b, benchListener(b)), wire(b, benchRoutes("r0", 100))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		w := benchWatcher(b)
		b.StartTimer()
		push(b, w, client.ClusterType, "1", clusters)
		push(b, w, client.ListenerType, "1", listeners)
		push(b, w, client.RouteType, "1", routes)
	}
}
