package router

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"

	subst "github.com/hopproxy/hop/pkg/format"
)

func TestHeaderMutationLevelOrder(t *testing.T) {
	const src = `
%s
request_headers_to_add: [{header: {key: x-level, value: global}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
                         {header: {key: x-trace, value: global}}]
response_headers_to_add: [{header: {key: x-level, value: global}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
virtual_hosts:
- name: vh
  domains: ["*"]
  request_headers_to_add: [{header: {key: x-level, value: vhost}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
                           {header: {key: x-trace, value: vhost}}]
  response_headers_to_add: [{header: {key: x-level, value: vhost}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
  routes:
  - match: {prefix: "/"}
    route: {cluster: c}
    request_headers_to_add: [{header: {key: x-level, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
                             {header: {key: x-trace, value: route}}]
    response_headers_to_add: [{header: {key: x-level, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
  - match: {prefix: "/"}
    route: {cluster: c}
`
	tests := []struct {
		flag      string
		wantLevel string
		wantTrace []string
	}{
		// Envoy default: route, then virtual host, then route configuration;
		// the last one applied wins.
		{"", "global", []string{"route", "vhost", "global"}},
		{"most_specific_header_mutations_wins: true", "route", []string{"global", "vhost", "route"}},
	}
	for _, tt := range tests {
		tbl := mustCompile(t, fmt.Sprintf(src, tt.flag))
		r := tbl.VirtualHosts()[0].Routes()[0]
		req := http.Header{}
		r.MutateRequestHeaders(req, nil)
		if got := req.Get("X-Level"); got != tt.wantLevel {
			t.Errorf("%q request: x-level %q, want %q", tt.flag, got, tt.wantLevel)
		}
		if got := req.Values("X-Trace"); !reflect.DeepEqual(got, tt.wantTrace) {
			t.Errorf("%q request: x-trace %q, want %q", tt.flag, got, tt.wantTrace)
		}
		resp := http.Header{}
		r.MutateResponseHeaders(resp, nil)
		if got := resp.Get("X-Level"); got != tt.wantLevel {
			t.Errorf("%q response: x-level %q, want %q", tt.flag, got, tt.wantLevel)
		}
		// A route without its own mutations still gets the vhost's and the
		// configuration's.
		req = http.Header{}
		tbl.VirtualHosts()[0].Routes()[1].MutateRequestHeaders(req, nil)
		if got := req.Values("X-Trace"); len(got) != 2 {
			t.Errorf("%q second route: x-trace %q", tt.flag, got)
		}
	}
}

