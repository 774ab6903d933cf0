package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

const bootstrapYAML = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 0.0.0.0, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            name: local_route
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: service_ws}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  - name: listener_1
    address: {socket_address: {address: 0.0.0.0, port_value: 10001}}
    default_filter_chain:
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: other
          route_config: {name: default_route, virtual_hosts: [{name: x, domains: ["*"]}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: service_ws
    type: STATIC
    load_assignment:
      cluster_name: service_ws
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: backend.example
        common_tls_context:
          tls_certificates:
          - certificate_chain: {inline_string: "PUBLIC-CERT"}
            private_key: {inline_string: "SECRET-KEY"}
  - name: other
    type: STATIC
`

func testBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(bootstrapYAML))
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(j, b); err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	return b
}

func typeURLs(d *adminv3.ConfigDump) []string {
	var out []string
	for _, c := range d.Configs {
		out = append(out, strings.TrimPrefix(c.TypeUrl, "type.googleapis.com/envoy.admin.v3."))
	}
	return out
}

func TestStaticConfigDump(t *testing.T) {
	b := testBootstrap(t)
	loaded := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	d := StaticConfigDump(b, loaded)
	if got, want := strings.Join(typeURLs(d), ","),
		"BootstrapConfigDump,ClustersConfigDump,ListenersConfigDump,RoutesConfigDump"; got != want {
		t.Fatalf("configs = %s, want %s", got, want)
	}
	var rd adminv3.RoutesConfigDump
	if err := d.Configs[3].UnmarshalTo(&rd); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rd.StaticRouteConfigs {
		var rc routev3.RouteConfiguration
		if err := r.RouteConfig.UnmarshalTo(&rc); err != nil {
			t.Fatal(err)
		}
		names = append(names, rc.Name)
		if got := r.LastUpdated.AsTime(); !got.Equal(loaded.Truncate(time.Millisecond)) {
			t.Errorf("last_updated = %v", got)
		}
	}
	if strings.Join(names, ",") != "local_route,default_route" {
		t.Fatalf("static routes = %v", names)
	}
	var cd adminv3.ClustersConfigDump
	if err := d.Configs[1].UnmarshalTo(&cd); err != nil {
		t.Fatal(err)
	}
	if len(cd.StaticClusters) != 2 || cd.StaticClusters[0].LastUpdated == nil {
		t.Fatalf("static clusters = %v", &cd)
	}
	// The dump owns a copy of the bootstrap.
	b.Node = nil
	b.StaticResources.Clusters = nil
	var bd adminv3.BootstrapConfigDump
	if err := d.Configs[0].UnmarshalTo(&bd); err != nil {
		t.Fatal(err)
	}
	if len(bd.Bootstrap.GetStaticResources().GetClusters()) != 2 {
		t.Fatal("dump shares the caller's bootstrap")
	}
}

func TestConfigDumpEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	r := f.do("GET", "/config_dump")
	if r.code != 200 || r.ct != ctJSON {
		t.Fatalf("/config_dump = %d %q\n%s", r.code, r.ct, r.body)
	}
	// Envoy's pretty JSON: proto field names, one-space indent.
	mustPrefix(t, r.body, "{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump\"")
	mustContain(t, r.body, `"static_listeners"`, `"last_updated"`, `"stat_prefix"`)
	var d adminv3.ConfigDump
	mustUnmarshal(t, r.body, &d)
	var ld adminv3.ListenersConfigDump
	if err := d.Configs[2].UnmarshalTo(&ld); err != nil {
		t.Fatal(err)
	}
	var l listenerv3.Listener
	if err := ld.StaticListeners[0].Listener.UnmarshalTo(&l); err != nil {
		t.Fatal(err)
	}
	if l.Name != "listener_0" || l.GetAddress().GetSocketAddress().GetPortValue() != 10000 {
		t.Fatalf("listener = %v", &l)
	}
	var rd adminv3.RoutesConfigDump
	if err := d.Configs[3].UnmarshalTo(&rd); err != nil {
		t.Fatal(err)
	}
	var rc routev3.RouteConfiguration
	if err := rd.StaticRouteConfigs[0].RouteConfig.UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	if rc.Name != "local_route" || rc.VirtualHosts[0].Routes[0].GetRoute().GetCluster() != "service_ws" {
		t.Fatalf("route config = %v", &rc)
	}
}

func TestConfigDumpRedactsSensitiveFields(t *testing.T) {
	src := StaticConfigDump(testBootstrap(t), time.Now())
	before := proto.Clone(src)
	f := newFixture(t, func(o *Options) { o.ConfigDump = func() *adminv3.ConfigDump { return src } })
	r := f.do("GET", "/config_dump")
	if strings.Contains(r.body, "SECRET-KEY") {
		t.Fatalf("private key leaked:\n%s", r.body)
	}
	mustContain(t, r.body, `"[redacted]"`, "PUBLIC-CERT", "backend.example")

	// In the cluster dump too, packed two Anys deep.
	var d adminv3.ConfigDump
	mustUnmarshal(t, r.body, &d)
	var cd adminv3.ClustersConfigDump
	if err := d.Configs[1].UnmarshalTo(&cd); err != nil {
		t.Fatal(err)
	}
	var c clusterv3.Cluster
	if err := cd.StaticClusters[0].Cluster.UnmarshalTo(&c); err != nil {
		t.Fatal(err)
	}
	var tc tlsv3.UpstreamTlsContext
	if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(&tc); err != nil {
		t.Fatal(err)
	}
	if got := tc.CommonTlsContext.TlsCertificates[0].PrivateKey.GetInlineString(); got != "[redacted]" {
		t.Fatalf("private key = %q", got)
	}
	if !proto.Equal(src, before) {
		t.Fatal("redaction changed the source dump")
	}
}

func TestConfigDumpQuery(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name  string
		query string
		code  int
		check func(t *testing.T, body string)
	}{
		{"resource", "resource=static_listeners", 200, func(t *testing.T, b string) {
			d := unmarshalDump(t, b)
			if got := strings.Join(typeURLs(d), ","); got != "ListenersConfigDump.StaticListener,ListenersConfigDump.StaticListener" {
				t.Fatalf("configs = %s", got)
			}
		}},
		{"resource with mask into the Any", "resource=static_clusters&mask=cluster.name", 200, func(t *testing.T, b string) {
			d := unmarshalDump(t, b)
			var sc adminv3.ClustersConfigDump_StaticCluster
			if err := d.Configs[0].UnmarshalTo(&sc); err != nil {
				t.Fatal(err)
			}
			if sc.LastUpdated != nil {
				t.Fatal("last_updated kept by mask")
			}
			var c clusterv3.Cluster
			if err := sc.Cluster.UnmarshalTo(&c); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&c, &clusterv3.Cluster{Name: "service_ws"}) {
				t.Fatalf("masked cluster = %v", &c)
			}
		}},
		{"resource with name_regex", "resource=static_route_configs&name_regex=default_.*", 200, func(t *testing.T, b string) {
			d := unmarshalDump(t, b)
			if len(d.Configs) != 1 {
				t.Fatalf("configs = %d", len(d.Configs))
			}
			var sr adminv3.RoutesConfigDump_StaticRouteConfig
			var rc routev3.RouteConfiguration
			if err := d.Configs[0].UnmarshalTo(&sr); err != nil {
				t.Fatal(err)
			}
			if err := sr.RouteConfig.UnmarshalTo(&rc); err != nil || rc.Name != "default_route" {
				t.Fatalf("route = %v, %v", &rc, err)
			}
		}},
		{"name_regex is a full match", "resource=static_route_configs&name_regex=default", 200, func(t *testing.T, b string) {
			if d := unmarshalDump(t, b); len(d.Configs) != 0 {
				t.Fatalf("configs = %v", typeURLs(d))
			}
		}},
		{"name_regex over the whole dump", "name_regex=other", 200, func(t *testing.T, b string) {
			d := unmarshalDump(t, b)
			if len(d.Configs) != 4 {
				t.Fatalf("configs = %v", typeURLs(d))
			}
			var cd adminv3.ClustersConfigDump
			var ld adminv3.ListenersConfigDump
			_ = d.Configs[1].UnmarshalTo(&cd)
			_ = d.Configs[2].UnmarshalTo(&ld)
			if len(cd.StaticClusters) != 1 || len(ld.StaticListeners) != 0 {
				t.Fatalf("clusters %d listeners %d", len(cd.StaticClusters), len(ld.StaticListeners))
			}
		}},
		{"mask over the whole dump", "mask=static_listeners", 200, func(t *testing.T, b string) {
			d := unmarshalDump(t, b)
			if got := strings.Join(typeURLs(d), ","); got != "ListenersConfigDump" {
				t.Fatalf("configs = %s", got)
			}
			mustContain(t, b, "listener_0")
		}},
		{"mask fits nothing", "mask=nope", 400, func(t *testing.T, b string) {
			mustEqual(t, b, "FieldMask nope could not be successfully applied to any configs.")
		}},
		{"bad resource mask", "resource=static_clusters&mask=cluster.nope", 400, func(t *testing.T, b string) {
			mustEqual(t, b, "FieldMask cluster.nope could not be successfully used.")
		}},
		{"not repeated", "resource=bootstrap", 400, func(t *testing.T, b string) {
			mustEqual(t, b, "bootstrap is not a repeated field. Use ?mask=bootstrap to get only this field")
		}},
		{"unknown resource", "resource=dynamic_nothing", 404, func(t *testing.T, b string) {
			mustEqual(t, b, "dynamic_nothing not found in config dump")
		}},
		{"bad name_regex", "name_regex=" + url.QueryEscape("(("), 400, func(t *testing.T, b string) {
			mustPrefix(t, b, "Error while parsing name_regex from ((: ")
		}},
		{"include_eds unsupported", "include_eds", 400, func(t *testing.T, b string) {
			mustContain(t, b, "unsupported")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do("GET", "/config_dump?"+tt.query)
			if r.code != tt.code {
				t.Fatalf("code = %d, want %d\n%s", r.code, tt.code, r.body)
			}
			want := ctJSON
			if tt.code != http.StatusOK {
				want = ctText
			}
			if r.ct != want {
				t.Errorf("content type = %q, want %q", r.ct, want)
			}
			tt.check(t, r.body)
		})
	}
}

func unmarshalDump(t *testing.T, body string) *adminv3.ConfigDump {
	t.Helper()
	d := &adminv3.ConfigDump{}
	mustUnmarshal(t, body, d)
	return d
}

func TestParseMask(t *testing.T) {
	md := (&clusterv3.Cluster{}).ProtoReflect().Descriptor()
	tests := []struct {
		paths []string
		ok    bool
	}{
		{[]string{"name"}, true},
		{[]string{"name", "connect_timeout.seconds"}, true},
		{[]string{"load_assignment.cluster_name"}, true},
		{[]string{"load_assignment.endpoints.priority"}, false}, // through a repeated field
		{[]string{"name.x"}, false},                             // through a scalar
		{[]string{"nope"}, false},
		{[]string{""}, false},
	}
	for _, tt := range tests {
		if _, ok := parseMask(md, tt.paths); ok != tt.ok {
			t.Errorf("parseMask(%q) ok = %v, want %v", tt.paths, ok, tt.ok)
		}
	}
	c := &clusterv3.Cluster{Name: "a", AltStatName: "b", LoadAssignment: nil}
	c.ConnectTimeout = nil
	m, _ := parseMask(md, []string{"alt_stat_name"})
	m.trim(c.ProtoReflect())
	if !proto.Equal(c, &clusterv3.Cluster{AltStatName: "b"}) {
		t.Fatalf("trimmed = %v", c)
	}
}

func TestRedactUnknownAnyIsKept(t *testing.T) {
	a := &anypb.Any{TypeUrl: "type.googleapis.com/unknown.Type", Value: []byte{1, 2}}
	d := &adminv3.ConfigDump{Configs: []*anypb.Any{a}}
	redact(d.ProtoReflect(), false)
	if a.TypeUrl != "type.googleapis.com/unknown.Type" || string(a.Value) != "\x01\x02" {
		t.Fatalf("unknown Any changed: %v", a)
	}
}
