package dataplane_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func wsRequest(path, upgrade string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: example.com\r\nUpgrade: " + upgrade +
		"\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + wsKey +
		"\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

// serve101 answers one upgrade on the raw upstream with a 101 that echoes
// the Upgrade value.
func serve101(t *testing.T, u *rawUpstream) *rawConn {
	t.Helper()
	c := u.accept(t)
	req := c.readRequest()
	c.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + req.Header.Get("Upgrade") + "\r\nConnection: Upgrade\r\n\r\n")
	return c
}

// TestUpgradeTruthTable drives envoy-semantics.md §2.2 with real requests:
// the route's upgrade_configs entry decides when it exists, otherwise the
// HCM's; a refused upgrade on a matched route is 403, counted, and closes
// the connection.
func TestUpgradeTruthTable(t *testing.T) {
	tests := []struct {
		name         string
		hcm, route   string
		upgradeType  string
		wantUpgraded bool
	}{
		{"hcm absent, route absent", ``, ``, "websocket", false},
		{"hcm enabled, route absent", `"upgrade_configs": [{"upgrade_type": "websocket"}]`, ``, "websocket", true},
		{"hcm enabled, route enabled", `"upgrade_configs": [{"upgrade_type": "websocket"}]`, `"upgrade_configs": [{"upgrade_type": "websocket"}]`, "websocket", true},
		{"hcm enabled, route disabled", `"upgrade_configs": [{"upgrade_type": "websocket"}]`, `"upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]`, "websocket", false},
		{"hcm disabled, route absent", `"upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]`, ``, "websocket", false},
		{"hcm disabled, route enabled", `"upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]`, `"upgrade_configs": [{"upgrade_type": "websocket"}]`, "websocket", true},
		{"hcm absent, route enabled", ``, `"upgrade_configs": [{"upgrade_type": "websocket"}]`, "websocket", true},
		{"hcm absent, route disabled", ``, `"upgrade_configs": [{"upgrade_type": "websocket", "enabled": false}]`, "websocket", false},
		{"type matched case-insensitively at both levels", `"upgrade_configs": [{"upgrade_type": "WebSocket", "enabled": false}]`, `"upgrade_configs": [{"upgrade_type": "WEBSOCKET"}]`, "websocket", true},
		{"other type needs its own entry", `"upgrade_configs": [{"upgrade_type": "websocket"}]`, ``, "foo", false},
		{"non-websocket type", `"upgrade_configs": [{"upgrade_type": "foo"}]`, ``, "Foo", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := startRawUpstream(t)
			h := startHop(t, cfg{upstreamPort: u.port(), hcm: tc.hcm, route: tc.route}.String())
			c := dialRaw(t, h.addr("l"))
			c.send(wsRequest("/chat", tc.upgradeType))
			if tc.wantUpgraded {
				up := serve101(t, u)
				res := c.readResponse("GET")
				if res.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status = %d, want 101", res.StatusCode)
				}
				c.send("ping")
				if got := up.readN(4); got != "ping" {
					t.Fatalf("upstream got %q", got)
				}
				if h.stat("http.t.downstream_cx_upgrades_total") != 1 || h.stat("http.t.downstream_rq_ws_on_non_ws_route") != 0 {
					t.Fatal("upgrade stats wrong")
				}
				return
			}
			res := c.readResponse("GET")
			if res.StatusCode != http.StatusForbidden {
				t.Fatalf("status = %d, want 403", res.StatusCode)
			}
			if !res.Close {
				t.Error("403 to an upgrade must close the connection")
			}
			c.expectEOF()
			if got := h.stat("http.t.downstream_rq_ws_on_non_ws_route"); got != 1 {
				t.Errorf("downstream_rq_ws_on_non_ws_route = %d, want 1", got)
			}
			if got := h.stat("http.t.downstream_cx_upgrades_total"); got != 0 {
				t.Errorf("downstream_cx_upgrades_total = %d, want 0", got)
			}
		})
	}
}

