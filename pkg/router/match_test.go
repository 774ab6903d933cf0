package router

import (
	"fmt"
	"net/http"
	"testing"
)

// oneRoute compiles a table whose only route has the given match (YAML
// flow mapping) and reports whether req matches it.
func oneRoute(t *testing.T, match string) *Table {
	t.Helper()
	return mustCompile(t, fmt.Sprintf(`
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - name: r
    match: %s
    route: {cluster: c}
`, match))
}

func TestPathMatchers(t *testing.T) {
	tests := []struct {
		match string
		path  string
		want  bool
	}{
		{`{prefix: "/api"}`, "/api", true},
		{`{prefix: "/api"}`, "/api/v1?x=1", true},
		{`{prefix: "/api"}`, "/apix", true},
		{`{prefix: "/api"}`, "/API", false},
		{`{prefix: "/api", case_sensitive: false}`, "/API/v1", true},
		{`{prefix: "/api"}`, "/ap?i", false}, // query is not part of the path
		{`{prefix: ""}`, "/anything", true},
		{`{path: "/exact"}`, "/exact", true},
		{`{path: "/exact"}`, "/exact?q=1", true},
		{`{path: "/exact"}`, "/exact#frag", true},
		{`{path: "/exact"}`, "/exact/", false},
		{`{path: "/exact"}`, "/EXACT", false},
		{`{path: "/exact", case_sensitive: false}`, "/EXACT", true},
		{`{path: "/exact", case_sensitive: true}`, "/EXACT", false},
		{`{safe_regex: {regex: "/v[0-9]+/.*"}}`, "/v12/items", true},
		{`{safe_regex: {regex: "/v[0-9]+/.*"}}`, "/v12/items?x=/v1/", true},
		{`{safe_regex: {regex: "/v[0-9]+"}}`, "/v12/items", false}, // full match only
		{`{safe_regex: {regex: "/v[0-9]+"}}`, "/x/v12", false},
		{`{safe_regex: {regex: "/a|/b"}}`, "/b", true}, // alternation stays anchored
		{`{safe_regex: {regex: "/a|/b"}}`, "/bc", false},
		{`{safe_regex: {regex: "/a", google_re2: {}}}`, "/a", true},
		{`{path_separated_prefix: "/api"}`, "/api", true},
		{`{path_separated_prefix: "/api"}`, "/api/", true},
		{`{path_separated_prefix: "/api"}`, "/api/v1", true},
		{`{path_separated_prefix: "/api"}`, "/api?x", true},
		{`{path_separated_prefix: "/api"}`, "/apiv1", false},
		{`{path_separated_prefix: "/api"}`, "/ap", false},
		{`{path_separated_prefix: "/api", case_sensitive: false}`, "/API/x", true},
	}
	for _, tt := range tests {
		tbl := oneRoute(t, tt.match)
		if got := routeName(tbl, get("h", tt.path)) == "r"; got != tt.want {
			t.Errorf("match %s, path %q: got %v, want %v", tt.match, tt.path, got, tt.want)
		}
	}
}

func TestFirstMatchWins(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: specific, match: {prefix: "/api/v2"}, route: {cluster: c}}
  - {name: api, match: {prefix: "/api"}, route: {cluster: c}}
  - {name: never, match: {prefix: "/api/v2/x"}, route: {cluster: c}}
  - {name: all, match: {prefix: "/"}, route: {cluster: c}}
