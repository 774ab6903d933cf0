package dataplane_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// termYAML: CONNECT to foo.test:443 is terminated into the cluster on
// 127.0.0.1:port with the given connect_config; a POST to foo.test:443/ too
// (allow_post). A CONNECT to px.test:443 is proxied to the same port.
// listenAddr is the listener's address ("" for 127.0.0.1); routerExtra
// goes into the Router config.
func termYAML(port int, connectConfig, listenAddr, routerExtra string) string {
	cc := fmt.Sprintf(`"upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": %s}]`, connectConfig)
	vh := fmt.Sprintf(`{"name": "foo", "domains": ["foo.test:443"], "routes": [
	 {"match": {"connect_matcher": {}}, "route": {"cluster": "term", %s}},
	 {"match": {"prefix": "/"}, "route": {"cluster": "term", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {"allow_post": true}}]}}]},
	 {"name": "px", "domains": ["px.test:443"], "routes": [
	 {"match": {"connect_matcher": {}}, "route": {"cluster": "term", "upgrade_configs": [{"upgrade_type": "CONNECT"}]}}]}`, cc)
	return bootstrapJSON([]string{hcmListener(listenAddr, "", vh, routerExtra)}, connectCluster("term", port, false))
}

// tunnelModes are the two ways a CONNECT reaches the raw upstream of
// termYAML: terminated (the upstream sees the tunnel bytes only) and
// proxied (it answers a CONNECT first).
var tunnelModes = []struct {
	name, authority string
	accept          func(t *testing.T, u *rawUpstream) *rawConn
}{
	{"terminated", "foo.test:443", func(t *testing.T, u *rawUpstream) *rawConn { return u.accept(t) }},
	{"proxied", "px.test:443", func(t *testing.T, u *rawUpstream) *rawConn {
		up, line, _ := acceptConnect(t, u)
		if line != "CONNECT px.test:443 HTTP/1.1" {
			t.Fatalf("request line %q", line)
		}
		up.send("HTTP/1.1 200 OK\r\n\r\n")
		return up
	}},
}

