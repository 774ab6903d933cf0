package router

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// routeFor compiles a single route given as a YAML flow mapping and
// returns it.
func routeFor(t testing.TB, route string) *Route {
	t.Helper()
	tbl := mustCompile(t, fmt.Sprintf(`
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - %s
`, route))
	return tbl.VirtualHosts()[0].Routes()[0]
}

func TestRouteActionDefaults(t *testing.T) {
	r := routeFor(t, `{name: r, match: {prefix: "/"}, route: {cluster: backend}}`)
	if r.Action != ActionCluster || r.Cluster != "backend" || r.PickCluster(7) != "backend" {
		t.Errorf("action %v cluster %q pick %q", r.Action, r.Cluster, r.PickCluster(7))
	}
	if r.Timeout != 15*time.Second || r.IdleTimeout != -1 {
		t.Errorf("timeouts: %v %v, want 15s -1", r.Timeout, r.IdleTimeout)
	}
	if r.ClusterNotFoundStatus != http.StatusServiceUnavailable {
		t.Errorf("cluster_not_found status %d", r.ClusterNotFoundStatus)
	}
	if r.Name != "r" || r.VirtualHost == nil || r.VirtualHost.Name != "vh" || r.Proto.GetName() != "r" {
		t.Errorf("identity: %q %v", r.Name, r.VirtualHost)
	}
	if r.RewritePath("/a?b") != "/a?b" {
		t.Errorf("RewritePath without prefix_rewrite changed the path")
	}
	if _, ok := r.UpgradeFor("websocket"); ok {
		t.Error("UpgradeFor without upgrade_configs")
	}
	if s, l := r.Redirect(get("h", "/"), "http"); s != 0 || l != "" {
		t.Errorf("Redirect on a cluster route: %d %q", s, l)
	}

	r = routeFor(t, `{match: {prefix: "/"}, route: {cluster: b, timeout: 0s, idle_timeout: 0s, cluster_not_found_response_code: NOT_FOUND, host_rewrite_literal: "up.internal"}}`)
	if r.Timeout != 0 || r.IdleTimeout != 0 || r.ClusterNotFoundStatus != 404 || r.HostRewriteLiteral != "up.internal" {
		t.Errorf("explicit zero timeouts: %v %v %d %q", r.Timeout, r.IdleTimeout, r.ClusterNotFoundStatus, r.HostRewriteLiteral)
	}
	r = routeFor(t, `{match: {prefix: "/"}, route: {cluster: b, timeout: 2.5s, idle_timeout: 60s, cluster_not_found_response_code: INTERNAL_SERVER_ERROR}}`)
	if r.Timeout != 2500*time.Millisecond || r.IdleTimeout != time.Minute || r.ClusterNotFoundStatus != 500 {
		t.Errorf("timeouts: %v %v %d", r.Timeout, r.IdleTimeout, r.ClusterNotFoundStatus)
	}
}

