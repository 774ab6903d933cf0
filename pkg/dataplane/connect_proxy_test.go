package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// proxyConnectYAML: CONNECT proxy mode (envoy-semantics.md §3.2). h1.test:443
// proxies to an HTTP/1.1 upstream (port h1), h2.test:443 to an HTTP/2 one
// (port h2), both enabled on the route and adding a header that shows
// the authority the formatters see; hcm.test:443 has a connect_matcher
// route with no upgrade entry of its own (the HCM's decides); strip.test
// (no port) is reached only when strip_any_host_port takes the port off;
// bs.test:443 routes by path (prefix /bytes), which only an HTTP/2
// `:protocol bytestream` CONNECT has. hcmExtra goes into the HCM.
func proxyConnectYAML(h1, h2 int, hcmExtra string) string {
	route := func(cluster string, upgrade bool) string {
		up := ""
		if upgrade {
			up = `, "upgrade_configs": [{"upgrade_type": "CONNECT"}]`
		}
		return fmt.Sprintf(`{"match": {"connect_matcher": {}}, "route": {"cluster": %q %s}, "request_headers_to_add": [{"header": {"key": "x-host-in-hop", "value": "%%REQ(:AUTHORITY)%%"}}]}`, cluster, up)
	}
	vhosts := strings.Join([]string{
		vhost("h1", "h1.test:443", route("up1", true)),
		vhost("h2", "h2.test:443", route("up2", true)),
		vhost("hcm", "hcm.test:443", route("up1", false)),
		vhost("strip", "strip.test", route("up1", true)),
		vhost("strip6", "[::1]", route("up1", true)),
		vhost("bs", "bs.test:443", `{"match": {"prefix": "/bytes"}, "route": {"cluster": "up1", "upgrade_configs": [{"upgrade_type": "CONNECT"}]}}`),
	}, ",")
	return bootstrapJSON([]string{hcmListener("", hcmExtra, vhosts, "")},
		connectCluster("up1", h1, false), connectCluster("up2", h2, true))
}

// acceptConnect takes the next connection on u and reads the CONNECT head.
func acceptConnect(t *testing.T, u *rawUpstream) (*rawConn, string, http.Header) {
	t.Helper()
	c := u.accept(t)
	line, h := c.readHead()
	return c, line, h
}

// TestConnectProxyH1Upstream: ConnectWithNoBody and ProxyConnect with an
// HTTP/1.1 upstream. The upstream gets "CONNECT <authority> HTTP/1.1" with
// the connection manager's and the route's headers, no body framing and
// no Connection header; the payload the client sent with its request is
// held until the upstream's 200, which the client gets without framing;
// then 1 MiB goes each way and a close on either side reaches the other.
func TestConnectProxyH1Upstream(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, proxyConnectYAML(u.port(), freePort(t), ""))
	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT h1.test:443 HTTP/1.1\r\nHost: other.test:443\r\nUser-Agent: raw\r\n\r\npayload")

	up, line, hdr := acceptConnect(t, u)
	if line != "CONNECT h1.test:443 HTTP/1.1" {
		t.Fatalf("request line %q", line)
	}
	if got := hdr.Get("Host"); got != "h1.test:443" {
		t.Errorf("Host = %q, want the CONNECT target", got)
	}
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection", "Upgrade"} {
		if v, ok := hdr[k]; ok {
			t.Errorf("upstream CONNECT carries %s: %q", k, v)
		}
	}
	if hdr.Get("X-Host-In-Hop") != "h1.test:443" || hdr.Get("X-Forwarded-Proto") != "http" || hdr.Get("X-Request-Id") == "" || hdr.Get("User-Agent") != "raw" {
		t.Errorf("upstream CONNECT headers: %v", hdr)
	}
	up.expectQuiet(200 * time.Millisecond) // "payload" is held

	up.send("HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\n")
	if got := up.readN(7); got != "payload" {
		t.Fatalf("upstream got %q after its 200", got)
	}
	res := c.readResponse("CONNECT")
	if res.StatusCode != 200 || res.Header.Get("X-Up") != "1" {
		t.Fatalf("client got %d %v", res.StatusCode, res.Header)
	}
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection"} {
		if v, ok := res.Header[k]; ok {
			t.Errorf("2xx to CONNECT carries %s: %q", k, v)
		}
	}
	up.send("return-payload")
	if got := c.readN(14); got != "return-payload" {
		t.Fatalf("client got %q", got)
	}
	echoPair(t, c, up, 1<<20)

	if n := h.stat("http.t.downstream_cx_upgrades_active"); n != 1 {
		t.Errorf("downstream_cx_upgrades_active = %d, want 1", n)
	}
	if n := h.stat("cluster.up1.upstream_cx_active"); n != 1 {
		t.Errorf("cluster.up1.upstream_cx_active = %d, want 1", n)
	}
	c.Conn.(*net.TCPConn).CloseWrite()
	up.expectEOF()
	up.Conn.Close()
	c.expectEOF()
	c.Conn.Close()
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	h.waitStat("cluster.up1.upstream_cx_active", 0)
	for name, want := range map[string]int64{
		"http.t.downstream_cx_upgrades_total": 1,
		"http.t.downstream_rq_2xx":            1,
		"cluster.up1.upstream_cx_total":       1,
		"cluster.up1.upstream_rq_total":       1,
	} {
		if n := h.stat(name); n != want {
			t.Errorf("%s = %d, want %d", name, n, want)
		}
	}
	getOK(t, h.addr("l"))
}

