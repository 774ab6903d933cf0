package dataplane_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// wsApp is an HTTP/1.1 WebSocket application that echoes messages and
// records the handshakes it accepted.
type wsApp struct {
	port int
	mu   sync.Mutex
	seen []*http.Request
}

func startWSApp(t *testing.T) *wsApp {
	t.Helper()
	app := &wsApp{}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.mu.Lock()
		app.seen = append(app.seen, r.Clone(r.Context()))
		app.mu.Unlock()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader answered 400
		}
		defer ws.Close()
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	app.port = ln.Addr().(*net.TCPAddr).Port
	return app
}

func (a *wsApp) requests() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...)
}

// sidecarYAML is a hop in front of an HTTP/1.1 app that accepts HTTP/2
// (allow_connect) and HTTP/1.1 on one port (codec AUTO). tls is a
// transport_socket block for the filter chain, or "".
func sidecarYAML(appPort int, allowConnect bool, tls string) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: sidecar
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - %s
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sidecar
          codec_type: AUTO
          http2_protocol_options: {allow_connect: %t}
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: app}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, tls, allowConnect, appPort)
}

// frontYAML is a hop that takes HTTP/1.1 WebSockets and sends them to the
// sidecar over HTTP/2. protocol is the cluster's
// typed_extension_protocol_options body; tls an UpstreamTlsContext block.
func frontYAML(sidecarPort string, protocol, tls string) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: front
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: sidecar
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: sidecar}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: sidecar
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        %s
    %s
    load_assignment:
      cluster_name: sidecar
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}}]}]
`, protocol, tls, sidecarPort)
}

const explicitH2 = `explicit_http_config: {http2_protocol_options: {allow_connect: true}}`

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// echoMany sends n messages of varied size and type and checks each echo.
func echoMany(t *testing.T, ws *websocket.Conn, n int) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	for i := 0; i < n; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, 1+(i*37)%5000)
		typ := websocket.BinaryMessage
		if i%2 == 0 {
			typ, msg = websocket.TextMessage, []byte(fmt.Sprintf("message %d", i))
		}
		if err := ws.WriteMessage(typ, msg); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		gotType, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if gotType != typ || !bytes.Equal(got, msg) {
			t.Fatalf("message %d corrupted", i)
		}
	}
}

// TestWebSocketAcrossHTTP2Hop is the deployment of the issue: an HTTP/1.1
// WebSocket client → hop front → HTTP/2 over TLS (ALPN h2, SNI, verified
// against the test CA) → hop sidecar (allow_connect) → HTTP/1.1 app. 1,000
// messages come back intact; the app sees GET, Upgrade: websocket and the
// client's own key (the client checks the app's Sec-WebSocket-Accept, so a
// changed key fails the handshake).
func TestWebSocketAcrossHTTP2Hop(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "sidecar.test")
	app := startWSApp(t)
	sidecar := startHop(t, sidecarYAML(app.port, true, fmt.Sprintf(`transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]`, leaf.CertFile, leaf.KeyFile)))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), explicitH2, fmt.Sprintf(`transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: sidecar.test
        common_tls_context:
          validation_context:
            trusted_ca: {filename: %q}
            match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: sidecar.test}}]`, pki.CAFile)))

	ws := dialWS(t, front.addr("front"))
	echoMany(t, ws, 1000)

	seen := app.requests()
	if len(seen) != 1 {
		t.Fatalf("app saw %d handshakes", len(seen))
	}
	r := seen[0]
	if r.Method != http.MethodGet || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Key") == "" {
		t.Fatalf("app saw %s Upgrade=%q key=%q", r.Method, r.Header.Get("Upgrade"), r.Header.Get("Sec-WebSocket-Key"))
	}
	for h, stats := range map[*hop]map[string]int64{
		front: {
			"http.front.downstream_cx_upgrades_total":  1,
			"http.front.downstream_cx_upgrades_active": 1,
			"cluster.sidecar.upstream_cx_http2_total":  1,
			"http.front.downstream_rq_http1_total":     1,
		},
		sidecar: {
			"http.sidecar.downstream_cx_upgrades_total":  1,
			"http.sidecar.downstream_cx_upgrades_active": 1,
			"http.sidecar.downstream_cx_http2_total":     1,
			"http.sidecar.downstream_rq_http2_total":     1,
			"http.sidecar.downstream_cx_ssl_total":       1,
		},
	} {
		for name, want := range stats {
			if got := h.stat(name); got != want {
				t.Errorf("%s = %d, want %d", name, got, want)
			}
		}
	}
	if err := closeWS(ws); err != nil {
		t.Fatal(err)
	}
	front.waitStat("http.front.downstream_cx_upgrades_active", 0)
	sidecar.waitStat("http.sidecar.downstream_cx_upgrades_active", 0)
}

// TestFiftyWebSocketsShareOneHTTP2Connection: 50 WebSockets through the
// front are 50 streams on one HTTP/2 connection to the sidecar.
func TestFiftyWebSocketsShareOneHTTP2Connection(t *testing.T) {
	app := startWSApp(t)
	sidecar := startHop(t, sidecarYAML(app.port, true, ""))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), explicitH2, ""))
	var wss []*websocket.Conn
	for i := 0; i < 50; i++ {
		wss = append(wss, dialWS(t, front.addr("front")))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(wss))
	for i, ws := range wss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := echoOnce(ws, fmt.Sprintf("ws %d msg %d", i, j)); err != nil {
					errs <- fmt.Errorf("ws %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := sidecar.stat("http.sidecar.downstream_cx_http2_total"); got != 1 {
		t.Errorf("sidecar accepted %d HTTP/2 connections, want 1", got)
	}
	if got := front.stat("cluster.sidecar.upstream_cx_total"); got != 1 {
		t.Errorf("front opened %d upstream connections, want 1", got)
	}
	if got := sidecar.stat("http.sidecar.downstream_cx_upgrades_active"); got != 50 {
		t.Errorf("sidecar upgrades active %d, want 50", got)
	}
}

// TestPOSTUpgradeArrivesAsGET: Envoy sends every upgrade that crossed an
// HTTP/2 hop on as GET; hop does the same.
func TestPOSTUpgradeArrivesAsGET(t *testing.T) {
	up := startRawUpstream(t)
	sidecar := startHop(t, sidecarYAML(up.port(), true, ""))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), explicitH2, ""))
	c := dialRaw(t, front.addr("front"))
	c.send("POST /upload HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	uc := up.accept(t)
	req := uc.readRequest()
	if req.Method != http.MethodGet || req.URL.Path != "/upload" || req.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upstream saw %s %s Upgrade=%q", req.Method, req.URL.Path, req.Header.Get("Upgrade"))
	}
	uc.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	res := c.readResponse("POST")
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	c.send("ping")
	if got := uc.readN(4); got != "ping" {
		t.Fatalf("upstream got %q", got)
	}
	uc.send("pong")
	if got := c.readN(4); got != "pong" {
		t.Fatalf("client got %q", got)
	}
}

// TestHTTP1FallbackWhenUpstreamLacksExtendedConnect: beyond Envoy. The
// sidecar speaks HTTP/2 without SETTINGS_ENABLE_CONNECT_PROTOCOL
// (allow_connect false); the front carries the WebSocket over HTTP/1.1 on
// a connection of its own instead of failing it.
func TestHTTP1FallbackWhenUpstreamLacksExtendedConnect(t *testing.T) {
	app := startWSApp(t)
	sidecar := startHop(t, sidecarYAML(app.port, false, ""))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), `explicit_http_config: {http2_protocol_options: {}}`, ""))
	// An ordinary request first, so the front has an HTTP/2 connection and
	// has seen the sidecar's SETTINGS.
	res, _ := get(t, "http://"+front.addr("front")+"/plain")
	if res.StatusCode != http.StatusBadRequest { // the WebSocket app refuses a plain GET
		t.Fatalf("plain GET: %d", res.StatusCode)
	}
	ws := dialWS(t, front.addr("front"))
	echoMany(t, ws, 100)
	if got := sidecar.stat("http.sidecar.downstream_cx_http1_total"); got != 1 {
		t.Errorf("sidecar HTTP/1.1 connections %d, want 1 (the fallback)", got)
	}
	if got := sidecar.stat("http.sidecar.downstream_rq_http1_total"); got != 1 {
		t.Errorf("sidecar HTTP/1.1 requests %d, want 1", got)
	}
}

// TestUpgradeWithBodyRefusedOnHTTP2Path: an HTTP/1.1 upgrade that declares
// a Content-Length keeps it when it crosses an HTTP/2 hop (only "0" is
// dropped), and the HTTP/2 stack then refuses payload beyond it, as with
// Envoy: the stream is reset, nothing beyond the declared length reaches
// the upstream, and both connections end.
func TestUpgradeWithBodyRefusedOnHTTP2Path(t *testing.T) {
	up := startRawUpstream(t)
	sidecar := startHop(t, sidecarYAML(up.port(), true, ""))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), explicitH2, ""))
	c := dialRaw(t, front.addr("front"))
	c.send("GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 7\r\n\r\n")
	uc := up.accept(t)
	req := uc.readRequest()
	if req.Header.Get("Content-Length") != "7" {
		t.Fatalf("upstream saw Content-Length %q, want 7", req.Header.Get("Content-Length"))
	}
	uc.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	if res := c.readResponse("GET"); res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("client got %d", res.StatusCode)
	}
	c.send("foo bar, and more than declared")
	c.expectEOF()
	uc.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	got, _ := io.ReadAll(uc.br)
	if len(got) > 7 {
		t.Fatalf("upstream received %q beyond the declared 7 bytes", got)
	}
}

// TestUpgradeResponseWithBodyRefusedOnHTTP2Path: the same for a 101 that
// declares a Content-Length: on the HTTP/2 leg it becomes a 200 with that
// length, and more bytes than declared end the tunnel.
func TestUpgradeResponseWithBodyRefusedOnHTTP2Path(t *testing.T) {
	up := startRawUpstream(t)
	sidecar := startHop(t, sidecarYAML(up.port(), true, ""))
	front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), explicitH2, ""))
	c := dialRaw(t, front.addr("front"))
	c.send("GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	uc := up.accept(t)
	uc.readRequest()
	uc.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nContent-Length: 5\r\n\r\n")
	if res := c.readResponse("GET"); res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("client got %d", res.StatusCode)
	}
	uc.send("0123456789")
	c.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	got, _ := io.ReadAll(c.br)
	if len(got) > 5 {
		t.Fatalf("client received %q beyond the declared 5 bytes", got)
	}
	uc.expectEOF()
}

// TestAutoConfigPicksByALPN: a cluster with auto_config over TLS carries
// WebSockets as extended CONNECT streams when the sidecar's ALPN says h2,
// and over HTTP/1.1 on TLS connections of their own when it says only
// http/1.1 (beyond Envoy, which fails them).
func TestAutoConfigPicksByALPN(t *testing.T) {
	for _, tc := range []struct {
		alpn       string
		h2cx, h1cx int64
	}{
		{"[h2, http/1.1]", 1, 0},
		// The first connection learns the ALPN answer (and stays for
		// ordinary requests); each WebSocket then gets its own.
		{"[http/1.1]", 0, 4},
	} {
		t.Run(tc.alpn, func(t *testing.T) {
			pki := tlstest.New(t)
			leaf := pki.Leaf(t, "sidecar.test")
			app := startWSApp(t)
			sidecar := startHop(t, sidecarYAML(app.port, true, fmt.Sprintf(`transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: %s
            tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]`, tc.alpn, leaf.CertFile, leaf.KeyFile)))
			front := startHop(t, frontYAML(portOf(sidecar.addr("sidecar")), `auto_config: {http2_protocol_options: {allow_connect: true}}`, fmt.Sprintf(`transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: sidecar.test
        common_tls_context:
          validation_context: {trusted_ca: {filename: %q}}`, pki.CAFile)))
			for i := 0; i < 3; i++ {
				ws := dialWS(t, front.addr("front"))
				echoMany(t, ws, 20)
			}
			for name, want := range map[string]int64{
				"http.sidecar.downstream_cx_http2_total":    tc.h2cx,
				"http.sidecar.downstream_cx_http1_total":    tc.h1cx,
				"http.sidecar.downstream_cx_ssl_total":      tc.h2cx + tc.h1cx,
				"http.sidecar.downstream_cx_upgrades_total": 3,
			} {
				if got := sidecar.stat(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
}