// TestUpgradeNoRouteIs404: a refused upgrade without a matching route is
// answered by the router's 404, not 403.
func TestUpgradeNoRouteIs404(t *testing.T) {
	h := startHop(t, cfg{upstreamPort: freePort(t), routeMatch: `{"prefix": "/api"}`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/other", "websocket"))
	if res := c.readResponse("GET"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("status = %d, want 404", res.StatusCode)
	}
	if got := h.stat("http.t.downstream_rq_ws_on_non_ws_route"); got != 0 {
		t.Errorf("downstream_rq_ws_on_non_ws_route = %d, want 0", got)
	}
}

// TestUpgradeBytesExact: bytes pipelined behind the request headers reach
// the upstream after its 101, bytes the upstream sends right behind its
// 101 reach the client, and everything after flows both ways unchanged.
func TestUpgradeBytesExact(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}]`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/chat", "websocket") + "early-bytes\x00\xff")

	up := u.accept(t)
	req := up.readRequest()
	if req.Method != "GET" || req.Header.Get("Upgrade") != "websocket" || !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") {
		t.Fatalf("upstream request: %s %v", req.Method, req.Header)
	}
	if req.Header.Get("Sec-Websocket-Key") != wsKey {
		t.Errorf("Sec-WebSocket-Key = %q, want the client's", req.Header.Get("Sec-Websocket-Key"))
	}
	if req.Header.Get("X-Request-Id") == "" || req.Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("missing Envoy's default headers: %v", req.Header)
	}
	up.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nserver-first")
	if got := up.readN(len("early-bytes\x00\xff")); got != "early-bytes\x00\xff" {
		t.Fatalf("pipelined bytes upstream = %q", got)
	}
	res := c.readResponse("GET")
	if res.StatusCode != 101 || res.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	if res.Header.Get("Content-Length") != "" || res.Header.Get("Transfer-Encoding") != "" {
		t.Errorf("101 must carry no framing headers: %v", res.Header)
	}
	if got := c.readN(len("server-first")); got != "server-first" {
		t.Fatalf("client got %q after 101", got)
	}
	// A large binary blob both ways.
	blob := make([]byte, 1<<20)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	go c.Write(blob)
	if got := up.readN(len(blob)); got != string(blob) {
		t.Fatal("1 MiB client→upstream corrupted")
	}
	go up.Write(blob)
	if got := c.readN(len(blob)); got != string(blob) {
		t.Fatal("1 MiB upstream→client corrupted")
	}
	// Client half-closes: the upstream sees EOF, and can still answer.
	c.Conn.(interface{ CloseWrite() error }).CloseWrite()
	up.expectEOF()
	up.send("bye")
	if got := c.readN(3); got != "bye" {
		t.Fatalf("after half-close client got %q", got)
	}
	up.Close()
	c.expectEOF()
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	h.waitStat("http.t.downstream_cx_active", 0)
}

// TestUpgradePayloadHeldUntil101: the payload sent with the request is
// never forwarded when the upstream refuses (Envoy's
// BidirectionalUpgradeFailedWithPrePayload), and a refusal of 400 or more
// reaches the client as it was sent. hop holds the payload for every
// upgrade type; Envoy holds it for WebSocket only (README, differences).
func TestUpgradePayloadHeldUntil101(t *testing.T) {
	for _, typ := range []string{"websocket", "foo"} {
		t.Run(typ, func(t *testing.T) { testPayloadHeld(t, typ) })
	}
}

func testPayloadHeld(t *testing.T, typ string) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}, {"upgrade_type": "foo"}]`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/chat", typ) + "foo boo")
	up := u.accept(t)
	up.readRequest()
	up.send("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\nX-Why: nope\r\n\r\nnope")
	up.expectEOF() // hop closes the upstream without ever sending "foo boo"
	if up.br.Buffered() != 0 {
		t.Fatalf("upstream received held payload")
	}
	res := c.readResponse("GET")
	if res.StatusCode != 426 || res.Header.Get("X-Why") != "nope" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	body := make([]byte, 4)
	res.Body.Read(body)
	if string(body) != "nope" {
		t.Errorf("body = %q", body)
	}
	c.expectEOF()
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	if got := h.stat("http.t.downstream_cx_upgrades_total"); got != 1 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 1 (counted at request time)", got)
	}
}

// TestWebSocketNon101Below400: a 2xx/3xx answer to a WebSocket handshake
// ends the stream with a local reply echoing status and headers.
func TestWebSocketNon101Below400(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}]`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/chat", "websocket"))
	up := u.accept(t)
	up.readRequest()
	up.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello")
	res := c.readResponse("GET")
	if res.StatusCode != 200 || res.Header.Get("X-Up") != "1" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	if res.ContentLength != 0 {
		t.Errorf("local reply must have no body, content-length %d", res.ContentLength)
	}
	c.expectEOF()
	_ = h
}

// TestUpgradeRouteTimeout: the route timeout bounds the wait for the 101
// (504, upstream_rq_timeout) and stops once the upgrade succeeded.
func TestUpgradeRouteTimeout(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}]`, route: `"timeout": "0.2s"`}.String())

	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/slow", "websocket"))
	u.accept(t).readRequest() // and never answer
	res := c.readResponse("GET")
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status = %d, want 504", res.StatusCode)
	}
	if got := h.stat("cluster.up.upstream_rq_timeout"); got != 1 {
		t.Errorf("upstream_rq_timeout = %d, want 1", got)
	}

	c2 := dialRaw(t, h.addr("l"))
	c2.send(wsRequest("/fast", "websocket"))
	up := serve101(t, u)
	if res := c2.readResponse("GET"); res.StatusCode != 101 {
		t.Fatalf("status = %d", res.StatusCode)
	}
	<-time.After(500 * time.Millisecond) // well past the route timeout
	c2.send("still-here")
	if got := up.readN(10); got != "still-here" {
		t.Fatalf("tunnel cut by route timeout: %q", got)
	}
}