func TestWeightedClusters(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [
	  {name: a, weight: 20}, {name: zero, weight: 0}, {name: b, weight: 30}, {name: c, weight: 50}]}}}`)
	if r.Action != ActionWeightedClusters || len(r.Weighted) != 4 || r.Weighted[2] != (WeightedCluster{Name: "b", Weight: 30}) {
		t.Fatalf("action %v weighted %v", r.Action, r.Weighted)
	}
	counts := map[string]int{}
	for i := uint64(0); i < 1000; i++ {
		counts[r.PickCluster(i)]++
	}
	want := map[string]int{"a": 200, "b": 300, "c": 500}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("distribution over 0..999: got %v, want %v", counts, want)
	}
	// Boundaries: [0,20) a, [20,50) b, [50,100) c, and modulo the total
	// (2^64-1 mod 100 = 15).
	for rnd, want := range map[uint64]string{0: "a", 19: "a", 20: "b", 49: "b", 50: "c", 99: "c", 100: "a", 1<<64 - 1: "a"} {
		if got := r.PickCluster(rnd); got != want {
			t.Errorf("PickCluster(%d) = %q, want %q", rnd, got, want)
		}
	}
	// total_weight is deprecated and ignored, as in Envoy.
	r = routeFor(t, `{match: {prefix: "/"}, route: {weighted_clusters: {total_weight: 1000, clusters: [{name: a, weight: 1}]}}}`)
	if r.PickCluster(12345) != "a" {
		t.Errorf("single cluster: %q", r.PickCluster(12345))
	}
}

func TestUpgradeConfigs(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {cluster: c, upgrade_configs: [
	  {upgrade_type: Websocket},
	  {upgrade_type: disabled, enabled: false},
	  {upgrade_type: CONNECT, connect_config: {}},
	  {upgrade_type: connect-udp, connect_config: {allow_post: true}, enabled: true}]}}`)
	if len(r.Upgrades) != 4 {
		t.Fatalf("upgrades: %v", r.Upgrades)
	}
	if cfg, ok := r.Upgrades["websocket"]; !ok || !cfg.Enabled || cfg.Connect != nil {
		t.Errorf("websocket: %+v %v", cfg, ok)
	}
	for _, typ := range []string{"websocket", "WEBSOCKET", "WebSocket"} {
		if cfg, ok := r.UpgradeFor(typ); !ok || !cfg.Enabled {
			t.Errorf("UpgradeFor(%q) = %+v, %v", typ, cfg, ok)
		}
	}
	if cfg, ok := r.UpgradeFor("Disabled"); !ok || cfg.Enabled {
		t.Errorf("disabled: %+v %v", cfg, ok)
	}
	if _, ok := r.UpgradeFor("foo"); ok {
		t.Error("foo found")
	}
	if cfg, _ := r.UpgradeFor("connect"); cfg.Connect == nil || !cfg.Enabled {
		t.Errorf("CONNECT terminate: %+v", cfg)
	}
	if cfg, _ := r.UpgradeFor("CONNECT-UDP"); cfg.Connect == nil || !cfg.Connect.GetAllowPost() {
		t.Errorf("CONNECT-UDP: %+v", cfg)
	}
	proxy := routeFor(t, `{match: {connect_matcher: {}}, route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT}]}}`)
	if cfg, ok := proxy.UpgradeFor("CONNECT"); !ok || cfg.Connect != nil {
		t.Errorf("CONNECT proxy mode: %+v %v", cfg, ok)
	}
}

func TestRewritePath(t *testing.T) {
	tests := []struct {
		route string
		in    string
		want  string
	}{
		{`{match: {prefix: "/api/"}, route: {cluster: c, prefix_rewrite: "/"}}`, "/api/v1?x=1", "/v1?x=1"},
		{`{match: {prefix: "/api"}, route: {cluster: c, prefix_rewrite: "/v2"}}`, "/api/items", "/v2/items"},
		{`{match: {prefix: "/API", case_sensitive: false}, route: {cluster: c, prefix_rewrite: "/x"}}`, "/api/items", "/x/items"},
		{`{match: {path: "/old"}, route: {cluster: c, prefix_rewrite: "/new"}}`, "/old?q", "/new?q"},
		{`{match: {path_separated_prefix: "/a"}, route: {cluster: c, prefix_rewrite: "/b"}}`, "/a/c", "/b/c"},
		{`{match: {safe_regex: {regex: "/re.*"}}, route: {cluster: c, prefix_rewrite: "/fixed"}}`, "/regex/x?q=1", "/fixed?q=1"},
		// Envoy's TestConnectRoutes: an H2 CONNECT with a path.
		{`{match: {connect_matcher: {}}, route: {cluster: c, prefix_rewrite: "/rewrote"}}`, "/api/locations?works=true", "/rewrote?works=true"},
		{`{match: {connect_matcher: {}}, route: {cluster: c, prefix_rewrite: "/rewrote"}}`, "", "/rewrote"},
		{`{match: {prefix: "/api"}, route: {cluster: c, prefix_rewrite: "/v2"}}`, "/other", "/other"}, // not the matched prefix
	}
	for _, tt := range tests {
		if got := routeFor(t, tt.route).RewritePath(tt.in); got != tt.want {
			t.Errorf("%s: RewritePath(%q) = %q, want %q", tt.route, tt.in, got, tt.want)
		}
	}
}

