package dataplane_test

import (
	"fmt"
	"strings"
)

// cfg builds a bootstrap (JSON, which is YAML) with one listener "l" on
// 127.0.0.1:0, one HTTP connection manager "t" and one STATIC cluster
// "up" pointing at 127.0.0.1:<upstreamPort>. The fields are spliced in as
// JSON fragments, each ending without a trailing comma.
type cfg struct {
	upstreamPort int
	hcm          string // extra HttpConnectionManager fields
	route        string // extra RouteAction fields for the main route
	routeMatch   string // RouteMatch, default {"prefix": "/"}
	routes       string // extra routes placed before the main route
	filters      string // http_filters before the router
	cluster      string // extra Cluster fields
	vhostExtra   string // extra VirtualHost fields
}

func (c cfg) String() string {
	join := func(parts ...string) string {
		var keep []string
		for _, p := range parts {
			if strings.TrimSpace(p) != "" {
				keep = append(keep, p)
			}
		}
		return strings.Join(keep, ",\n")
	}
	match := c.routeMatch
	if match == "" {
		match = `{"prefix": "/"}`
	}
	routeAction := join(`"cluster": "up"`, c.route)
	mainRoute := fmt.Sprintf(`{"match": %s, "route": {%s}}`, match, routeAction)
	routes := join(c.routes, mainRoute)
	filters := join(c.filters, `{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}`)
	vhost := join(`"name": "vh"`, `"domains": ["*"]`, `"routes": [`+routes+`]`, c.vhostExtra)
	hcm := join(`"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"`,
		`"stat_prefix": "t"`,
		`"route_config": {"name": "rc", "virtual_hosts": [{`+vhost+`}]}`,
		`"http_filters": [`+filters+`]`,
		c.hcm)
	cluster := join(`"name": "up"`, `"type": "STATIC"`, `"connect_timeout": "1s"`,
		fmt.Sprintf(`"load_assignment": {"cluster_name": "up", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}]}]}`, c.upstreamPort),
		c.cluster)
	return fmt.Sprintf(`{
 "static_resources": {
  "listeners": [{
   "name": "l",
   "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
   "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {%s}}]}]
  }],
  "clusters": [{%s}]
 }
}`, hcm, cluster)
}
