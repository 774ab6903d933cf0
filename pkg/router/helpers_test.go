package router

import (
	"net/http"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// Registers the Any type used by typed_per_filter_config in tests.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
)

// parseRC parses a RouteConfiguration written in YAML, failing the test on
// a syntax error.
func parseRC(t testing.TB, src string) *routev3.RouteConfiguration {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(js, rc); err != nil {
		t.Fatalf("protojson: %v\n%s", err, js)
	}
	return rc
}

// mustCompile parses and compiles src.
func mustCompile(t testing.TB, src string) *Table {
	t.Helper()
	tbl, err := Compile(parseRC(t, src))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// get builds a GET request.
func get(authority, path string, kv ...string) *Request {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &Request{Method: http.MethodGet, Authority: authority, Path: path, Scheme: "http", Header: h}
}

// routeName matches req and returns the route's name, "<no vhost>" or
// "<no route>".
func routeName(tbl *Table, req *Request) string {
	vh, r := tbl.Match(req)
	switch {
	case vh == nil:
		return "<no vhost>"
	case r == nil:
		return "<no route>"
	}
	return r.Name
}

// fakeFormatter is a RequestFormatter with fixed values.
type fakeFormatter struct {
	remote, local, proto string
	req                  *Request
}

func (f *fakeFormatter) DownstreamRemoteAddress() string { return f.remote }
func (f *fakeFormatter) DownstreamLocalAddress() string  { return f.local }
func (f *fakeFormatter) Protocol() string                { return f.proto }
func (f *fakeFormatter) Request() *Request               { return f.req }

// plainFormatter implements only Formatter.
type plainFormatter struct{ remote, local, proto string }

func (f plainFormatter) DownstreamRemoteAddress() string { return f.remote }
func (f plainFormatter) DownstreamLocalAddress() string  { return f.local }
func (f plainFormatter) Protocol() string                { return f.proto }