// echoPair sends n random bytes from the client end through hop to the
// upstream end, which sends them back, both ways at once.
func echoPair(t *testing.T, client, upstream *rawConn, n int) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		_, err := io.CopyN(upstream.Conn, upstream.br, int64(n))
		errc <- err
	}()
	echoBoth(t, client.Conn, client.br, n)
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatalf("upstream echo: %v", err)
	}
}

// TestConnectProxyAny2xx: any 2xx accepts a CONNECT and reaches the client
// unchanged (2xxStatusCode); its Content-Length and Transfer-Encoding mean
// nothing (ConnectWithChunkedBody): what follows is tunnel payload, passed
// on without re-framing, and the client's answer has no framing headers.
func TestConnectProxyAny2xx(t *testing.T) {
	for _, head := range []string{
		"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		t.Run(strings.Fields(head)[1], func(t *testing.T) {
			u := startRawUpstream(t)
			h := startHop(t, proxyConnectYAML(u.port(), freePort(t), ""))
			c := dialRaw(t, h.addr("l"))
			c.send("CONNECT h1.test:443 HTTP/1.1\r\n\r\n")
			up, _, _ := acceptConnect(t, u)
			up.send(head + "5\r\nhello\r\n0\r\n\r\n")
			res := c.readResponse("CONNECT")
			if want := head[9:12]; fmt.Sprint(res.StatusCode) != want {
				t.Fatalf("client got %d, want %s", res.StatusCode, want)
			}
			if _, ok := res.Header["Content-Length"]; ok {
				t.Error("answer carries Content-Length")
			}
			if _, ok := res.Header["Transfer-Encoding"]; ok {
				t.Error("answer carries Transfer-Encoding")
			}
			if got := c.readN(15); got != "5\r\nhello\r\n0\r\n\r\n" {
				t.Fatalf("payload %q", got)
			}
			echoPair(t, c, up, 4096)
		})
	}
}

// TestConnectProxyRefused: a non-2xx answer is an ordinary response
// (ConnectPauseNoResume): the client gets it as sent, the payload it sent
// early never reaches the upstream, both connections close, and hop
// serves on. A dead upstream is a 503.
func TestConnectProxyRefused(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, proxyConnectYAML(u.port(), freePort(t), ""))
	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT h1.test:443 HTTP/1.1\r\n\r\nsecret")
	up, _, _ := acceptConnect(t, u)
	up.send("HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\nX-Why: no\r\n\r\nnope")
	up.expectEOF()
	if up.br.Buffered() != 0 {
		t.Fatal("upstream received the held payload")
	}
	res := c.readResponse("CONNECT")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 400 || res.Header.Get("X-Why") != "no" || string(body) != "nope" {
		t.Fatalf("client got %d %v %q", res.StatusCode, res.Header, body)
	}
	c.expectEOF()
	c.Conn.Close()
	getOK(t, h.addr("l"))

	dead := startHop(t, proxyConnectYAML(freePort(t), freePort(t), ""))
	c = dialRaw(t, dead.addr("l"))
	c.send("CONNECT h1.test:443 HTTP/1.1\r\n\r\n")
	res = c.readResponse("CONNECT")
	io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dead upstream: %d, want 503", res.StatusCode)
	}
	c.expectEOF()
	c.Conn.Close()
	dead.waitStat("http.t.downstream_cx_upgrades_active", 0)
	getOK(t, dead.addr("l"))
}

