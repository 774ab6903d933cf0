package router

import (
	"fmt"
	"net/http"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// bigConfig builds 100 virtual hosts of 10 routes each (1000 routes), plus
// a wildcard virtual host. Routes of service i match prefix
// "/svc<i>/r<k>/" and the last one "/" with a header matcher.
func bigConfig() *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: "big"}
	for i := 0; i < 100; i++ {
		vh := &routev3.VirtualHost{
			Name:    fmt.Sprintf("svc%d", i),
			Domains: []string{fmt.Sprintf("svc%d.example.com", i), fmt.Sprintf("svc%d.example.com:8080", i)},
		}
		for k := 0; k < 9; k++ {
			vh.Routes = append(vh.Routes, &routev3.Route{
				Name:   fmt.Sprintf("svc%d-r%d", i, k),
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/svc%d/r%d/", i, k)}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("c%d", i)}}},
			})
		}
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name: fmt.Sprintf("svc%d-hdr", i),
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{
					Name:                 "x-tenant",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "blue"},
				}},
				QueryParameters: []*routev3.QueryParameterMatcher{{
					Name:                         "debug",
					QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true},
				}},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "hdr"}}},
		})
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
		Name:    "wild",
		Domains: []string{"*.wild.example.org", "*"},
		Routes: []*routev3.Route{{
			Name:   "wild",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "w"}}},
		}},
	})
	return rc
}

var matchCases = []struct {
	name string
	req  *Request
	want string
}{
	{"prefix hit", &Request{Method: "GET", Authority: "svc57.example.com", Path: "/svc57/r8/items?id=3", Header: http.Header{}}, "svc57-r8"},
	{"prefix hit with port", &Request{Method: "GET", Authority: "svc57.example.com:8080", Path: "/svc57/r0/", Header: http.Header{}}, "svc57-r0"},
	{"upper-case authority", &Request{Method: "GET", Authority: "SVC57.Example.COM", Path: "/svc57/r8/x", Header: http.Header{}}, "svc57-r8"},
	{"header and query", &Request{Method: "GET", Authority: "svc57.example.com", Path: "/other?a=1&debug", Header: http.Header{"X-Tenant": {"blue"}}}, "svc57-hdr"},
	{"suffix wildcard", &Request{Method: "GET", Authority: "a.wild.example.org", Path: "/", Header: http.Header{}}, "wild"},
	{"default", &Request{Method: "GET", Authority: "unknown.example.net", Path: "/", Header: http.Header{}}, "wild"},
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tbl, err := Compile(bigConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, mc := range matchCases {
		if got := routeName(tbl, mc.req); got != mc.want {
			t.Errorf("%s: matched %q, want %q", mc.name, got, mc.want)
		}
		if n := testing.AllocsPerRun(100, func() { tbl.Match(mc.req) }); n != 0 {
			t.Errorf("%s: %v allocations per Match, want 0", mc.name, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	tbl, err := Compile(bigConfig())
	if err != nil {
		b.Fatal(err)
	}
	for _, mc := range matchCases {
		b.Run(mc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tbl.Match(mc.req)
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	rc := bigConfig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(rc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMutateRequestHeaders(b *testing.B) {
	r := routeFor(b, `{match: {prefix: "/"}, route: {cluster: c},
	  request_headers_to_add: [
	    {header: {key: x-forwarded-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD},
	    {header: {key: x-static, value: "v"}}]}`)
	f := plainFormatter{remote: "10.1.2.3:5555", local: "10.0.0.1:80", proto: "HTTP/1.1"}
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"Accept": {"*/*"}}
		r.MutateRequestHeaders(h, f)
	}
}
