package router

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// withRoute wraps one route (YAML flow mapping) in a configuration whose
// virtual host has two routes before it, so paths read routes[2].
func withRoute(route string) string {
	return fmt.Sprintf(`
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {prefix: "/a"}, route: {cluster: c}}
  - {match: {prefix: "/b"}, route: {cluster: c}}
  - %s
`, route)
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"duplicate upgrade", withRoute(`{match: {prefix: "/"}, route: {cluster: c, upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: WebSocket}]}}`),
			`router: virtual_hosts[0].routes[2].route.upgrade_configs[1]: duplicate upgrade type "WebSocket"`},
		{"connect_config on websocket", withRoute(`{match: {prefix: "/"}, route: {cluster: c, upgrade_configs: [{upgrade_type: Websocket, connect_config: {}}]}}`),
			`router: virtual_hosts[0].routes[2].route.upgrade_configs[0]: non-CONNECT upgrade type "Websocket" has connect_config`},
		{"invalid path regex", withRoute(`{match: {safe_regex: {regex: "a("}}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.safe_regex.regex: invalid regex \"a(\": error parsing regexp: missing closing ): `^(?:a()$`"},
		{"invalid header regex", withRoute(`{match: {prefix: "/", headers: [{name: x, string_match: {safe_regex: {regex: "["}}}]}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.headers[0].string_match.safe_regex.regex: invalid regex \"[\": error parsing regexp: missing closing ]: `[)$`"},
		{"invalid query regex", withRoute(`{match: {prefix: "/", query_parameters: [{name: q, string_match: {safe_regex: {regex: "*"}}}]}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.query_parameters[0].string_match.safe_regex.regex: invalid regex \"*\": error parsing regexp: missing argument to repetition operator: `*`"},
		{"zero weights", withRoute(`{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}}`),
			"router: virtual_hosts[0].routes[2].route.weighted_clusters: sum of weights in the weighted_cluster must be greater than 0"},
		{"weights overflow", withRoute(`{name: big, match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: a, weight: 4294967295}, {name: b, weight: 1}]}}}`),
			`router: virtual_hosts[0].routes[2].route.weighted_clusters: the sum of weights of all weighted clusters of route "big" exceeds 4294967295`},
		{"weighted cluster without name", withRoute(`{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: a, weight: 1}, {weight: 1}]}}}`),
			"router: virtual_hosts[0].routes[2].route.weighted_clusters.clusters[1]: at least one of name or cluster_header needs to be specified"},
		{"body too large", withRoute(fmt.Sprintf(`{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: %q}}}`, strings.Repeat("x", 4097))),
			"router: virtual_hosts[0].routes[2].direct_response.body: response body size is 4097 bytes; maximum is 4096"},
		{"body over configured maximum", "max_direct_response_body_size_bytes: 3\n" + withRoute(`{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "abcd"}}}`),
			"router: virtual_hosts[0].routes[2].direct_response.body: response body size is 4 bytes; maximum is 3"},
		{"duplicate exact domain", `
name: rc
virtual_hosts:
- {name: a, domains: ["a.com"]}
- {name: b, domains: ["b.com", "A.com"]}`,
			`router: virtual_hosts[1].domains[1]: duplicate entry of domain "a.com" in route "rc": only unique values for domains are permitted`},
		{"duplicate suffix domain", `
name: rc
virtual_hosts:
- {name: a, domains: ["*.a.com"]}
- {name: b, domains: ["*.A.COM"]}`,
			`router: virtual_hosts[1].domains[0]: duplicate entry of domain "*.a.com" in route "rc": only unique values for domains are permitted`},
		{"duplicate prefix domain", `
name: rc
virtual_hosts:
- {name: a, domains: ["a.*", "a.*"]}`,
			`router: virtual_hosts[0].domains[1]: duplicate entry of domain "a.*" in route "rc": only unique values for domains are permitted`},
		{"two defaults", `
