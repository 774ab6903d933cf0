package dataplane_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestUpgradeOnTheHTTP2Wire: what an HTTP/2 upstream receives for an
// HTTP/1.1 WebSocket handshake is Envoy's extended CONNECT: :method
// CONNECT, :protocol websocket, :path kept, Upgrade, Connection and
// "Content-Length: 0" gone, the Sec-WebSocket-* headers untouched; its 200
// reaches the HTTP/1.1 client as 101 with Upgrade and Connection.
func TestUpgradeOnTheHTTP2Wire(t *testing.T) {
	up := startH2ConnectUpstream(t, answer(http.StatusOK))
	front := startHop(t, frontYAML(fmt.Sprint(up.port), explicitH2, ""))
	c := dialRaw(t, front.addr("front"))
	c.send("GET /chat?room=1 HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")
	res := c.readResponse("GET")
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Upgrade") != "websocket" || res.Header.Get("Connection") != "upgrade" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	c.send("hello")
	if got := c.readN(5); got != "hello" {
		t.Fatalf("echo %q", got)
	}
	seen := up.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests", len(seen))
	}
	r := seen[0]
	if r.Method != http.MethodConnect || r.Header.Get(":protocol") != "websocket" || r.URL.RequestURI() != "/chat?room=1" || r.Host != "app.test" {
		t.Fatalf("upstream saw %s %s host %s :protocol %q", r.Method, r.URL.RequestURI(), r.Host, r.Header.Get(":protocol"))
	}
	for _, h := range []string{"Upgrade", "Connection", "Content-Length"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("upstream saw %s: %v", h, v)
		}
	}
	if r.Header.Get("Sec-Websocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" || r.Header.Get("Sec-Websocket-Version") != "13" {
		t.Errorf("Sec-WebSocket-* changed: %v", r.Header)
	}
}

// TestHTTP2UpgradeAnswerOtherThan200PassesThrough: only 200 accepts an
// extended CONNECT; any other answer from an HTTP/2 upstream reaches the
// HTTP/1.1 client as an ordinary response, body included.
func TestHTTP2UpgradeAnswerOtherThan200PassesThrough(t *testing.T) {
	up := startH2ConnectUpstream(t, answer(http.StatusForbidden))
	front := startHop(t, frontYAML(fmt.Sprint(up.port), explicitH2, ""))
	c := dialRaw(t, front.addr("front"))
	c.send("GET /chat HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	res := c.readResponse("GET")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusForbidden || string(body) != "refused by upstream" {
		t.Fatalf("client got %d %q", res.StatusCode, body)
	}
	if res.Header.Get("Upgrade") != "" {
		t.Fatalf("refusal carries Upgrade: %v", res.Header)
	}
	c.expectEOF()
}
