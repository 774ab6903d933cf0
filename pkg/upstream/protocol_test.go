package upstream

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

func TestCompileProtocolSettings(t *testing.T) {
	pki := tlstest.New(t)
	fullH2 := &corev3.Http2ProtocolOptions{
		HpackTableSize:              wrapperspb.UInt32(0),
		MaxConcurrentStreams:        wrapperspb.UInt32(7),
		InitialStreamWindowSize:     wrapperspb.UInt32(1 << 20),
		InitialConnectionWindowSize: wrapperspb.UInt32(1 << 22),
		AllowConnect:                true,
		ConnectionKeepalive: &corev3.KeepaliveSettings{
			Interval: dur(10 * time.Second), Timeout: dur(2 * time.Second), IntervalJitter: &typev3.Percent{Value: 10},
		},
	}
	for _, tc := range []struct {
		name    string
		cluster *clusterv3.Cluster
		mode    protocolMode
		h2      h2Options
		alpn    map[string][]string // settings' TLS configs' NextProtos; nil: no TLS
		sni     string
	}{
		{name: "default", cluster: base(), mode: modeHTTP1},
		{name: "explicit http1", cluster: with(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, explicitHTTP1())
		}), mode: modeHTTP1},
		{name: "explicit http2", cluster: with(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = explicitH2(t, fullH2)
		}), mode: modeHTTP2, h2: h2Options{
			maxStreams: 7, streamWindow: 1 << 20, connWindow: 1 << 22, hpackSize: 0, hpackSet: true,
			pingInterval: 10 * time.Second, pingTimeout: 2 * time.Second,
		}},
		{name: "deprecated http2 options", cluster: with(func(c *clusterv3.Cluster) {
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(3)}
		}), mode: modeHTTP2, h2: h2Options{maxStreams: 3}},
		{name: "deprecated use downstream protocol", cluster: with(func(c *clusterv3.Cluster) {
			c.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
			c.HttpProtocolOptions = &corev3.Http1ProtocolOptions{}
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
		}), mode: modeDownstream},
		{name: "use downstream protocol config", cluster: with(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
					UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
						HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
					},
				},
			})
		}), mode: modeDownstream},
		{name: "tls http1", cluster: with(func(c *clusterv3.Cluster) {
			c.TransportSocket = tlsSocket(t, pki.CAFile, "sni.example")
		}), mode: modeHTTP1, alpn: map[string][]string{
			"h1": {"http/1.1"}, "h2": {"h2"}, "auto": {"h2", "http/1.1"}, "dial": {"http/1.1"},
		}, sni: "sni.example"},
		{name: "auto with configured alpn", cluster: with(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = autoConfig(t)
			c.TransportSocket = tlsSocket(t, pki.CAFile, "", "x-custom")
		}), mode: modeAuto, alpn: map[string][]string{
			"h1": {"x-custom"}, "h2": {"x-custom"}, "auto": {"x-custom"}, "dial": {"http/1.1"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := compile(tc.cluster)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if s.mode != tc.mode || s.h2 != tc.h2 {
				t.Errorf("mode %v, h2 %+v; want %v, %+v", s.mode, s.h2, tc.mode, tc.h2)
			}
			if tc.alpn == nil {
				if s.tls != nil {
					t.Error("TLS config without a TLS transport socket")
				}
				return
			}
			if s.tls == nil {
				t.Fatal("no TLS config")
			}
			for name, conf := range map[string][]string{
				"h1": s.tlsH1.NextProtos, "h2": s.tlsH2.NextProtos, "auto": s.tlsAuto.NextProtos, "dial": s.tlsDial.NextProtos,
			} {
				if !slices.Equal(conf, tc.alpn[name]) {
					t.Errorf("%s ALPN = %q, want %q", name, conf, tc.alpn[name])
				}
			}
			for _, conf := range []*tls.Config{s.tlsH1, s.tlsH2, s.tlsAuto, s.tlsDial} {
				if conf.ServerName != tc.sni {
					t.Errorf("ServerName = %q, want %q", conf.ServerName, tc.sni)
				}
			}
		})
	}
}