name: rc
virtual_hosts:
- {name: a, domains: ["*"]}
- {name: b, domains: ["b", "*"]}`,
			`router: virtual_hosts[1].domains[1]: only a single wildcard domain is permitted in route "rc"`},
		{"modify pseudo header", `request_headers_to_add: [{header: {key: ":path", value: "/x"}}]`,
			`router: request_headers_to_add[0].header.key: ":path": ":"-prefixed or host headers may not be modified`},
		{"modify host", `virtual_hosts: [{name: a, domains: ["*"], response_headers_to_add: [{header: {key: Host, value: x}}]}]`,
			`router: virtual_hosts[0].response_headers_to_add[0].header.key: "Host": ":"-prefixed or host headers may not be modified`},
		{"remove pseudo header", withRoute(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_remove: [x-ok, ":authority"]}`),
			`router: virtual_hosts[0].routes[2].request_headers_to_remove[1]: ":authority": ":"-prefixed or host headers may not be removed`},
		{"remove host", `response_headers_to_remove: [HOST]`,
			`router: response_headers_to_remove[0]: "HOST": ":"-prefixed or host headers may not be removed`},
		{"append and append_action", withRoute(`{match: {prefix: "/"}, route: {cluster: c}, response_headers_to_add: [{header: {key: x, value: "v"}, append: true, append_action: ADD_IF_ABSENT}]}`),
			"router: virtual_hosts[0].routes[2].response_headers_to_add[0]: both append and append_action are set and it's not allowed"},
		{"unsupported command", withRoute(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_add: [{header: {key: x, value: "a %UPSTREAM_HOST% b"}}]}`),
			"router: virtual_hosts[0].routes[2].request_headers_to_add[0].header.value: %UPSTREAM_HOST%: unsupported command UPSTREAM_HOST (supported: DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_PORT, PROTOCOL, REQ)"},
		{"stray percent", `request_headers_to_add: [{header: {key: x, value: "100%"}}]`,
			`router: request_headers_to_add[0].header.value: invalid format "100%": no valid command at position 3`},
		{"unterminated command", `request_headers_to_add: [{header: {key: x, value: "%PROTOCOL"}}]`,
			`router: request_headers_to_add[0].header.value: invalid format "%PROTOCOL": no valid command at position 0`},
		{"lower-case command", `request_headers_to_add: [{header: {key: x, value: "%protocol%"}}]`,
			`router: request_headers_to_add[0].header.value: invalid format "%protocol%": no valid command at position 0`},
		{"parameters on a simple command", `request_headers_to_add: [{header: {key: x, value: "%PROTOCOL(x)%"}}]`,
			`router: request_headers_to_add[0].header.value: %PROTOCOL(x)%: command PROTOCOL does not take parameters`},
		{"length on a simple command", `request_headers_to_add: [{header: {key: x, value: "%DOWNSTREAM_LOCAL_PORT:2%"}}]`,
			`router: request_headers_to_add[0].header.value: %DOWNSTREAM_LOCAL_PORT:2%: command DOWNSTREAM_LOCAL_PORT does not take a length`},
		{"REQ without header", `request_headers_to_add: [{header: {key: x, value: "%REQ%"}}]`,
			`router: request_headers_to_add[0].header.value: %REQ%: command REQ requires a header name`},
		{"REQ with two alternatives", `request_headers_to_add: [{header: {key: x, value: "%REQ(a?b?c)%"}}]`,
			`router: request_headers_to_add[0].header.value: %REQ(a?b?c)%: more than 1 alternative header specified in "a?b?c"`},
		{"proto validation", `virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: "/"}}]}]`,
			"router: invalid RouteConfiguration.VirtualHosts[0]: embedded message failed validation | caused by: invalid VirtualHost.Routes[0]: embedded message failed validation | caused by: invalid Route.Action: value is required"},
		{"empty upgrade type", withRoute(`{match: {prefix: "/"}, route: {cluster: c, upgrade_configs: [{enabled: false}]}}`),
			"router: invalid RouteConfiguration.VirtualHosts[0]: embedded message failed validation | caused by: invalid VirtualHost.Routes[2]: embedded message failed validation | caused by: invalid Route.Route: embedded message failed validation | caused by: invalid RouteAction.UpgradeConfigs[0]: embedded message failed validation | caused by: invalid RouteAction_UpgradeConfig.UpgradeType: value length must be at least 1 runes"},
	}
	for _, tt := range tests {
		_, err := Compile(parseRC(t, tt.src))
		if err == nil {
			t.Errorf("%s: no error, want %s", tt.name, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("%s:\n got: %s\nwant: %s", tt.name, err, tt.want)
		}
	}
}

func TestCompileValidationErrorIsWrapped(t *testing.T) {
	rc := parseRC(t, `virtual_hosts: [{name: a, domains: []}]`)
	_, err := Compile(rc)
	var multi routev3.RouteConfigurationMultiError
	if !errors.As(err, &multi) {
		t.Fatalf("error %v (%T) does not wrap RouteConfigurationMultiError", err, err)
	}
	if _, err := Compile(nil); err == nil || err.Error() != "router: nil RouteConfiguration" {
		t.Errorf("nil: %v", err)
	}
}

func TestUnsupportedFields(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{`vhds: {config_source: {ads: {}}}`, "router: vhds: unsupported field"},
		{`internal_only_headers: [x-internal]`, "router: internal_only_headers: unsupported field"},
		{`request_mirror_policies: [{cluster: m}]`, "router: request_mirror_policies: unsupported field"},
		{`typed_per_filter_config: {f: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true}}`,
			"router: typed_per_filter_config: unsupported field"},
		{`virtual_hosts: [{name: a, domains: ["*"], require_tls: ALL}]`, "router: virtual_hosts[0].require_tls: unsupported field"},
		{`virtual_hosts: [{name: a, domains: ["*"], retry_policy: {retry_on: 5xx}}]`, "router: virtual_hosts[0].retry_policy: unsupported field"},
		{`virtual_hosts: [{name: a, domains: ["*"], cors: {}}]`, "router: virtual_hosts[0].cors: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c}, decorator: {operation: op}}`), "router: virtual_hosts[0].routes[2].decorator: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c}, metadata: {}}`), "router: virtual_hosts[0].routes[2].metadata: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, non_forwarding_action: {}}`), "router: virtual_hosts[0].routes[2].non_forwarding_action: unsupported field"},
		{withRoute(`{match: {prefix: "/", grpc: {}}, route: {cluster: c}}`), "router: virtual_hosts[0].routes[2].match.grpc: unsupported field"},
		{withRoute(`{match: {prefix: "/", runtime_fraction: {default_value: {numerator: 1}}}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.runtime_fraction: unsupported field"},
		{withRoute(`{match: {prefix: "/", tls_context: {presented: true}}, route: {cluster: c}}`), "router: virtual_hosts[0].routes[2].match.tls_context: unsupported field"},
		{withRoute(`{match: {prefix: "/", headers: [{name: x, exact_match: "v"}], dynamic_metadata: [{filter: f, path: [{key: k}], value: {present_match: true}}]}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.dynamic_metadata: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster_header: x-cluster}}`), "router: virtual_hosts[0].routes[2].route.cluster_header: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c, retry_policy: {retry_on: 5xx}}}`), "router: virtual_hosts[0].routes[2].route.retry_policy: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c, hash_policy: [{header: {header_name: x}}]}}`), "router: virtual_hosts[0].routes[2].route.hash_policy: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c, regex_rewrite: {pattern: {regex: a}, substitution: b}}}`),
			"router: virtual_hosts[0].routes[2].route.regex_rewrite: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c, auto_host_rewrite: true}}`), "router: virtual_hosts[0].routes[2].route.auto_host_rewrite: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c, max_stream_duration: {max_stream_duration: 1s}}}`),
			"router: virtual_hosts[0].routes[2].route.max_stream_duration: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {weighted_clusters: {clusters: [{name: a, weight: 1, request_headers_to_add: [{header: {key: x, value: "v"}}]}]}}}`),
			"router: virtual_hosts[0].routes[2].route.weighted_clusters.clusters[0].request_headers_to_add: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {weighted_clusters: {runtime_key_prefix: rk, clusters: [{name: a, weight: 1}]}}}`),
			"router: virtual_hosts[0].routes[2].route.weighted_clusters.runtime_key_prefix: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, redirect: {regex_rewrite: {pattern: {regex: a}, substitution: b}}}`),
			"router: virtual_hosts[0].routes[2].redirect.regex_rewrite: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, direct_response: {status: 200, body: {filename: /etc/body}}}`),
			"router: virtual_hosts[0].routes[2].direct_response.body.filename: unsupported field (reading a file is I/O; inline the body with inline_string or inline_bytes)"},
		{withRoute(`{match: {prefix: "/"}, direct_response: {status: 200, body: {environment_variable: BODY}}}`),
			"router: virtual_hosts[0].routes[2].direct_response.body.environment_variable: unsupported field"},
		{withRoute(`{match: {prefix: "/"}, route: {cluster: c}, request_headers_to_add: [{header: {key: x, raw_value: eQ==}}]}`),
			"router: virtual_hosts[0].routes[2].request_headers_to_add[0].header.raw_value: unsupported field"},
		{withRoute(`{match: {prefix: "/", headers: [{name: x, string_match: {exact: "v"}}, {name: x-y, string_match: {custom: {name: c, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute}}}}]}, route: {cluster: c}}`),
			"router: virtual_hosts[0].routes[2].match.headers[1].string_match.custom: unsupported field"},
	}
	for _, tt := range tests {
		_, err := Compile(parseRC(t, tt.src))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s\n got: %v\nwant: %s", tt.src, err, tt.want)
		}
	}
}

func TestAcceptedButIgnoredFields(t *testing.T) {
	// validate_clusters and total_weight are accepted; google_re2 is a
	// marker for the only engine hop has.
	mustCompile(t, `
validate_clusters: true
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {safe_regex: {google_re2: {}, regex: "/.*"}}, route: {weighted_clusters: {total_weight: 5, clusters: [{name: a, weight: 5}]}}}
`)
}
