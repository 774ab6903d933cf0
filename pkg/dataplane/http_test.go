package dataplane_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cl := &http.Client{Timeout: defaultTestTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func upstreamHTTP(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().(*net.TCPAddr).Port
}

// TestLocalReplies: Envoy's status codes and bodies for requests hop
// answers itself.
func TestLocalReplies(t *testing.T) {
	t.Run("404 no route", func(t *testing.T) {
		h := startHop(t, cfg{upstreamPort: freePort(t), routeMatch: `{"prefix": "/api"}`}.String())
		res, body := get(t, "http://"+h.addr("l")+"/other")
		if res.StatusCode != 404 || body != "" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
		if h.stat("http.t.downstream_rq_4xx") != 1 || h.stat("http.t.no_route") != 1 {
			t.Error("stats")
		}
	})
	t.Run("503 connect failure", func(t *testing.T) {
		h := startHop(t, cfg{upstreamPort: freePort(t)}.String())
		res, body := get(t, "http://"+h.addr("l")+"/")
		if res.StatusCode != 503 || !strings.HasPrefix(body, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure") {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
		if h.stat("cluster.up.upstream_cx_connect_fail") != 1 || h.stat("http.t.downstream_rq_5xx") != 1 {
			t.Error("stats")
		}
	})
	t.Run("503 no healthy upstream", func(t *testing.T) {
		y := cfg{upstreamPort: 1}.String()
		y = strings.Replace(y, `"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]`, `"endpoints": []`, 1)
		h := startHop(t, y)
		res, body := get(t, "http://"+h.addr("l")+"/")
		if res.StatusCode != 503 || body != "no healthy upstream" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
	})
	t.Run("504 route timeout", func(t *testing.T) {
		release := make(chan struct{})
		port := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		defer close(release)
		h := startHop(t, cfg{upstreamPort: port, route: `"timeout": "0.2s"`}.String())
		res, body := get(t, "http://"+h.addr("l")+"/")
		if res.StatusCode != 504 || body != "upstream request timeout" {
			t.Fatalf("%d %q", res.StatusCode, body)
		}
		if h.stat("cluster.up.upstream_rq_timeout") != 1 {
			t.Error("upstream_rq_timeout")
		}
	})
	t.Run("431 headers too large", func(t *testing.T) {
		h := startHop(t, cfg{upstreamPort: freePort(t), hcm: `"max_request_headers_kb": 1`}.String())
		c := dialRaw(t, h.addr("l"))
		c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n")
		if res := c.readResponse("GET"); res.StatusCode != 431 {
			t.Fatalf("status %d, want 431", res.StatusCode)
		}
	})
	t.Run("400 malformed", func(t *testing.T) {
		h := startHop(t, cfg{upstreamPort: freePort(t)}.String())
		c := dialRaw(t, h.addr("l"))
		c.send("GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
		if res := c.readResponse("GET"); res.StatusCode != 400 {
			t.Fatalf("status %d, want 400", res.StatusCode)
		}
	})
	t.Run("413 buffer filter", func(t *testing.T) {
		port := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
		h := startHop(t, cfg{upstreamPort: port, filters: `{"name": "b", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 10}}`}.String())
		res, err := http.Post("http://"+h.addr("l")+"/", "text/plain", strings.NewReader(strings.Repeat("x", 11)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 413 {
			t.Fatalf("status %d, want 413", res.StatusCode)
		}
		res, err = http.Post("http://"+h.addr("l")+"/", "text/plain", strings.NewReader("0123456789"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d, want 200", res.StatusCode)
		}
	})
}

// TestProxyHTTP: an ordinary request is proxied with Envoy's header rules,
// the route's rewrites and header mutations, over a reused upstream
// connection.
func TestProxyHTTP(t *testing.T) {
	seen := make(chan *http.Request, 4)
	port := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("X-Up", "yes")
		w.Header().Set("X-Drop", "me")
		io.WriteString(w, "body:"+r.URL.RequestURI())
	})
	h := startHop(t, cfg{upstreamPort: port,
		routeMatch: `{"prefix": "/api/"}`,
		route:      `"prefix_rewrite": "/v2/", "host_rewrite_literal": "backend.internal"`,
		routes:     `{"match": {"path": "/hello"}, "direct_response": {"status": 202, "body": {"inline_string": "hi"}}}, {"match": {"prefix": "/old"}, "redirect": {"path_redirect": "/new"}}`,
		vhostExtra: `"request_headers_to_add": [{"header": {"key": "x-vh", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}], "response_headers_to_remove": ["x-drop"],
			"response_headers_to_add": [{"header": {"key": "x-echo-id", "value": "%REQ(x-request-id)%"}}, {"header": {"key": "x-echo-path", "value": "%REQ(:path)%"}}, {"header": {"key": "x-echo-host", "value": "%REQ(:authority)%"}}]`,
	}.String())
	base := "http://" + h.addr("l")

	res, body := get(t, base+"/api/items?q=1", "X-Request-Id", "given-id")
	if res.StatusCode != 200 || body != "body:/v2/items?q=1" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	r := <-seen
	if r.Host != "backend.internal" {
		t.Errorf("Host = %q", r.Host)
	}
	if r.Header.Get("X-Request-Id") != "given-id" {
		t.Errorf("x-request-id not preserved: %q", r.Header.Get("X-Request-Id"))
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("x-forwarded-for appended without use_remote_address: %q", r.Header.Get("X-Forwarded-For"))
	}
	if r.Header.Get("X-Vh") != "127.0.0.1" || r.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("headers: %v", r.Header)
	}
	if r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Errorf("x-envoy-expected-rq-timeout-ms = %q", r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms"))
	}
	if res.Header.Get("X-Up") != "yes" || res.Header.Get("X-Drop") != "" || res.Header.Get("Server") != "envoy" || res.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
		t.Errorf("response headers: %v", res.Header)
	}
	// %REQ()% in response mutations reads the request as it went
	// upstream, rewrites applied, as Envoy's in-place edits do.
	for k, want := range map[string]string{"X-Echo-Id": "given-id", "X-Echo-Path": "/v2/items?q=1", "X-Echo-Host": "backend.internal"} {
		if got := res.Header.Get(k); got != want {
			t.Errorf("response %s = %q, want %q", k, got, want)
		}
	}

	res, _ = get(t, base+"/api/again")
	r = <-seen
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("x-request-id not generated")
	}
	if got := h.stat("cluster.up.upstream_cx_total"); got != 1 {
		t.Errorf("upstream_cx_total = %d, want 1 (keep-alive reuse)", got)
	}
	if got := h.stat("cluster.up.upstream_rq_total"); got != 2 {
		t.Errorf("upstream_rq_total = %d, want 2", got)
	}

	res, body = get(t, base+"/hello")
	if res.StatusCode != 202 || body != "hi" {
		t.Errorf("direct response: %d %q", res.StatusCode, body)
	}
	if got := res.Header.Get("X-Echo-Path"); got != "/hello" {
		t.Errorf("direct response: x-echo-path = %q, want /hello", got)
	}
	res, _ = get(t, base+"/old/x", "Host", "example.com")
	if res.StatusCode != 301 || res.Header.Get("Location") != "http://example.com/new" {
		t.Errorf("redirect: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	if got := h.stat("http.t.downstream_rq_2xx"); got != 3 {
		t.Errorf("downstream_rq_2xx = %d, want 3", got)
	}
}

// TestUseRemoteAddress: with use_remote_address, the client address is
// appended to x-forwarded-for and an external x-request-id is replaced.
func TestUseRemoteAddress(t *testing.T) {
	seen := make(chan *http.Request, 1)
	port := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) { seen <- r })
	h := startHop(t, cfg{upstreamPort: port, hcm: `"use_remote_address": true`}.String())
	get(t, "http://"+h.addr("l")+"/", "X-Forwarded-For", "10.1.2.3")
	r := <-seen
	if got := r.Header.Get("X-Forwarded-For"); got != "10.1.2.3,127.0.0.1" { // Envoy appends with ","
		t.Errorf("x-forwarded-for = %q", got)
	}
}