// TestUpgradeIdleTimeout: the stream idle timeout (here the route's
// idle_timeout) closes a silent tunnel and counts downstream_rq_idle_timeout.
func TestUpgradeIdleTimeout(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}]`, route: `"idle_timeout": "0.2s"`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/chat", "websocket"))
	up := serve101(t, u)
	c.readResponse("GET")
	start := time.Now()
	c.expectEOF()
	up.expectEOF()
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	h.waitStat("http.t.downstream_rq_idle_timeout", 1)
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
}

// TestH2CUpgradeStripped: Upgrade: h2c is never honoured; the request goes
// on as plain HTTP without the h2c headers.
func TestH2CUpgradeStripped(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port()}.String())
	c := dialRaw(t, h.addr("l"))
	c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	up := u.accept(t)
	req := up.readRequest()
	for _, k := range []string{"Upgrade", "Http2-Settings", "Connection"} {
		if v := req.Header.Get(k); v != "" && !(k == "Connection" && strings.EqualFold(v, "keep-alive")) {
			t.Errorf("upstream saw %s: %q", k, v)
		}
	}
	up.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	if res := c.readResponse("GET"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if got := h.stat("http.t.downstream_rq_ws_on_non_ws_route"); got != 0 {
		t.Errorf("h2c counted as refused upgrade")
	}
}

// TestIgnoreHTTP11Upgrade: http_protocol_options.ignore_http_11_upgrade
// removes matching Upgrade tokens and the request is served as plain HTTP.
func TestIgnoreHTTP11Upgrade(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, cfg{upstreamPort: u.port(), hcm: `"http_protocol_options": {"ignore_http_11_upgrade": [{"prefix": "TLS/"}]}`}.String())
	c := dialRaw(t, h.addr("l"))
	c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: TLS/1.2, TLS/1.3\r\n\r\n")
	up := u.accept(t)
	req := up.readRequest()
	if req.Header.Get("Upgrade") != "" || req.Header.Get("Connection") != "" {
		t.Errorf("upstream saw Upgrade %q Connection %q", req.Header.Get("Upgrade"), req.Header.Get("Connection"))
	}
	up.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	if res := c.readResponse("GET"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	// Without the option the same request is a refused upgrade.
	h2 := startHop(t, cfg{upstreamPort: u.port()}.String())
	c2 := dialRaw(t, h2.addr("l"))
	c2.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: TLS/1.2\r\n\r\n")
	if res := c2.readResponse("GET"); res.StatusCode != 403 {
		t.Fatalf("status %d, want 403", res.StatusCode)
	}
}

// TestCustomUpgradeFilterChain: an upgrade type's own filters replace
// http_filters for that type. The default chain has a 1 KiB buffer filter;
// the websocket chain has only the router; "foo" has no chain of its own.
func TestCustomUpgradeFilterChain(t *testing.T) {
	u := startRawUpstream(t)
	buffer := `{"name": "envoy.filters.http.buffer", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1024}}`
	router := `{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}`
	h := startHop(t, cfg{upstreamPort: u.port(), filters: buffer,
		hcm: fmt.Sprintf(`"upgrade_configs": [{"upgrade_type": "websocket", "filters": [%s]}, {"upgrade_type": "foo"}]`, router)}.String())

	c := dialRaw(t, h.addr("l"))
	c.send(wsRequest("/chat", "websocket", "Content-Length: 2048\r\n"))
	serve101(t, u)
	if res := c.readResponse("GET"); res.StatusCode != 101 {
		t.Fatalf("websocket via its router-only chain: status %d, want 101", res.StatusCode)
	}

	c2 := dialRaw(t, h.addr("l"))
	c2.send(wsRequest("/chat", "foo", "Content-Length: 2048\r\n"))
	if res := c2.readResponse("GET"); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("foo via the default chain: status %d, want 413", res.StatusCode)
	}
	c2.expectEOF()

	// A chunked upgrade has no end the buffer filter could wait for: it
	// lets the upgrade through instead of waiting for a payload that only
	// starts after the 101 (Envoy stalls here; README, differences).
	c3 := dialRaw(t, h.addr("l"))
	c3.send(wsRequest("/chat", "foo", "Transfer-Encoding: chunked\r\n"))
	up := serve101(t, u)
	if res := c3.readResponse("GET"); res.StatusCode != 101 {
		t.Fatalf("foo without a body via the buffer filter: status %d, want 101", res.StatusCode)
	}
	c3.send("after")
	if got := up.readN(5); got != "after" {
		t.Fatalf("upstream got %q", got)
	}
}

// TestHTTP10Refused: Envoy answers HTTP/1.0 with 426 unless accept_http_10.
func TestHTTP10Refused(t *testing.T) {
	h := startHop(t, cfg{upstreamPort: freePort(t)}.String())
	c := dialRaw(t, h.addr("l"))
	c.send("GET / HTTP/1.0\r\n\r\n")
	if res := c.readResponse("GET"); res.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("status %d, want 426", res.StatusCode)
	}
}