func TestRedirect(t *testing.T) {
	tests := []struct {
		name      string
		redirect  string
		match     string
		authority string
		path      string
		scheme    string
		status    int
		location  string
	}{
		{"https redirect strips :80", `{https_redirect: true}`, `{prefix: "/"}`, "a.com:80", "/p?q=1", "http", 301, "https://a.com/p?q=1"},
		{"https redirect keeps other port", `{https_redirect: true}`, `{prefix: "/"}`, "a.com:8080", "/p", "http", 301, "https://a.com:8080/p"},
		{"same scheme keeps :80", `{host_redirect: ""}`, `{prefix: "/"}`, "a.com:80", "/p", "http", 301, "http://a.com:80/p"},
		{"scheme redirect from https strips :443", `{scheme_redirect: "http"}`, `{prefix: "/"}`, "a.com:443", "/", "https", 301, "http://a.com/"},
		{"host redirect", `{host_redirect: "b.com", response_code: FOUND}`, `{prefix: "/"}`, "a.com", "/p?q", "http", 302, "http://b.com/p?q"},
		{"port redirect replaces port", `{port_redirect: 8443, response_code: SEE_OTHER}`, `{prefix: "/"}`, "a.com:80", "/p", "http", 303, "http://a.com:8443/p"},
		{"port redirect ipv6", `{port_redirect: 8443}`, `{prefix: "/"}`, "[::1]:80", "/p", "http", 301, "http://[::1]:8443/p"},
		{"ipv6 without port", `{https_redirect: true}`, `{prefix: "/"}`, "[::1]", "/p", "http", 301, "https://[::1]/p"},
		{"host and port", `{host_redirect: "b.com", port_redirect: 81}`, `{prefix: "/"}`, "a.com:80", "/", "http", 301, "http://b.com:81/"},
		{"path redirect keeps query", `{path_redirect: "/new", response_code: TEMPORARY_REDIRECT}`, `{prefix: "/"}`, "a.com", "/old?x=1", "http", 307, "http://a.com/new?x=1"},
		{"path redirect with own query wins", `{path_redirect: "/new?y=2", strip_query: true}`, `{prefix: "/"}`, "a.com", "/old?x=1", "http", 301, "http://a.com/new?y=2"},
		{"strip query", `{path_redirect: "/new", strip_query: true, response_code: PERMANENT_REDIRECT}`, `{prefix: "/"}`, "a.com", "/old?x=1", "http", 308, "http://a.com/new"},
		{"strip query only", `{strip_query: true}`, `{prefix: "/"}`, "a.com", "/old?x=1", "http", 301, "http://a.com/old"},
		{"prefix rewrite", `{prefix_rewrite: "/v2/"}`, `{prefix: "/v1/"}`, "a.com", "/v1/items?x", "https", 301, "https://a.com/v2/items?x"},
		{"prefix rewrite and strip query", `{prefix_rewrite: "/v2/", strip_query: true}`, `{prefix: "/v1/"}`, "a.com", "/v1/items?x", "http", 301, "http://a.com/v2/items"},
		{"path without slash", `{path_redirect: "new"}`, `{prefix: "/"}`, "a.com", "/", "http", 301, "http://a.com/new"},
		// Envoy's TestConnectRoutes: a pathless CONNECT to a redirect route.
		{"pathless CONNECT", `{path_redirect: "/new_path"}`, `{connect_matcher: {}}`, "bat4.com", "", "http", 301, "http://bat4.com/new_path"},
		{"pathless CONNECT no path", `{host_redirect: "x.com"}`, `{connect_matcher: {}}`, "bat4.com", "", "http", 301, "http://x.com/"},
	}
	for _, tt := range tests {
		r := routeFor(t, fmt.Sprintf(`{match: %s, redirect: %s}`, tt.match, tt.redirect))
		if r.Action != ActionRedirect {
			t.Fatalf("%s: action %v", tt.name, r.Action)
		}
		req := get(tt.authority, tt.path)
		status, loc := r.Redirect(req, tt.scheme)
		if status != tt.status || loc != tt.location {
			t.Errorf("%s: got %d %q, want %d %q", tt.name, status, loc, tt.status, tt.location)
		}
	}
}

func TestDirectResponse(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, direct_response: {status: 418, body: {inline_string: "teapot"}}}`)
	if r.Action != ActionDirectResponse || r.DirectStatus != 418 || r.DirectBody != "teapot" {
		t.Errorf("got %v %d %q", r.Action, r.DirectStatus, r.DirectBody)
	}
	r = routeFor(t, `{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_bytes: "aGk="}}}`)
	if r.DirectBody != "hi" {
		t.Errorf("inline_bytes: %q", r.DirectBody)
	}
	r = routeFor(t, `{match: {prefix: "/"}, direct_response: {status: 204}}`)
	if r.DirectStatus != 204 || r.DirectBody != "" || r.PickCluster(1) != "" {
		t.Errorf("no body: %d %q", r.DirectStatus, r.DirectBody)
	}
}

func TestPerFilterConfig(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.buffer:
      "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
      disabled: true
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.buffer:
        "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
        disabled: true
`)
	vh := tbl.VirtualHosts()[0]
	const url = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
	if got := vh.PerFilterConfig["envoy.filters.http.buffer"].GetTypeUrl(); got != url {
		t.Errorf("vhost per-filter config: %q", got)
	}
	if got := vh.Routes()[0].PerFilterConfig["envoy.filters.http.buffer"].GetTypeUrl(); got != url {
		t.Errorf("route per-filter config: %q", got)
	}
}
