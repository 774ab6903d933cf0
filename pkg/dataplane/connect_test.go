package dataplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// connectYAML: CONNECT termination (envoy-semantics.md §3.3). Virtual host
// foo.test:443 terminates CONNECT to the echo cluster; dead.test:443 to a
// port nobody listens on; plain.test:443 has a connect_matcher route
// without any CONNECT upgrade entry (403); everything else only serves
// GET / with a direct response, so an unconfigured CONNECT finds no route.
func connectYAML(echoPort, deadPort int) string {
	const connectRoute = `{"match": {"connect_matcher": {}}, "route": {"cluster": "%s", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}`
	cluster := func(name string, port int) string {
		return fmt.Sprintf(`{"name": %q, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": %q, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}]}]}}`, name, name, port)
	}
	return fmt.Sprintf(`{
 "static_resources": {
  "listeners": [{
   "name": "l",
   "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
   "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "t",
    "codec_type": "AUTO",
    "route_config": {"name": "rc", "virtual_hosts": [
     {"name": "foo", "domains": ["foo.test:443"], "routes": [%s,
      {"match": {"prefix": "/"}, "route": {"cluster": "echo", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {"allow_post": true}}]}}]},
     {"name": "dead", "domains": ["dead.test:443"], "routes": [%s]},
     {"name": "plain", "domains": ["plain.test:443"], "routes": [{"match": {"connect_matcher": {}}, "route": {"cluster": "echo"}}]},
     {"name": "any", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}
    ]},
    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
   }}]}]
  }],
  "clusters": [%s, %s]
 }
}`, fmt.Sprintf(connectRoute, "echo"), fmt.Sprintf(connectRoute, "dead"), cluster("echo", echoPort), cluster("dead", deadPort))
}

// startTCPEcho runs a TCP echo server that half-closes after the client does.
func startTCPEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

// echoBoth sends n random bytes on w while reading them back from r.
func echoBoth(t *testing.T, w io.Writer, r io.Reader, n int) {
	t.Helper()
	payload := make([]byte, n)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := w.Write(payload)
		werr <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed bytes differ")
	}
}

// getOK checks that hop still serves a plain request on a new connection.
func getOK(t *testing.T, addr string) {
	t.Helper()
	c := dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res := c.readResponse("GET")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("follow-up GET: %d %q", res.StatusCode, body)
	}
}

func TestConnectH1Terminated(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	c := dialRaw(t, h.addr("l"))
	// The Host header is ignored: the request-target picks the vhost. Early
	// data rides in the same packet as the head.
	c.send("CONNECT foo.test:443 HTTP/1.1\r\nHost: bar.test:443\r\nContent-Length: 0\r\n\r\nearly")
	res := c.readResponse("CONNECT")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("200 to CONNECT carries %s: %q", k, v)
		}
	}
	if got := c.readN(5); got != "early" {
		t.Fatalf("early data echoed as %q", got)
	}
	echoBoth(t, c.Conn, c.br, 1<<20)
	if n := h.stat("http.t.downstream_cx_upgrades_total"); n != 1 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 1", n)
	}
	if n := h.stat("http.t.downstream_cx_upgrades_active"); n != 1 {
		t.Errorf("downstream_cx_upgrades_active = %d, want 1", n)
	}
	c.Conn.(*net.TCPConn).CloseWrite()
	c.expectEOF()
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	getOK(t, h.addr("l"))
}

// TestConnectH1Refusals: each bad CONNECT is answered and the connection
// closed; hop serves the next connection.
func TestConnectH1Refusals(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	tests := []struct {
		name string
		req  string
		want int
	}{
		{"absolute-form target", "CONNECT http://foo.test:443 HTTP/1.1\r\nHost: foo.test:443\r\n\r\n", 400},
		{"non-zero content-length", "CONNECT foo.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"transfer-encoding", "CONNECT foo.test:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501},
		{"unconfigured target", "CONNECT bar.test:443 HTTP/1.1\r\nHost: foo.test:443\r\n\r\n", 404},
		{"route without CONNECT enabled", "CONNECT plain.test:443 HTTP/1.1\r\n\r\n", 403},
		{"upstream down", "CONNECT dead.test:443 HTTP/1.1\r\n\r\n", 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, h.addr("l"))
			c.send(tc.req)
			res := c.readResponse("CONNECT")
			io.ReadAll(res.Body)
			if res.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d", res.StatusCode, tc.want)
			}
			c.expectEOF()
			getOK(t, h.addr("l"))
		})
	}
	// The refused CONNECTs that were accepted as upgrades (404 has no
	// route, 403 is refused, the codec errors come first) end: the 503 one.
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	h.waitStat("http.t.downstream_cx_upgrades_total", 1)
	h.waitStat("http.t.downstream_rq_ws_on_non_ws_route", 1)
}