func TestHeaderAppendActions(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {cluster: c},
	  request_headers_to_remove: [x-removed, X-Readd],
	  request_headers_to_add: [
	    {header: {key: x-append, value: new}},
	    {header: {key: x-append-absent, value: new}, append_action: APPEND_IF_EXISTS_OR_ADD},
	    {header: {key: x-add-if-absent, value: new}, append_action: ADD_IF_ABSENT},
	    {header: {key: x-add-if-absent-missing, value: new}, append_action: ADD_IF_ABSENT},
	    {header: {key: x-overwrite, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
	    {header: {key: x-overwrite-missing, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
	    {header: {key: x-overwrite-if-exists, value: new}, append_action: OVERWRITE_IF_EXISTS},
	    {header: {key: x-overwrite-if-exists-missing, value: new}, append_action: OVERWRITE_IF_EXISTS},
	    {header: {key: x-legacy-append-false, value: new}, append: false},
	    {header: {key: x-legacy-append-true, value: new}, append: true},
	    {header: {key: x-empty, value: ""}},
	    {header: {key: x-empty-kept, value: ""}, keep_empty_value: true},
	    {header: {key: x-missing-req, value: "%REQ(x-nothing)%"}},
	    {header: {key: x-missing-req-kept, value: "%REQ(x-nothing)%"}, keep_empty_value: true},
	    {header: {key: x-readd, value: new}},
	    {header: {key: x-copy, value: "%REQ(x-overwrite)%"}},
	    {header: {key: X-Both, value: two}},
	    {header: {key: x-both, value: one}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]}`)
	h := http.Header{
		"X-Append":              {"old"},
		"X-Add-If-Absent":       {"old"},
		"X-Overwrite":           {"old1", "old2"},
		"X-Overwrite-If-Exists": {"old"},
		"X-Legacy-Append-False": {"old"},
		"X-Legacy-Append-True":  {"old"},
		"X-Removed":             {"old"},
		"X-Readd":               {"old"},
		"X-Both":                {"old"},
	}
	r.MutateRequestHeaders(h, nil)
	want := http.Header{
		"X-Append":                {"old", "new"},
		"X-Append-Absent":         {"new"},
		"X-Add-If-Absent":         {"old"},
		"X-Add-If-Absent-Missing": {"new"},
		"X-Overwrite":             {"new"},
		"X-Overwrite-Missing":     {"new"},
		"X-Overwrite-If-Exists":   {"new"},
		"X-Legacy-Append-False":   {"new"},
		"X-Legacy-Append-True":    {"old", "new"},
		"X-Empty-Kept":            {""},
		"X-Missing-Req-Kept":      {""},
		"X-Readd":                 {"new"},  // removed before added
		"X-Copy":                  {"old1"}, // formatted before this level's overwrites
		"X-Both":                  {"one", "two"},
	}
	if !reflect.DeepEqual(h, want) {
		for k := range mergeKeys(h, want) {
			if !reflect.DeepEqual(h[k], want[k]) {
				t.Errorf("%s: got %q, want %q", k, h[k], want[k])
			}
		}
	}
}

func mergeKeys(a, b http.Header) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

func TestHeaderFormatter(t *testing.T) {
	r := routeFor(t, `{match: {prefix: "/"}, route: {cluster: c},
	  request_headers_to_add: [
	    {header: {key: x-remote, value: "%DOWNSTREAM_REMOTE_ADDRESS%"}},
	    {header: {key: x-remote-ip, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}},
	    {header: {key: x-local, value: "%DOWNSTREAM_LOCAL_ADDRESS%"}},
	    {header: {key: x-local-ip, value: "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%"}},
	    {header: {key: x-local-port, value: "%DOWNSTREAM_LOCAL_PORT%"}},
	    {header: {key: x-proto, value: "via %PROTOCOL% 100%%"}},
	    {header: {key: x-req, value: "[%REQ(X-In)%]"}},
	    {header: {key: x-req-alt, value: "%REQ(x-none?x-in)%"}},
	    {header: {key: x-req-trunc, value: "%REQ(x-in):3%"}},
	    {header: {key: x-authority, value: "%REQ(:AUTHORITY)%"}},
	    {header: {key: x-path, value: "%REQ(:path)%"}},
	    {header: {key: x-method, value: "%REQ(:method)% %REQ(:scheme)%"}}],
	  response_headers_to_add: [
	    {header: {key: x-echo, value: "%REQ(x-in)%"}},
	    {header: {key: x-resp-authority, value: "%REQ(:authority)%"}}]}`)
	req := &Request{Method: "GET", Authority: "a.com:80", Path: "/p?q", Scheme: "https", Header: http.Header{"X-In": {"value", "second"}}}
	f := &fakeFormatter{remote: "[::1]:5000", local: "10.0.0.1:8080", proto: "HTTP/2", req: req}
	h := req.Header.Clone()
	r.MutateRequestHeaders(h, f)
	want := map[string]string{
		"X-Remote":     "[::1]:5000",
		"X-Remote-Ip":  "::1",
		"X-Local":      "10.0.0.1:8080",
		"X-Local-Ip":   "10.0.0.1",
		"X-Local-Port": "8080",
		"X-Proto":      "via HTTP/2 100%",
		"X-Req":        "[value]", // first value only
		"X-Req-Alt":    "value",
		"X-Req-Trunc":  "val",
		"X-Authority":  "a.com:80",
		"X-Path":       "/p?q",
		"X-Method":     "GET https",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("request %s: got %q, want %q", k, got, v)
		}
	}

	resp := http.Header{}
	r.MutateResponseHeaders(resp, f)
	if got := resp.Get("X-Echo"); got != "value" {
		t.Errorf("response %%REQ(x-in)%%: %q", got)
	}
	if got := resp.Get("X-Resp-Authority"); got != "a.com:80" {
		t.Errorf("response %%REQ(:authority)%%: %q", got)
	}

	// A plain Formatter has no request: %REQ% reads only the live request
	// headers, and response-side %REQ% is empty.
	plain := plainFormatter{remote: "1.2.3.4:1", local: "5.6.7.8:9", proto: "HTTP/1.1"}
	h = http.Header{"X-In": {"v"}}
	r.MutateRequestHeaders(h, plain)
	if h.Get("X-Req") != "[v]" || h.Get("X-Authority") != "" || h.Get("X-Remote-Ip") != "1.2.3.4" || h.Get("X-Method") != " " {
		t.Errorf("plain formatter: %v", h)
	}
	resp = http.Header{}
	r.MutateResponseHeaders(resp, plain)
	if _, ok := resp["X-Echo"]; ok {
		t.Errorf("response %%REQ%% without request: %v", resp)
	}

	// A nil Formatter formats stream values as "" and drops the header.
	h = http.Header{}
	r.MutateRequestHeaders(h, nil)
	if _, ok := h["X-Remote"]; ok || h.Get("X-Proto") != "via  100%" {
		t.Errorf("nil formatter: %v", h)
	}
	// A nil map is left alone rather than panicking.
	r.MutateRequestHeaders(nil, f)
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		literal bool
		want    string
	}{
		{"plain", true, "plain"},
		{"", true, ""},
		{"50%%", true, "50%"},
		{"%%PROTOCOL%%", true, "%PROTOCOL%"},
		{"a%PROTOCOL%b", false, "aHTTP/1.1b"},
		{"%PROTOCOL%%PROTOCOL%", false, "HTTP/1.1HTTP/1.1"},
	}
	ctx := &evalContext{f: plainFormatter{proto: "HTTP/1.1"}}
	for _, tt := range tests {
		f, err := subst.Parse(tt.in, subst.Options{Commands: routerCommands, OmitEmpty: true})
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		env := ctx.env()
		if f.IsLiteral() != tt.literal || f.Eval(&env) != tt.want {
			t.Errorf("%q: literal %v eval %q, want %v %q", tt.in, f.IsLiteral(), f.Eval(&env), tt.literal, tt.want)
		}
	}
}