// proxyHeaderFor is the PROXY protocol header of a connection from client
// to server, written here from the specification (haproxy's
// proxy-protocol.txt), as Envoy writes it.
func proxyHeaderFor(version int, client, server net.Addr) []byte {
	src := client.(*net.TCPAddr).AddrPort()
	dst := server.(*net.TCPAddr).AddrPort()
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if version == 1 {
		fam := "TCP4"
		if sa.Is6() {
			fam = "TCP6"
		}
		return []byte(fmt.Sprintf("PROXY %s %s %s %d %d\r\n", fam, sa, da, src.Port(), dst.Port()))
	}
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21")
	if sa.Is4() {
		b = append(b, 0x11, 0, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(append(b, s4[:]...), d4[:]...)
	} else {
		b = append(b, 0x21, 0, 36)
		s6, d6 := sa.As16(), da.As16()
		b = append(append(b, s6[:]...), d6[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// TestConnectTerminateProxyProtocol: SendsProxyProtoHeadersv1/v2. With
// proxy_protocol_config the upstream connection starts with a PROXY header
// for the downstream connection (client address as source, hop's
// listener address as destination), before any payload, the early bytes
// included; then the tunnel carries the payload as usual.
func TestConnectTerminateProxyProtocol(t *testing.T) {
	for _, family := range []string{"127.0.0.1", "::1"} {
		for _, version := range []int{1, 2} {
			t.Run(fmt.Sprintf("v%d %s", version, family), func(t *testing.T) {
				if family == "::1" {
					ln, err := net.Listen("tcp", "[::1]:0")
					if err != nil {
						t.Skip("no IPv6 loopback")
					}
					ln.Close()
				}
				u := startRawUpstream(t)
				h := startHop(t, termYAML(u.port(), fmt.Sprintf(`{"proxy_protocol_config": {"version": "V%d"}}`, version), family, ""))
				c := dialRaw(t, h.addr("l"))
				c.send("CONNECT foo.test:443 HTTP/1.1\r\n\r\nearly")
				up := u.accept(t)
				want := proxyHeaderFor(version, c.LocalAddr(), c.RemoteAddr())
				if version == 2 && len(want) != map[string]int{"127.0.0.1": 28, "::1": 52}[family] {
					t.Fatalf("the test's v2 header is %d bytes, not Envoy's", len(want))
				}
				if got := up.readN(len(want)); got != string(want) {
					t.Fatalf("upstream got %q\nwant %q", got, want)
				}
				if got := up.readN(5); got != "early" {
					t.Fatalf("after the header: %q", got)
				}
				if res := c.readResponse("CONNECT"); res.StatusCode != 200 {
					t.Fatalf("status %d", res.StatusCode)
				}
				echoPair(t, c, up, 64<<10)
			})
		}
	}
}

// TestConnectRejectEarlyData: EarlyConnectDataRejectedWithOverride. With
// the router's reject_connect_request_early_data a CONNECT whose client
// sent payload before the 200 gets 400 and the upstream connection is
// closed without a byte; a client that waits for the 200 gets its tunnel.
// Over HTTP/1.1 and HTTP/2; proxied CONNECTs too (the upstream's 2xx is
// the response there). Bytes count as early when hop has them by the time
// the response would start.
func TestConnectRejectEarlyData(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, termYAML(u.port(), `{}`, "", `, "reject_connect_request_early_data": true`))

	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT foo.test:443 HTTP/1.1\r\n\r\nearly")
	res := c.readResponse("CONNECT")
	io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("HTTP/1.1 with early data: %d, want 400", res.StatusCode)
	}
	c.expectEOF()
	c.Conn.Close()
	up := u.accept(t)
	up.expectEOF()
	if up.br.Buffered() != 0 {
		t.Fatal("upstream received the early data")
	}

	// Proxied: the upstream's 200 is the response; the early bytes are
	// still refused.
	c = dialRaw(t, h.addr("l"))
	c.send("CONNECT px.test:443 HTTP/1.1\r\n\r\nearly")
	up, _, _ = acceptConnect(t, u)
	up.send("HTTP/1.1 200 OK\r\n\r\n")
	res = c.readResponse("CONNECT")
	io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("proxied, with early data: %d, want 400", res.StatusCode)
	}
	c.expectEOF()
	c.Conn.Close()
	up.expectEOF()
	if up.br.Buffered() != 0 {
		t.Fatal("upstream received the early data")
	}

	// HTTP/2, proxied: the upstream answers once hop has surely read the
	// DATA (the PING after it came back). A terminated CONNECT answers as
	// soon as its connect returns, which races with a DATA frame read
	// meanwhile, in hop as in Envoy.
	h2 := dialH2(t, h.addr("l"))
	h2.connect(1, "px.test:443", "early", false)
	h2.sync()
	up, _, _ = acceptConnect(t, u)
	up.send("HTTP/1.1 200 OK\r\n\r\n")
	if ev := h2.response(1); ev.status != http.StatusBadRequest {
		t.Fatalf("HTTP/2 with early data: %d, want 400", ev.status)
	}
	up.expectEOF()
	if up.br.Buffered() != 0 {
		t.Fatal("upstream received the early data")
	}

	// Waiting for the 200 is fine, on both.
	c = dialRaw(t, h.addr("l"))
	c.send("CONNECT foo.test:443 HTTP/1.1\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != 200 {
		t.Fatalf("HTTP/1.1 without early data: %d", res.StatusCode)
	}
	up = u.accept(t)
	echoPair(t, c, up, 4096)

	h2.connect(3, "foo.test:443", "", false)
	if ev := h2.response(3); ev.status != 200 {
		t.Fatalf("HTTP/2 without early data: %d", ev.status)
	}
	up = u.accept(t)
	h2.data(3, false, "late")
	if got := up.readN(4); got != "late" {
		t.Fatalf("upstream got %q", got)
	}
	h.waitStat("http.t.downstream_rq_4xx", 3)
}

// TestConnectHTTP2HalfClose: §3.4 on an HTTP/2 stream, as the frames show
// it, for terminated and proxied CONNECTs. BuggyHeaders: a CONNECT that
// ends with its headers half-closes the upstream right after the tunnel
// opens, and the upstream's answer and FIN end the stream cleanly. A
// client END_STREAM reaches the upstream as FIN while the upstream can
// still send; its FIN ends the stream with END_STREAM and no reset. An
// upstream that ends first ends the response with END_STREAM.
func TestConnectHTTP2HalfClose(t *testing.T) {
	for _, mode := range tunnelModes {
		t.Run(mode.name, func(t *testing.T) {
			u := startRawUpstream(t)
			h := startHop(t, termYAML(u.port(), `{}`, "", ""))
			h2 := dialH2(t, h.addr("l"))

			t.Run("headers only", func(t *testing.T) {
				h2.connect(1, mode.authority, "", true)
				up := mode.accept(t, u)
				if ev := h2.response(1); ev.status != 200 || ev.endStream {
					t.Fatalf("response %d end=%v", ev.status, ev.endStream)
				}
				up.expectEOF() // the FIN came right away
				up.send("bye")
				up.Conn.(*net.TCPConn).CloseWrite()
				if body, end := h2.readBody(1, -1); body != "bye" || end != "end" {
					t.Fatalf("client got %q, %s", body, end)
				}
			})
			t.Run("client first", func(t *testing.T) {
				h2.connect(3, mode.authority, "", false)
				up := mode.accept(t, u)
				h2.response(3)
				h2.data(3, true, "hello")
				if got := up.readN(5); got != "hello" {
					t.Fatalf("upstream got %q", got)
				}
				up.expectEOF()
				up.send("there!")
				up.Conn.(*net.TCPConn).CloseWrite()
				if body, end := h2.readBody(3, -1); body != "there!" || end != "end" {
					t.Fatalf("client got %q, %s", body, end)
				}
			})
			t.Run("upstream first", func(t *testing.T) {
				h2.connect(5, mode.authority, "", false)
				up := mode.accept(t, u)
				h2.response(5)
				up.send("gone")
				up.Conn.Close()
				if body, end := h2.readBody(5, -1); body != "gone" || end != "end" {
					t.Fatalf("client got %q, %s", body, end)
				}
			})
			// The connection still serves.
			h2.headers(7, true, ":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
			if ev := h2.response(7); ev.status != 200 {
				t.Fatalf("GET after the tunnels: %d", ev.status)
			}
			h.waitStat("http.t.downstream_cx_upgrades_active", 0)
		})
	}
}

// TestConnectHTTP1HalfClose: for terminated and proxied CONNECTs, an
// HTTP/1.1 client's FIN reaches the upstream, which can still answer; the
// upstream's FIN ends the tunnel and the client's connection (Envoy
// closes it; hop passes the FIN on and closes once the client has too).
// Either way the client reads everything, then EOF.
func TestConnectHTTP1HalfClose(t *testing.T) {
	for _, mode := range tunnelModes {
		t.Run(mode.name, func(t *testing.T) {
			u := startRawUpstream(t)
			h := startHop(t, termYAML(u.port(), `{}`, "", ""))
			for _, first := range []string{"client", "upstream"} {
				t.Run(first, func(t *testing.T) {
					c := dialRaw(t, h.addr("l"))
					c.send("CONNECT " + mode.authority + " HTTP/1.1\r\n\r\n")
					up := mode.accept(t, u)
					c.readResponse("CONNECT")
					if first == "client" {
						c.send("hello")
						c.Conn.(*net.TCPConn).CloseWrite()
						if got := up.readN(5); got != "hello" {
							t.Fatalf("upstream got %q", got)
						}
						up.expectEOF()
					}
					up.send("there!")
					up.Conn.Close()
					if got := c.readN(6); got != "there!" {
						t.Fatalf("client got %q", got)
					}
					c.expectEOF()
					c.Conn.Close()
				})
			}
			h.waitStat("http.t.downstream_cx_upgrades_active", 0)
			h.waitStat("cluster.term.upstream_cx_active", 0)
			if n := h.stat("cluster.term.upstream_cx_total"); n != 2 {
				t.Errorf("cluster.term.upstream_cx_total = %d, want 2", n)
			}
		})
	}
}

// TestPostH1Terminated: with allow_post an HTTP/1.1 POST is terminated too
// (BasicAllowPost over HTTP/1.1): its body, de-framed from Content-Length
// or chunked encoding, is what the upstream gets, and the end of the body
// is the upstream's FIN; the upstream's bytes are the chunked body of a
// 200, which ends with the upstream's FIN. The connection then serves
// the next request.
func TestPostH1Terminated(t *testing.T) {
	h := startHop(t, connectYAML(startTCPEcho(t), freePort(t)))
	c := dialRaw(t, h.addr("l"))
	for _, req := range []string{
		"POST / HTTP/1.1\r\nHost: foo.test:443\r\nContent-Length: 11\r\n\r\nhello world",
		"POST / HTTP/1.1\r\nHost: foo.test:443\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	} {
		c.send(req)
		res := c.readResponse("POST")
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != 200 || string(body) != "hello world" {
			t.Fatalf("%q: %d %q %v", strings.SplitN(req, "\r\n", 3)[2], res.StatusCode, body, err)
		}
		if res.ContentLength != -1 || len(res.TransferEncoding) == 0 {
			t.Errorf("response framing: content-length %d, transfer-encoding %v", res.ContentLength, res.TransferEncoding)
		}
	}
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res := c.readResponse("GET")
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("next request: %d %q", res.StatusCode, body)
	}
	h.waitStat("cluster.echo.upstream_cx_active", 0)
	if n := h.stat("cluster.echo.upstream_cx_total"); n != 2 {
		t.Errorf("cluster.echo.upstream_cx_total = %d, want 2", n)
	}
	if n := h.stat("http.t.downstream_cx_upgrades_total"); n != 0 {
		t.Errorf("downstream_cx_upgrades_total = %d, want 0 (a POST is no upgrade)", n)
	}
}