// h2Connect sends a plain HTTP/2 CONNECT (:authority only) over h2c.
func h2Connect(t *testing.T, addr, authority string) (*http.Response, io.WriteCloser) {
	t.Helper()
	return h2Stream(t, addr, http.MethodConnect, authority, "")
}

// h2Stream sends a request over h2c whose body is the returned writer.
func h2Stream(t *testing.T, addr, method, authority, path string) (*http.Response, io.WriteCloser) {
	t.Helper()
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	req := (&http.Request{
		Method: method,
		URL:    &url.URL{Scheme: "http", Host: authority, Path: path},
		Host:   authority,
		Header: http.Header{},
		Body:   pr,
	}).WithContext(ctx)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/2 %s: %v", method, err)
	}
	t.Cleanup(func() { res.Body.Close(); pw.Close() })
	return res, pw
}

func TestConnectH2Terminated(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	res, w := h2Connect(t, h.addr("l"), "foo.test:443")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	echoBoth(t, w, res.Body, 1<<20)
	w.Close() // END_STREAM: the echo half-closes back
	if rest, err := io.ReadAll(res.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after END_STREAM: %q, %v", rest, err)
	}
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	if n := h.stat("http.t.downstream_cx_upgrades_total"); n != 1 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 1", n)
	}

	res, _ = h2Connect(t, h.addr("l"), "dead.test:443")
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dead upstream: status = %d, want 503", res.StatusCode)
	}
	res, _ = h2Connect(t, h.addr("l"), "bar.test:443")
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("unconfigured: status = %d, want 404", res.StatusCode)
	}
	getOK(t, h.addr("l"))
}

// TestPostH2Terminated: allow_post terminates an HTTP/2 POST the same way:
// its body goes to the TCP upstream, the upstream's bytes come back as the
// response body. It is not an upgrade.
func TestPostH2Terminated(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	res, w := h2Stream(t, h.addr("l"), http.MethodPost, "foo.test:443", "/")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	echoBoth(t, w, res.Body, 1<<20)
	w.Close()
	if rest, err := io.ReadAll(res.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after END_STREAM: %q, %v", rest, err)
	}
	h.waitStat("http.t.downstream_rq_active", 0)
	if n := h.stat("http.t.downstream_cx_upgrades_total"); n != 0 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 0", n)
	}
	if n := h.stat("http.t.downstream_cx_upgrades_active"); n != 0 {
		t.Errorf("downstream_cx_upgrades_active = %d, want 0", n)
	}
}

// TestConnectH2ConnectError: a terminated HTTP/2 CONNECT whose upstream
// refuses the connection gets the 503 with Envoy's body, then the stream is
// reset with CONNECT_ERROR (RFC 9113 §8.5), as Envoy does; the connection
// goes on serving tunnels.
func TestConnectH2ConnectError(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	c := dialH2(t, h.addr("l"))
	c.connect(1, "dead.test:443", "", false)
	if ev := c.response(1); ev.status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503", ev.status)
	}
	body, end := c.readBody(1, -1)
	if !strings.HasPrefix(body, "upstream connect error or disconnect/reset before headers") {
		t.Errorf("body = %q", body)
	}
	if end != "rst:"+http2.ErrCodeConnect.String() {
		t.Fatalf("stream ended with %q, want RST_STREAM(CONNECT_ERROR)", end)
	}
	c.connect(3, "foo.test:443", "ping", false)
	if ev := c.response(3); ev.status != http.StatusOK {
		t.Fatalf("next tunnel: status = %d, want 200", ev.status)
	}
	if got, _ := c.readBody(3, 4); got != "ping" {
		t.Fatalf("next tunnel echoed %q", got)
	}
}
