package dataplane_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// startTLSConnectEcho is an HTTP/1.1 CONNECT server over TLS whose ALPN
// offers only http/1.1: every CONNECT gets 200 and its tunnel echoed. The
// request lines it read go to lines.
func startTLSConnectEcho(t *testing.T, pki *tlstest.PKI) (port int, lines <-chan string) {
	t.Helper()
	leaf := pki.Leaf(t, "up.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.Cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				seen <- req.Method + " " + req.RequestURI
				if req.Method != http.MethodConnect {
					io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
				io.Copy(c, br)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port, seen
}

// TestConnectAutoConfigH1: an auto_config cluster over TLS whose upstream's
// ALPN chooses http/1.1 carries a proxied CONNECT, and a tcp_proxy tunnel,
// as "CONNECT <authority> HTTP/1.1", as Envoy's HTTP/1.1 codec does once
// ALPN has chosen it: RoundTrip falls back to the HTTP/1.1 path, where Go's
// transport writes the authority as the target and streams the tunnel, on
// the connection whose ALPN chose it, with one connection per tunnel.
func TestConnectAutoConfigH1(t *testing.T) {
	pki := tlstest.New(t)
	upPort, lines := startTLSConnectEcho(t, pki)
	cluster := fmt.Sprintf(`{"name": "auto", "type": "STATIC", "connect_timeout": "2s",
	  "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
	    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
	    "auto_config": {"http2_protocol_options": {}}}},
	  "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
	    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	    "sni": "up.test", "common_tls_context": {"validation_context": {"trusted_ca": {"filename": %q}}}}},
	  "load_assignment": {"cluster_name": "auto", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}]}]}}`,
		pki.CAFile, upPort)
	tcpPort := freePort(t)
	tcp := fmt.Sprintf(`{"name": "tcp", "address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}},
	  "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
	    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
	    "stat_prefix": "tcp", "cluster": "auto", "tunneling_config": {"hostname": "tcp.test:443"}}}]}]}`, tcpPort)
	h := startHop(t, bootstrapJSON([]string{
		hcmListener("", "", vhost("auto", "auto.test:443", `{"match": {"connect_matcher": {}}, "route": {"cluster": "auto", "upgrade_configs": [{"upgrade_type": "CONNECT"}]}}`), ""),
		tcp,
	}, cluster))

	// Proxied CONNECT from an HTTP/1.1 client.
	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT auto.test:443 HTTP/1.1\r\nHost: auto.test:443\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != 200 {
		t.Fatalf("CONNECT: status %d", res.StatusCode)
	}
	c.send("ping")
	if got := c.readN(4); got != "ping" {
		t.Fatalf("CONNECT tunnel echoed %q", got)
	}
	if got := <-lines; got != "CONNECT auto.test:443" {
		t.Errorf("upstream read %q, want CONNECT auto.test:443", got)
	}

	// tcp_proxy tunnel.
	tc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(defaultTestTimeout))
	io.WriteString(tc, "pong")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("tcp_proxy tunnel echoed %q, %v", buf, err)
	}
	if got := <-lines; got != "CONNECT tcp.test:443" {
		t.Errorf("upstream read %q, want CONNECT tcp.test:443", got)
	}
	if n := h.stat("cluster.auto.upstream_cx_total"); n != 2 {
		t.Errorf("cluster.auto.upstream_cx_total = %d, want 2 (one per tunnel)", n)
	}
}
