package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	filterrouter "github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
	"github.com/hopproxy/hop/pkg/tunnel"
)

// hcmFilter is an http_connection_manager answering 200 "ok" with the
// given codec_type.
func hcmFilter(codec string) string {
	return fmt.Sprintf(`filters: [{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
  stat_prefix: t, codec_type: %s,
  route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: ok}}}]}]},
  http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]`, codec)
}

// tlsSocket is a DownstreamTlsContext transport socket.
func tlsSocket(leaf tlstest.Leaf, alpn string) string {
	return fmt.Sprintf(`transport_socket: {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext,
  common_tls_context: {alpn_protocols: [%s], tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]}}}`, alpn, leaf.CertFile, leaf.KeyFile)
}

type testListener struct {
	m    *Manager
	st   *stats.Store
	addr string
}

func (tl *testListener) stat(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := tl.st.Get(name)
	if !ok {
		t.Fatalf("no stat %s", name)
	}
	return v
}

// startListener binds a listener "l" on 127.0.0.1 from the YAML of its
// remaining fields.
func startListener(t *testing.T, rest string) *testListener {
	t.Helper()
	checkNoLeaks(t)
	j, err := yaml.YAMLToJSON([]byte("name: l\naddress: {socket_address: {address: 127.0.0.1, port_value: 0}}\n" + rest))
	if err != nil {
		t.Fatal(err)
	}
	lp := &listenerv3.Listener{}
	if err := protojson.Unmarshal(j, lp); err != nil {
		t.Fatal(err)
	}
	reg := filter.NewRegistry()
	reg.Register(filterrouter.Builder{})
	st := stats.New()
	l, err := snapshot.CompileListener(lp, reg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New(slog.New(slog.DiscardHandler), st, &hcm.Env{Tunnels: &tunnel.Tracker{}}, time.Second)
	if err := m.Reconcile([]*snapshot.Listener{l}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
	return &testListener{m: m, st: st, addr: m.Addr("l").String()}
}

func fetch(t *testing.T, rt http.RoundTripper, url string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET %s: %d %q", url, res.StatusCode, body)
	}
	return res
}

func TestTLSChains(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "127.0.0.1")
	client := func(protos ...string) *tls.Config {
		return &tls.Config{RootCAs: pki.Pool, NextProtos: protos}
	}
	t.Run("ALPN h2 and http/1.1 on AUTO", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "h2, http/1.1")+", "+hcmFilter("AUTO")+"}]")
		h2 := &http2.Transport{TLSClientConfig: client("h2")}
		if res := fetch(t, h2, "https://"+tl.addr+"/"); res.ProtoMajor != 2 || res.TLS == nil {
			t.Errorf("h2 client: %s", res.Proto)
		}
		h1 := &http.Transport{TLSClientConfig: client("http/1.1")}
		if res := fetch(t, h1, "https://"+tl.addr+"/"); res.ProtoMajor != 1 {
			t.Errorf("http/1.1 client: %s", res.Proto)
		}
		h2.CloseIdleConnections()
		h1.CloseIdleConnections()
		for name, want := range map[string]int64{
			"listener.127.0.0.1_0.ssl.handshake": 2, "listener.127.0.0.1_0.ssl.no_certificate": 2, "listener.127.0.0.1_0.ssl.connection_error": 0,
			"http.t.downstream_cx_ssl_total": 2, "http.t.downstream_cx_http2_total": 1, "http.t.downstream_cx_http1_total": 1,
		} {
			if got := tl.stat(t, name); got != want {
				t.Errorf("%s = %d, want %d", name, got, want)
			}
		}
	})
	t.Run("no ALPN configured is HTTP/1.1 on AUTO", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "")+", "+hcmFilter("AUTO")+"}]")
		c := tlsDial(t, tl.addr, client("h2", "http/1.1"))
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Fatalf("ALPN %q without alpn_protocols", p)
		}
		expectHTTP1OK(t, c)
	})
	t.Run("HTTP2 codec whatever ALPN says", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "http/1.1")+", "+hcmFilter("HTTP2")+"}]")
		c := tlsDial(t, tl.addr, client("http/1.1"))
		c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		if f, err := fr.ReadFrame(); err != nil || f.Header().Type != http2.FrameSettings {
			t.Fatalf("want the server's SETTINGS, got %v %v", f, err)
		}
	})
	t.Run("HTTP1 codec whatever ALPN says", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "h2")+", "+hcmFilter("HTTP1")+"}]")
		c := tlsDial(t, tl.addr, client("h2"))
		if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN %q", p)
		}
		expectHTTP1OK(t, c)
	})
	t.Run("handshake failure", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "h2")+", "+hcmFilter("AUTO")+"}]")
		c := dialTCP(t, tl.addr)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		io.ReadAll(c)
		waitStat(t, tl, "listener.127.0.0.1_0.downstream_cx_active", 0)
		if got := tl.stat(t, "listener.127.0.0.1_0.ssl.connection_error"); got != 1 {
			t.Errorf("ssl.connection_error = %d", got)
		}
		if got := tl.stat(t, "http.t.downstream_cx_total"); got != 0 {
			t.Errorf("a failed handshake reached the connection manager")
		}
	})
	t.Run("transport_socket_connect_timeout", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{transport_socket_connect_timeout: 0.2s, "+tlsSocket(leaf, "h2")+", "+hcmFilter("AUTO")+"}]")
		c := dialTCP(t, tl.addr)
		if err := closedByPeer(c); err != nil {
			t.Fatalf("not closed: %v", err)
		}
		waitStat(t, tl, "listener.127.0.0.1_0.downstream_cx_active", 0)
		if got := tl.stat(t, "listener.127.0.0.1_0.downstream_cx_transport_socket_connect_timeout"); got != 1 {
			t.Errorf("downstream_cx_transport_socket_connect_timeout = %d", got)
		}
	})
	t.Run("tls_inspector picks TLS or cleartext on one port", func(t *testing.T) {
		tl := startListener(t, `listener_filters: [{name: tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
filter_chains:
- {filter_chain_match: {transport_protocol: tls}, `+tlsSocket(leaf, "h2, http/1.1")+", "+hcmFilter("AUTO")+`}
- {filter_chain_match: {transport_protocol: raw_buffer}, `+hcmFilter("AUTO")+`}`)
		h2 := &http2.Transport{TLSClientConfig: client("h2")}
		if res := fetch(t, h2, "https://"+tl.addr+"/"); res.ProtoMajor != 2 {
			t.Errorf("TLS h2 client: %s", res.Proto)
		}
		h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		if res := fetch(t, h2c, "http://"+tl.addr+"/"); res.ProtoMajor != 2 {
			t.Errorf("h2c client: %s", res.Proto)
		}
		h2.CloseIdleConnections()
		h2c.CloseIdleConnections()
		if got := tl.stat(t, "http.t.downstream_cx_ssl_total"); got != 1 {
			t.Errorf("downstream_cx_ssl_total = %d", got)
		}
	})
	t.Run("Shutdown cuts a pending handshake", func(t *testing.T) {
		tl := startListener(t, "filter_chains: [{"+tlsSocket(leaf, "h2")+", "+hcmFilter("AUTO")+"}]")
		c := dialTCP(t, tl.addr)
		c.Write([]byte{0x16}) // the handshake has begun
		waitStat(t, tl, "listener.127.0.0.1_0.downstream_cx_active", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		tl.m.Shutdown(ctx)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Shutdown took %v: the handshake held it", d)
		}
		if err := closedByPeer(c); err != nil {
			t.Errorf("not closed: %v", err)
		}
	})
}

func tlsDial(t *testing.T, addr string, conf *tls.Config) *tls.Conn {
	t.Helper()
	d := &tls.Dialer{Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn)
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func expectHTTP1OK(t *testing.T, c net.Conn) {
	t.Helper()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 10))
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("HTTP/1.1 over TLS: %d %q", res.StatusCode, body)
	}
}

// waitStat waits for a gauge the server updates on its own goroutine.
func waitStat(t *testing.T, tl *testListener, name string, want int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for tl.stat(t, name) != want {
		select {
		case <-ctx.Done():
			t.Fatalf("%s = %d, want %d", name, tl.stat(t, name), want)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// checkNoLeaks fails the test if goroutines of hop or of x/net's HTTP/2
// server outlive it (it runs after every other cleanup).
func checkNoLeaks(t *testing.T) {
	leakcheck.Check(t, "hopproxy/hop/pkg/", "x/net/http2.(*serverConn)")
}

// closedByPeer reads c to its end: nil once the peer closed it (EOF, or a
// reset when the peer closed with bytes of ours unread), the error when the
// read timed out or failed otherwise.
func closedByPeer(c net.Conn) error {
	_, err := io.ReadAll(c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}