// TestConnectProxyHCMLevel: the connection manager's upgrade_configs
// enables CONNECT for a connect_matcher route without an entry of its own;
// without it that route refuses with 403 (downstream_rq_ws_on_non_ws_route)
// while a CONNECT that matches no route is a 404.
func TestConnectProxyHCMLevel(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, proxyConnectYAML(u.port(), freePort(t), `"upgrade_configs": [{"upgrade_type": "CONNECT"}]`))
	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT hcm.test:443 HTTP/1.1\r\n\r\n")
	up, line, _ := acceptConnect(t, u)
	if line != "CONNECT hcm.test:443 HTTP/1.1" {
		t.Fatalf("request line %q", line)
	}
	up.send("HTTP/1.1 200 OK\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	echoPair(t, c, up, 64<<10)

	off := startHop(t, proxyConnectYAML(u.port(), freePort(t), ""))
	for target, want := range map[string]int{"hcm.test:443": 403, "nowhere.test:443": 404} {
		c := dialRaw(t, off.addr("l"))
		c.send("CONNECT " + target + " HTTP/1.1\r\n\r\n")
		res := c.readResponse("CONNECT")
		io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", target, res.StatusCode, want)
		}
		c.expectEOF()
		c.Conn.Close()
		getOK(t, off.addr("l"))
	}
	if n := off.stat("http.t.downstream_rq_ws_on_non_ws_route"); n != 1 {
		t.Errorf("downstream_rq_ws_on_non_ws_route = %d, want 1", n)
	}
}

// TestConnectProxyPortStripping: ProxyConnectWithPortStripping. With
// strip_any_host_port the virtual host is matched without the port (an
// IPv6 literal keeps its brackets) and the route's formatter sees the
// stripped authority, while the upstream gets the CONNECT with the port
// put back.
func TestConnectProxyPortStripping(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, proxyConnectYAML(u.port(), freePort(t), `"strip_any_host_port": true`))
	for target, stripped := range map[string]string{"strip.test:443": "strip.test", "[::1]:8443": "[::1]"} {
		c := dialRaw(t, h.addr("l"))
		c.send("CONNECT " + target + " HTTP/1.1\r\n\r\n")
		up, line, hdr := acceptConnect(t, u)
		if line != "CONNECT "+target+" HTTP/1.1" || hdr.Get("Host") != target {
			t.Fatalf("upstream got %q, Host %q", line, hdr.Get("Host"))
		}
		if got := hdr.Get("X-Host-In-Hop"); got != stripped {
			t.Errorf("formatter saw %q, want the stripped authority %q", got, stripped)
		}
		up.send("HTTP/1.1 200 OK\r\n\r\n")
		if res := c.readResponse("CONNECT"); res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		echoPair(t, c, up, 4096)
	}
}

