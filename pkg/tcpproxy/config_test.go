package tcpproxy

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/stats"
)

func single(name string) *tcpv3.TcpProxy_Cluster { return &tcpv3.TcpProxy_Cluster{Cluster: name} }

func TestCompile(t *testing.T) {
	type want struct {
		idle     time.Duration
		attempts int
		clusters int
	}
	cases := []struct {
		name string
		p    *tcpv3.TcpProxy
		want want
		err  string // substring; "" = success
	}{
		{"defaults", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c")}, want{time.Hour, 1, 1}, ""},
		{"idle off, attempts 3", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			IdleTimeout: durationpb.New(0), MaxConnectAttempts: wrapperspb.UInt32(3)}, want{0, 3, 1}, ""},
		{"weighted", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
				{Name: "a", Weight: 1}, {Name: "b", Weight: 2}}}}}, want{time.Hour, 1, 2}, ""},
		{"no stat_prefix", &tcpv3.TcpProxy{ClusterSpecifier: single("c")}, want{}, "tcp_proxy: stat_prefix: must not be empty"},
		{"no cluster", &tcpv3.TcpProxy{StatPrefix: "t"}, want{}, "tcp_proxy: cluster_specifier: one of cluster or weighted_clusters is required"},
		{"empty cluster", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("")}, want{}, "tcp_proxy: cluster: must not be empty"},
		{"tunneling_config", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:443"}}, want{time.Hour, 1, 1}, ""},
		{"downstream_idle_timeout", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			DownstreamIdleTimeout: durationpb.New(time.Second)}, want{}, "tcp_proxy: downstream_idle_timeout: unsupported field"},
		{"attempts 0", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"), MaxConnectAttempts: wrapperspb.UInt32(0)},
			want{}, "tcp_proxy: max_connect_attempts: must be at least 1"},
		{"max duration", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			MaxDownstreamConnectionDuration: durationpb.New(time.Minute)}, want{time.Hour, 1, 1}, ""},
		{"max duration under 1ms", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			MaxDownstreamConnectionDuration: durationpb.New(time.Microsecond)}, want{}, "tcp_proxy: max_downstream_connection_duration: must be at least 1ms"},
		{"negative idle", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"), IdleTimeout: durationpb.New(-time.Second)},
			want{}, "tcp_proxy: idle_timeout: invalid duration"},
		{"no weighted clusters", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{}}}, want{}, "weighted_clusters.clusters: at least one cluster is required"},
		{"weight 0", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a"}}}}},
			want{}, "weighted_clusters.clusters[0].weight: must be at least 1"},
		{"weight metadata_match", &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
			WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
				{Name: "a", Weight: 1, MetadataMatch: &corev3.Metadata{}}}}}},
			want{}, "tcp_proxy: weighted_clusters.clusters[0].metadata_match: unsupported field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tc.p, stats.New())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(tc.err, "unsupported field") && !errors.Is(err, ErrUnsupported) {
					t.Errorf("err does not wrap ErrUnsupported")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{c.IdleTimeout(), c.MaxConnectAttempts(), len(c.clusters)}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCompileCreatesStats(t *testing.T) {
	st := stats.New()
	if _, err := Compile(&tcpv3.TcpProxy{StatPrefix: "front", ClusterSpecifier: single("c")}, st); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"downstream_cx_total", "downstream_cx_no_route", "downstream_cx_rx_bytes_total",
		"downstream_cx_tx_bytes_total", "idle_timeout", "upstream_flush_total", "upstream_flush_active"} {
		if _, ok := st.Get("tcp.front." + n); !ok {
			t.Errorf("tcp.front.%s missing", n)
		}
	}
}
