package dataplane_test

import (
	"testing"

	"golang.org/x/net/http2"
)

// TestConnectBytestreamKeepsPath: an HTTP/2 extended CONNECT with
// `:protocol bytestream` stays a CONNECT (ExtendedConnectWithBytestreamProtocol)
// and its :path takes part in route matching (§2.3): bs.test:443 routes
// only /bytes, so it is proxied, as a plain CONNECT, while a plain CONNECT
// to bs.test:443 (no :path) finds no route.
func TestConnectBytestreamKeepsPath(t *testing.T) {
	u := startRawUpstream(t)
	h := startHop(t, proxyConnectYAML(u.port(), freePort(t), ""))
	c := dialH2(t, h.addr("l"))
	c.headers(1, false, ":method", "CONNECT", ":protocol", "bytestream", ":scheme", "http", ":path", "/bytes", ":authority", "bs.test:443")
	up, line, hdr := acceptConnect(t, u)
	if line != "CONNECT bs.test:443 HTTP/1.1" {
		t.Fatalf("request line %q", line)
	}
	if _, ok := hdr[":protocol"]; ok {
		t.Error(":protocol reached the upstream")
	}
	up.send("HTTP/1.1 200 OK\r\n\r\n")
	if ev := c.response(1); ev.status != 200 {
		t.Fatalf("status %d", ev.status)
	}
	c.data(1, false, "ping")
	if got := up.readN(4); got != "ping" {
		t.Fatalf("upstream got %q", got)
	}
	up.send("pong")
	if got, _ := c.readBody(1, 4); got != "pong" {
		t.Fatalf("client got %q", got)
	}
	c.connect(3, "bs.test:443", "", true)
	if ev := c.response(3); ev.status != 404 {
		t.Fatalf("plain CONNECT to bs.test: %d, want 404", ev.status)
	}
}

// TestConnectBadInputsH2: each malformed or refused CONNECT over HTTP/2 is
// answered as Envoy does, and hop serves on: a CONNECT with :path or
// :scheme but no :protocol, or without :authority, is an HTTP messaging
// error that closes the connection (GOAWAY PROTOCOL_ERROR) by default; a
// header-only CONNECT nothing routes is a 404 on a connection that stays
// open (ConnectStreamRejection); a CONNECT to a route that does not enable
// it is a 403 and the connection drains. After each, a new connection
// gets a proxied CONNECT through.
func TestConnectBadInputsH2(t *testing.T) {
	h := startHop(t, proxyConnectYAML(startTCPConnectEcho(t), freePort(t), ""))
	for name, kv := range map[string][]string{
		"path without protocol":   {":method", "CONNECT", ":authority", "foo.test:443", ":path", "/"},
		"scheme without protocol": {":method", "CONNECT", ":authority", "foo.test:443", ":scheme", "http"},
		"no authority":            {":method", "CONNECT"},
	} {
		t.Run(name, func(t *testing.T) {
			c := dialH2(t, h.addr("l"))
			c.headers(1, false, kv...)
			for {
				ev := c.next()
				if ev.kind == "headers" {
					t.Fatalf("answered %d", ev.status)
				}
				if ev.kind == "goaway" && ev.code != http2.ErrCodeProtocol {
					t.Fatalf("GOAWAY %v", ev.code)
				}
				if ev.kind == "eof" {
					break
				}
			}
			tunnelOK(t, h.addr("l"))
		})
	}
	t.Run("unrouted, header-only", func(t *testing.T) {
		c := dialH2(t, h.addr("l"))
		c.connect(1, "nowhere.test:443", "", true)
		if ev := c.response(1); ev.status != 404 {
			t.Fatalf("status %d, want 404", ev.status)
		}
		c.headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "x", ":path", "/")
		if ev := c.response(3); ev.status != 200 {
			t.Fatalf("same connection afterwards: %d", ev.status)
		}
	})
	t.Run("route without CONNECT", func(t *testing.T) {
		c := dialH2(t, h.addr("l"))
		c.connect(1, "hcm.test:443", "", false)
		status, goaway := 0, false
		for status == 0 || !goaway {
			switch ev := c.next(); ev.kind {
			case "headers":
				status = ev.status
			case "goaway":
				goaway = ev.code == http2.ErrCodeNo
			case "eof":
				t.Fatalf("closed: status %d, GOAWAY(NO_ERROR) %v", status, goaway)
			}
		}
		if status != 403 {
			t.Fatalf("status %d, want 403", status)
		}
		tunnelOK(t, h.addr("l"))
	})
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
}

// tunnelOK checks that a new HTTP/2 connection to addr still gets a
// CONNECT through to the HTTP/1.1 CONNECT echo behind h1.test:443.
func tunnelOK(t *testing.T, addr string) {
	t.Helper()
	if err := tunnelRoundTrip(h2cConn(t, addr), "h1.test:443", 1000); err != nil {
		t.Fatal(err)
	}
}