// TestConnectProxyH2Upstream: ProxyConnect with an HTTP/2 upstream, from
// an HTTP/1.1 and an HTTP/2 client. The upstream gets a plain CONNECT
// stream (an x/net server refuses one with :scheme or :path) without
// :protocol, with the route's headers; 1 MiB goes each way; a 202 reaches
// both clients as 202, a 400 as an ordinary response.
func TestConnectProxyH2Upstream(t *testing.T) {
	status := 200
	var mu sync.Mutex
	u := startH2ConnectUpstream(t, func(*http.Request) int { mu.Lock(); defer mu.Unlock(); return status })
	h := startHop(t, proxyConnectYAML(freePort(t), u.port, ""))

	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT h2.test:443 HTTP/1.1\r\n\r\nearly")
	res := c.readResponse("CONNECT")
	if res.StatusCode != 200 {
		t.Fatalf("HTTP/1.1 client: %d", res.StatusCode)
	}
	if got := c.readN(5); got != "early" {
		t.Fatalf("echo of the held payload: %q", got)
	}
	echoBoth(t, c.Conn, c.br, 1<<20)

	res2, w := h2Connect(t, h.addr("l"), "h2.test:443")
	if res2.StatusCode != 200 {
		t.Fatalf("HTTP/2 client: %d", res2.StatusCode)
	}
	echoBoth(t, w, res2.Body, 1<<20)
	w.Close()
	if rest, err := io.ReadAll(res2.Body); err != nil || len(rest) != 0 {
		t.Fatalf("after END_STREAM: %q %v", rest, err)
	}

	for _, r := range u.requests() {
		if r.Method != http.MethodConnect || r.Host != "h2.test:443" || r.URL.Path != "" {
			t.Errorf("upstream got %s %q path %q", r.Method, r.Host, r.URL.Path)
		}
		if _, ok := r.Header[":protocol"]; ok {
			t.Error("upstream CONNECT carries :protocol")
		}
		if r.Header.Get("X-Host-In-Hop") != "h2.test:443" || r.Header.Get("X-Request-Id") == "" {
			t.Errorf("upstream headers %v", r.Header)
		}
	}
	if n := len(u.requests()); n != 2 {
		t.Fatalf("upstream got %d CONNECTs, want 2", n)
	}

	mu.Lock()
	status = 202
	mu.Unlock()
	res2, w = h2Connect(t, h.addr("l"), "h2.test:443")
	if res2.StatusCode != 202 {
		t.Fatalf("HTTP/2 client: %d, want 202", res2.StatusCode)
	}
	echoBoth(t, w, res2.Body, 1000)
	c = dialRaw(t, h.addr("l"))
	c.send("CONNECT h2.test:443 HTTP/1.1\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != 202 || res.ContentLength != -1 {
		t.Fatalf("HTTP/1.1 client: %d (content-length %d), want 202 unframed", res.StatusCode, res.ContentLength)
	}
	echoBoth(t, c.Conn, c.br, 1000)

	mu.Lock()
	status = 400
	mu.Unlock()
	res2, _ = h2Connect(t, h.addr("l"), "h2.test:443")
	body, _ := io.ReadAll(res2.Body)
	if res2.StatusCode != 400 || string(body) != "refused by upstream" {
		t.Fatalf("refused: %d %q", res2.StatusCode, body)
	}
	getOK(t, h.addr("l"))
}

// TestConnectProxyManyOverOneH2Connection: 100 CONNECT tunnels at once on
// one HTTP/2 client connection, half to the HTTP/2 upstream (streams on
// one shared upstream connection) and half to an HTTP/1.1 one (a
// connection each); each carries its own bytes both ways.
func TestConnectProxyManyOverOneH2Connection(t *testing.T) {
	const n = 100
	u2 := startH2ConnectUpstream(t, answer(200))
	h1 := startTCPConnectEcho(t)
	h := startHop(t, proxyConnectYAML(h1, u2.port, ""))
	cc := h2cConn(t, h.addr("l"))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			target := "h2.test:443"
			if i%2 == 1 {
				target = "h1.test:443"
			}
			errs <- tunnelRoundTrip(cc, target, 32<<10)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := h.stat("http.t.downstream_cx_http2_total"); got != 1 {
		t.Errorf("downstream_cx_http2_total = %d, want 1 (one client connection)", got)
	}
	if got := h.stat("cluster.up2.upstream_cx_total"); got != 1 {
		t.Errorf("cluster.up2.upstream_cx_total = %d, want 1 (streams share it)", got)
	}
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	if got := h.stat("http.t.downstream_cx_upgrades_total"); got != n {
		t.Errorf("downstream_cx_upgrades_total = %d, want %d", got, n)
	}
}

// startTCPConnectEcho is an HTTP/1.1 CONNECT server: it answers every
// CONNECT with 200 and echoes the tunnel, half-closing after the client.
func startTCPConnectEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
				if n := br.Buffered(); n > 0 {
					b, _ := br.Peek(n)
					c.Write(b)
					br.Discard(n)
				}
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}