`)
	for path, want := range map[string]string{
		"/api/v2/x": "specific",
		"/api/v1":   "api",
		"/other":    "all",
	} {
		if got := routeName(tbl, get("h", path)); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}

// TestConnectMatcher follows Envoy's RouteMatcherTest.TestConnectRoutes.
func TestConnectMatcher(t *testing.T) {
	tbl := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: regex, match: {safe_regex: {regex: "/regex"}}, route: {cluster: c}}
  - {name: connect-safe, match: {connect_matcher: {}, headers: [{name: x-safe, exact_match: safe}]}, route: {cluster: c}}
  - {name: connect, match: {connect_matcher: {}}, route: {cluster: c}}
  - {name: fallthrough, match: {safe_regex: {regex: ".*"}}, route: {cluster: c}}
`)
	h1Connect := &Request{Method: "CONNECT", Authority: "bat.com:443", Header: http.Header{}, IsConnect: true}
	h2Connect := &Request{Method: "CONNECT", Authority: "bat.com:443", Path: "/api", Header: http.Header{}, IsConnect: true}
	safe := &Request{Method: "CONNECT", Authority: "bat.com:443", Header: http.Header{"X-Safe": {"safe"}}, IsConnect: true}
	h2Regex := &Request{Method: "CONNECT", Authority: "bat.com:443", Path: "/regex", Header: http.Header{}, IsConnect: true}
	tests := []struct {
		name string
		req  *Request
		want string
	}{
		{"H1 CONNECT without path", h1Connect, "connect"},
		{"H2 CONNECT with path", h2Connect, "connect"},
		{"CONNECT with header", safe, "connect-safe"},
		{"CONNECT with path hits path route first", h2Regex, "regex"},
		{"GET", get("bat.com", "/api"), "fallthrough"},
	}
	for _, tt := range tests {
		if got := routeName(tbl, tt.req); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}

	// A pathless CONNECT never matches path routes; GET never matches
	// connect_matcher.
	onlyPrefix := oneRoute(t, `{prefix: "/"}`)
	if got := routeName(onlyPrefix, h1Connect); got != "<no route>" {
		t.Errorf("pathless CONNECT on prefix route: got %q", got)
	}
	onlyConnect := oneRoute(t, `{connect_matcher: {}}`)
	if got := routeName(onlyConnect, get("h", "/")); got != "<no route>" {
		t.Errorf("GET on connect_matcher: got %q", got)
	}
}

func TestHeaderMatchers(t *testing.T) {
	tests := []struct {
		name    string
		matcher string
		headers []string // key, value pairs
		want    bool
	}{
		{"exact", `{name: x-a, exact_match: "v"}`, []string{"X-A", "v"}, true},
		{"exact differs", `{name: x-a, exact_match: "v"}`, []string{"X-A", "w"}, false},
		{"exact absent", `{name: x-a, exact_match: "v"}`, nil, false},
		{"exact empty matches any value", `{name: x-a, exact_match: ""}`, []string{"X-A", "w"}, true},
		{"name is case-insensitive", `{name: X-A, exact_match: "v"}`, []string{"x-a", "v"}, true},
		{"multiple values joined", `{name: x-a, exact_match: "1,2"}`, []string{"X-A", "1", "X-A", "2"}, true},
		{"regex", `{name: x-a, safe_regex_match: {regex: "\\d{3}"}}`, []string{"X-A", "123"}, true},
		{"regex full match", `{name: x-a, safe_regex_match: {regex: "\\d{3}"}}`, []string{"X-A", "1234"}, false},
		{"regex inverted", `{name: x-a, safe_regex_match: {regex: "\\d{3}"}, invert_match: true}`, []string{"X-A", "1234"}, true},
		{"range in", `{name: x-a, range_match: {start: -10, end: 0}}`, []string{"X-A", "-1"}, true},
		{"range end exclusive", `{name: x-a, range_match: {start: -10, end: 0}}`, []string{"X-A", "0"}, false},
		{"range not a number", `{name: x-a, range_match: {start: -10, end: 0}}`, []string{"X-A", "-1x"}, false},
		{"range inverted", `{name: x-a, range_match: {start: -10, end: 0}, invert_match: true}`, []string{"X-A", "-1"}, false},
		{"present", `{name: x-a, present_match: true}`, []string{"X-A", ""}, true},
		{"present absent", `{name: x-a, present_match: true}`, nil, false},
		{"present false absent", `{name: x-a, present_match: false}`, nil, true},
		{"present false present", `{name: x-a, present_match: false}`, []string{"X-A", "v"}, false},
		{"present inverted absent", `{name: x-a, present_match: true, invert_match: true}`, nil, true},
		{"no specifier is presence", `{name: x-a}`, []string{"X-A", "v"}, true},
		{"no specifier absent", `{name: x-a}`, nil, false},
		{"prefix", `{name: x-a, prefix_match: "ab"}`, []string{"X-A", "abc"}, true},
		{"prefix no", `{name: x-a, prefix_match: "ab"}`, []string{"X-A", "xabc"}, false},
		{"suffix", `{name: x-a, suffix_match: "bc"}`, []string{"X-A", "abc"}, true},
		{"contains", `{name: x-a, contains_match: "b"}`, []string{"X-A", "abc"}, true},
		{"contains inverted", `{name: x-a, contains_match: "z", invert_match: true}`, []string{"X-A", "abc"}, true},
		{"absent inverted never matches", `{name: x-a, contains_match: "z", invert_match: true}`, nil, false},
		{"missing as empty inverted", `{name: x-a, range_match: {start: 0, end: 10}, invert_match: true, treat_missing_header_as_empty: true}`, nil, true},
		{"missing as empty regex", `{name: x-a, string_match: {safe_regex: {regex: "^$"}}, treat_missing_header_as_empty: true}`, nil, true},
		{"missing not empty regex", `{name: x-a, string_match: {safe_regex: {regex: "^$"}}}`, nil, false},
		{"string exact", `{name: x-a, string_match: {exact: "AbC"}}`, []string{"X-A", "AbC"}, true},
		{"string exact case", `{name: x-a, string_match: {exact: "AbC"}}`, []string{"X-A", "abc"}, false},
		{"string exact ignore_case", `{name: x-a, string_match: {exact: "AbC", ignore_case: true}}`, []string{"X-A", "abc"}, true},
		{"string prefix ignore_case", `{name: x-a, string_match: {prefix: "AB", ignore_case: true}}`, []string{"X-A", "abc"}, true},
		{"string suffix ignore_case", `{name: x-a, string_match: {suffix: "BC", ignore_case: true}}`, []string{"X-A", "abc"}, true},
		{"string suffix", `{name: x-a, string_match: {suffix: "BC"}}`, []string{"X-A", "abc"}, false},
		{"string contains ignore_case", `{name: x-a, string_match: {contains: "B", ignore_case: true}}`, []string{"X-A", "abc"}, true},
		{"string contains", `{name: x-a, string_match: {contains: "B"}}`, []string{"X-A", "abc"}, false},
		{"string regex", `{name: x-a, string_match: {safe_regex: {regex: "a.c"}}}`, []string{"X-A", "abc"}, true},
		{":method", `{name: ":method", exact_match: "GET"}`, nil, true},
		{":method other", `{name: ":method", exact_match: "POST"}`, nil, false},
		{":authority", `{name: ":authority", exact_match: "h:80"}`, nil, true},
		{":path includes query", `{name: ":path", exact_match: "/p?q=1"}`, nil, true},
		{":scheme", `{name: ":scheme", exact_match: "http"}`, nil, true},
		{"host is not :authority", `{name: host, present_match: true}`, nil, false},
	}
	for _, tt := range tests {
		tbl := oneRoute(t, `{prefix: "/", headers: [`+tt.matcher+`]}`)
		req := get("h:80", "/p?q=1", tt.headers...)
		if got := routeName(tbl, req) == "r"; got != tt.want {
			t.Errorf("%s: %s with %v: got %v, want %v", tt.name, tt.matcher, tt.headers, got, tt.want)
		}
	}
}

