package router

import (
	"fmt"
	"testing"
)

const vhostConfig = `
name: rc
virtual_hosts:
- name: exact
  domains: ["www.example.com", "Upper.Example.com"]
  routes: [{name: exact, match: {prefix: "/"}, route: {cluster: c}}]
- name: suffix-long
  domains: ["*-bar.example.com"]
  routes: [{name: suffix-long, match: {prefix: "/"}, route: {cluster: c}}]
- name: suffix
  domains: ["*.example.com"]
  routes: [{name: suffix, match: {prefix: "/"}, route: {cluster: c}}]
- name: prefix-long
  domains: ["api.example.*"]
  routes: [{name: prefix-long, match: {prefix: "/"}, route: {cluster: c}}]
- name: prefix
  domains: ["api.*"]
  routes: [{name: prefix, match: {prefix: "/"}, route: {cluster: c}}]
- name: default
  domains: ["*"]
  routes: [{name: default, match: {prefix: "/"}, route: {cluster: c}}]
`

func TestVirtualHostPrecedence(t *testing.T) {
	tbl := mustCompile(t, vhostConfig)
	tests := []struct {
		authority string
		want      string
	}{
		{"www.example.com", "exact"},
		{"WWW.Example.COM", "exact"},
		{"upper.example.com", "exact"},
		{"foo-bar.example.com", "suffix-long"}, // longest suffix wins
		{"foo.example.com", "suffix"},
		{"-bar.example.com", "suffix"},     // "*-bar..." needs at least one char
		{".example.com", "default"},        // "*.example.com" needs at least one char
		{"api.example.com", "suffix"},      // suffix beats prefix
		{"api.example.org", "prefix-long"}, // longest prefix wins
		{"api.other.org", "prefix"},        //
		{"api.", "default"},                // prefix needs at least one char after it
		{"other.org", "default"},           //
		// The port is kept: no exact match, and "...:8080" does not end in
		// ".example.com".
		{"www.example.com:8080", "default"},
	}
	for _, tt := range tests {
		if got := routeName(tbl, get(tt.authority, "/")); got != tt.want {
			t.Errorf("authority %q: got %q, want %q", tt.authority, got, tt.want)
		}
	}
}

func TestVirtualHostPortHandling(t *testing.T) {
	const base = `
name: rc
%s
virtual_hosts:
- name: plain
  domains: ["example.com"]
  routes: [{name: plain, match: {prefix: "/"}, route: {cluster: c}}]
- name: withport
  domains: ["example.com:8080", "foo.lyft.com:80"]
  routes: [{name: withport, match: {prefix: "/"}, route: {cluster: c}}]
- name: v6
  domains: ["[::1]"]
  routes: [{name: v6, match: {prefix: "/"}, route: {cluster: c}}]
- name: v6port
  domains: ["[::1]:80"]
  routes: [{name: v6port, match: {prefix: "/"}, route: {cluster: c}}]
- name: prefix
  domains: ["pre.*"]
  routes: [{name: prefix, match: {prefix: "/"}, route: {cluster: c}}]
`
	tests := []struct {
		authority    string
		keepPort     string
		ignoringPort string
	}{
		{"example.com", "plain", "plain"},
		{"example.com:8080", "withport", "plain"},
		{"example.com:9999", "<no vhost>", "plain"},
		{"foo.lyft.com:80", "withport", "<no vhost>"},
		{"[::1]", "v6", "v6"},
		{"[::1]:80", "v6port", "v6"},
		{"[::1]:443", "<no vhost>", "v6"},
		{"example.com:", "<no vhost>", "plain"},
		{"pre.x:80", "prefix", "prefix"},
	}
	keep := mustCompile(t, fmt.Sprintf(base, ""))
	ignore := mustCompile(t, fmt.Sprintf(base, "ignore_port_in_host_matching: true"))
	viaOpts, err := CompileWithOptions(parseRC(t, fmt.Sprintf(base, "")), Options{IgnorePortInHostMatching: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if got := routeName(keep, get(tt.authority, "/")); got != tt.keepPort {
			t.Errorf("port kept, %q: got %q, want %q", tt.authority, got, tt.keepPort)
		}
		if got := routeName(ignore, get(tt.authority, "/")); got != tt.ignoringPort {
			t.Errorf("ignore_port_in_host_matching, %q: got %q, want %q", tt.authority, got, tt.ignoringPort)
		}
		if got := routeName(viaOpts, get(tt.authority, "/")); got != tt.ignoringPort {
			t.Errorf("Options.IgnorePortInHostMatching, %q: got %q, want %q", tt.authority, got, tt.ignoringPort)
		}
	}
}

func TestVirtualHostMissingAuthority(t *testing.T) {
	onlyDefault := mustCompile(t, `
virtual_hosts:
- {name: d, domains: ["*"], routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]}`)
	if got := routeName(onlyDefault, get("", "/")); got != "r" {
		t.Errorf("only a default vhost: got %q, want r", got)
	}
	mixed := mustCompile(t, vhostConfig)
	if got := routeName(mixed, get("", "/")); got != "<no vhost>" {
		t.Errorf("no authority with named vhosts: got %q, want <no vhost>", got)
	}
	none := mustCompile(t, `
virtual_hosts:
- {name: a, domains: ["a.com"], routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]}`)
	if got := routeName(none, get("b.com", "/")); got != "<no vhost>" {
		t.Errorf("unknown host without default: got %q", got)
	}
	if vh, r := none.Match(get("a.com", "/nothing-here-but-prefix-slash")); vh == nil || r == nil {
		t.Errorf("a.com: got (%v, %v)", vh, r)
	}
	if tbl := mustCompile(t, `name: x`); tbl.Name() != "x" || routeName(tbl, get("a", "/")) != "<no vhost>" {
		t.Errorf("empty table: name %q, match %q", tbl.Name(), routeName(tbl, get("a", "/")))
	}
}

func TestVirtualHostNoRoute(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- {name: a, domains: ["*"], routes: [{name: r, match: {path: "/only"}, route: {cluster: c}}]}`)
	vh, r := tbl.Match(get("x", "/other"))
	if vh == nil || vh.Name != "a" || r != nil {
		t.Fatalf("got (%v, %v), want (a, nil)", vh, r)
	}
	if got := tbl.FindVirtualHost("anything"); got != vh {
		t.Errorf("FindVirtualHost: got %v", got)
	}
}

func TestPortStart(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"a.com", -1},
		{"a.com:80", 5},
		{"a.com:", 5},
		{"[::1]", -1},
		{"[::1]:80", 5},
		{"::1", 1}, // Envoy's rule, not IPv6-aware without brackets
	}
	for _, tt := range tests {
		if got := portStart(tt.in); got != tt.want {
			t.Errorf("portStart(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