func TestHeaderMatchersAllMustMatch(t *testing.T) {
	tbl := oneRoute(t, `{prefix: "/", headers: [{name: a, exact_match: "1"}, {name: b, exact_match: "2"}]}`)
	if routeName(tbl, get("h", "/", "A", "1")) == "r" {
		t.Error("matched with only one of two headers")
	}
	if routeName(tbl, get("h", "/", "A", "1", "B", "2")) != "r" {
		t.Error("did not match with both headers")
	}
}

func TestQueryParameterMatchers(t *testing.T) {
	tests := []struct {
		matcher string
		path    string
		want    bool
	}{
		{`{name: debug, present_match: true}`, "/?debug", true},
		{`{name: debug, present_match: true}`, "/?debug=1", true},
		{`{name: debug, present_match: true}`, "/?x=1&debug=&y", true},
		{`{name: debug, present_match: true}`, "/?debugger=1", false},
		{`{name: debug, present_match: true}`, "/", false},
		{`{name: debug, present_match: true}`, "/#?debug", false},
		{`{name: debug}`, "/?debug", true},
		{`{name: v, string_match: {exact: "2"}}`, "/?v=2", true},
		{`{name: v, string_match: {exact: "2"}}`, "/?v=3", false},
		{`{name: v, string_match: {exact: "2"}}`, "/?v=3&v=2", false},   // first value only
		{`{name: v, string_match: {exact: "a b"}}`, "/?v=a%20b", false}, // not decoded
		{`{name: v, string_match: {prefix: "A", ignore_case: true}}`, "/?v=abc#frag", true},
		{`{name: v, string_match: {exact: "x"}}`, "/?v=x#frag", true},
	}
	for _, tt := range tests {
		tbl := oneRoute(t, `{prefix: "/", query_parameters: [`+tt.matcher+`]}`)
		if got := routeName(tbl, get("h", tt.path)) == "r"; got != tt.want {
			t.Errorf("%s on %q: got %v, want %v", tt.matcher, tt.path, got, tt.want)
		}
	}
}
