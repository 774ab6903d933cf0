package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
	"github.com/hopproxy/hop/pkg/tunnel"
)

const routerURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// blockingRouter stands in for the router under its type URL: /block
// waits until the test releases it (or the request ends), an extended
// CONNECT is answered with what the connection manager made of it, and
// everything else with the route's direct_response by the real router.
type blockingRouter struct {
	entered chan struct{}
	release chan struct{}
}

func (blockingRouter) TypeURLs() []string { return []string{routerURL} }
func (blockingRouter) Terminal() bool     { return true }
func (b blockingRouter) Compile(m proto.Message) (filter.Factory, error) {
	real, err := router.Builder{}.Compile(m)
	if err != nil {
		return nil, err
	}
	return func(next filter.Handler) filter.Handler {
		h := real(next)
		return filter.HandlerFunc(func(s *filter.Stream) {
			if s.ExtendedConnect {
				io.WriteString(s.W, "extended "+s.Req.Method+" "+s.Req.Header.Get("Upgrade"))
				return
			}
			if s.Req.URL.Path == "/block" {
				b.entered <- struct{}{}
				select {
				case <-b.release:
					io.WriteString(s.W, "released")
				case <-s.Req.Context().Done():
				}
				return
			}
			h.Serve(s)
		})
	}, nil
}

// quicFixture is a listener.Manager with QUIC listeners over 127.0.0.1.
type quicFixture struct {
	m      *Manager
	st     *stats.Store
	reg    *filter.Registry
	pki    *tlstest.PKI
	leaf   tlstest.Leaf
	router blockingRouter
	qport  int // the bound port of listener q, once it was bound
}

func newQUICFixture(t *testing.T, drain time.Duration) *quicFixture {
	t.Helper()
	checkNoQUICLeaks(t)
	f := &quicFixture{st: stats.New(), reg: filter.NewRegistry(), pki: tlstest.New(t)}
	f.router = blockingRouter{entered: make(chan struct{}, 4), release: make(chan struct{})}
	if err := f.reg.Register(f.router); err != nil {
		t.Fatal(err)
	}
	f.leaf = f.pki.Leaf(t, "127.0.0.1", "a.test")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.m = New(log, f.st, &hcm.Env{Tunnels: &tunnel.Tracker{}}, drain)
	t.Cleanup(func() {
		// Ends the drains of removed listeners too.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		f.m.Shutdown(ctx)
	})
	return f
}

// chainYAML is a QUIC filter chain whose routes answer body.
func (f *quicFixture) chainYAML(name, serverName, body, hcmExtra string) string {
	match := ""
	if serverName != "" {
		match = fmt.Sprintf("filter_chain_match: {server_names: [%q]}", serverName)
	}
	return fmt.Sprintf(`
- name: %s
  %s
  transport_socket:
    name: envoy.transport_sockets.quic
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
      downstream_tls_context:
        common_tls_context:
          tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: h3
      codec_type: HTTP3
      %s
      route_config:
        virtual_hosts:
        - name: v
          domains: ["*"]
          routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: %q}}}]
      http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": %q}}]
`, name, match, f.leaf.CertFile, f.leaf.KeyFile, hcmExtra, body, routerURL)
}

// listener compiles a QUIC listener named q on 127.0.0.1:port.
func (f *quicFixture) listener(t *testing.T, port int, extra string, chains ...string) *snapshot.Listener {
	t.Helper()
	y := fmt.Sprintf(`
name: q
address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: %d}}
udp_listener_config: {quic_options: {}}
%s
filter_chains:%s`, port, extra, strings.Join(chains, ""))
	l, err := compileListenerYAML(y, f.reg, f.st)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func compileListenerYAML(y string, reg *filter.Registry, st *stats.Store) (*snapshot.Listener, error) {
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		return nil, err
	}
	lp := &listenerv3.Listener{}
	if err := protojson.Unmarshal(j, lp); err != nil {
		return nil, err
	}
	return snapshot.CompileListener(lp, reg, st, nil)
}

func (f *quicFixture) port(t *testing.T) int {
	t.Helper()
	a, ok := f.m.Addr("q").(*net.UDPAddr)
	if !ok || a.Port == 0 {
		t.Fatalf("Addr(q) = %v, want a bound UDP address", f.m.Addr("q"))
	}
	return a.Port
}

// reconcile applies ls and remembers the port of listener q.
func (f *quicFixture) reconcile(t *testing.T, ls ...*snapshot.Listener) {
	t.Helper()
	if err := f.m.Reconcile(ls); err != nil {
		t.Fatal(err)
	}
	if f.m.Addr("q") != nil {
		f.qport = f.port(t)
	}
}

func (f *quicFixture) stat(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := f.st.Get(name)
	if !ok {
		t.Fatalf("stat %q does not exist", name)
	}
	return v
}

// client is an HTTP/3 client on one QUIC connection to the listener.
type client struct {
	conn *quic.Conn
	cc   *http3.ClientConn
	base string
}

// dial connects to the listener with SNI serverName.
func (f *quicFixture) dial(t *testing.T, ctx context.Context, serverName string) (*client, error) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", f.qport)
	tc := &tls.Config{RootCAs: f.pki.Pool, NextProtos: []string{http3.NextProtoH3}, ServerName: serverName}
	c, err := quic.DialAddr(ctx, addr, tc, &quic.Config{HandshakeIdleTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	tr := &http3.Transport{}
	return &client{conn: c, cc: tr.NewClientConn(c), base: "https://" + addr}, nil
}

func (c *client) get(ctx context.Context, path string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

func mustGet(t *testing.T, ctx context.Context, c *client, path, want string) {
	t.Helper()
	got, err := c.get(ctx, path)
	if err != nil || got != want {
		t.Fatalf("GET %s = %q, %v; want %q", path, got, err, want)
	}
}

// waitClosed waits for the server to close c and returns the error code.
func waitClosed(t *testing.T, ctx context.Context, c *client) quic.ApplicationErrorCode {
	t.Helper()
	select {
	case <-c.conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("the connection was not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(c.conn.Context()); !errors.As(err, &ae) {
		t.Fatalf("connection ended with %v, want a CONNECTION_CLOSE", err)
	}
	return ae.ErrorCode
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkNoQUICLeaks fails the test if goroutines of quic-go or of this
// package outlive it (it runs after every other cleanup).
func checkNoQUICLeaks(t *testing.T) {
	leakcheck.Check(t, "quic-go/quic-go", "quicAcceptLoop", "shutdownQUIC", "hcm.(*H3Server)", "hcm.(*h3Conn)")
}

// TestQUICListenerServes: a UDP listener with quic_options and a QUIC
// transport socket serves HTTP/3 through its HCM (direct_response), with
// the listener's and the HCM's stats.
func TestQUICListenerServes(t *testing.T) {
	f := newQUICFixture(t, time.Second)
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "hello", "")))
	ctx := testCtx(t)
	c, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c, "/", "hello")
	mustGet(t, ctx, c, "/again", "hello")
	if c.conn.ConnectionState().TLS.NegotiatedProtocol != "h3" {
		t.Errorf("ALPN %q", c.conn.ConnectionState().TLS.NegotiatedProtocol)
	}
	name := "listener.127.0.0.1_0" // the configured address names the stats
	for stat, want := range map[string]int64{
		name + ".downstream_cx_total":             1,
		name + ".downstream_cx_active":            1,
		"http.h3.downstream_cx_http3_total":       1,
		"http.h3.downstream_rq_http3_total":       2,
		"http.h3.rq_direct_response":              2,
		"http3.quic_version_rfc_v1":               1,
		"listener_manager.listener_added":         1,
		"listener_manager.total_listeners_active": 1,
	} {
		if v := f.stat(t, stat); v != want {
			t.Errorf("%s = %d, want %d", stat, v, want)
		}
	}
	if got := f.m.Names()["q"]; got != fmt.Sprintf("127.0.0.1:%d", f.port(t)) {
		t.Errorf("Names()[q] = %q", got)
	}
}

// TestQUICListenerExtendedConnect: an RFC 9220 extended CONNECT through
// the listener reaches the connection manager (turned into GET + Upgrade)
// when allow_extended_connect is set, and resets its stream otherwise
// (stream_error_on_invalid_http_message; the connection goes on).
func TestQUICListenerExtendedConnect(t *testing.T) {
	for _, tc := range []struct {
		name, hcm string
		allowed   bool
	}{
		{"allowed", "http3_protocol_options: {allow_extended_connect: true}", true},
		{"refused", "stream_error_on_invalid_http_message: true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newQUICFixture(t, time.Second)
			f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "hello", tc.hcm+"\n      upgrade_configs: [{upgrade_type: websocket}]")))
			ctx := testCtx(t)
			c, err := f.dial(t, ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, c.base+"/ws", nil)
			req.Proto = "websocket"
			resp, err := c.cc.RoundTrip(req)
			if !tc.allowed {
				var se *quic.StreamError
				if err == nil {
					resp.Body.Close()
					t.Fatalf("answered %d", resp.StatusCode)
				} else if !errors.As(err, &se) || !se.Remote {
					t.Fatalf("error %v, want a stream reset by hop", err)
				}
				mustGet(t, ctx, c, "/", "hello")
				if v := f.stat(t, "http3.tx_reset"); v != 1 {
					t.Errorf("http3.tx_reset = %d, want 1", v)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "extended GET websocket" {
				t.Errorf("the handler answered %q", b)
			}
		})
	}
}

// TestQUICListenerSNI: the chain is chosen on the ClientHello's SNI (with
// its certificate); a ClientHello no chain matches fails the handshake
// and counts no_filter_chain_match.
func TestQUICListenerSNI(t *testing.T) {
	f := newQUICFixture(t, time.Second)
	b := f.pki.Leaf(t, "b.test")
	chainB := strings.NewReplacer(f.leaf.CertFile, b.CertFile, f.leaf.KeyFile, b.KeyFile).Replace(f.chainYAML("b", "b.test", "from b", ""))
	l := f.listener(t, 0, "", f.chainYAML("a", "a.test", "from a", ""), chainB)
	f.reconcile(t, l)
	ctx := testCtx(t)
	for sni, want := range map[string]string{"a.test": "from a", "b.test": "from b"} {
		c, err := f.dial(t, ctx, sni)
		if err != nil {
			t.Fatalf("%s: %v", sni, err)
		}
		mustGet(t, ctx, c, "/", want)
		if cn := c.conn.ConnectionState().TLS.PeerCertificates[0].Subject.CommonName; cn != sni && !(sni == "a.test" && cn == "127.0.0.1") {
			t.Errorf("%s: served the certificate of %q", sni, cn)
		}
	}
	if _, err := f.dial(t, ctx, "c.test"); err == nil {
		t.Fatal("a handshake no chain matches succeeded")
	}
	if v := f.stat(t, "listener.127.0.0.1_0.no_filter_chain_match"); v != 1 {
		t.Errorf("no_filter_chain_match = %d, want 1", v)
	}
}

// TestQUICListenerUpdate: an update keeps the UDP socket and the
// connections. A route change reaches the open connection; a change of
// the server settings moves new connections to a new server while the old
// one sends GOAWAY and closes its idle connection (H3_NO_ERROR).
func TestQUICListenerUpdate(t *testing.T) {
	f := newQUICFixture(t, 5*time.Second)
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "one", "")))
	port := f.port(t)
	ctx := testCtx(t)
	c, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c, "/", "one")

	// The port was 0: the kept listener is found by name and keeps its
	// socket, whatever port a new bind would pick.
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "two", "")))
	if p := f.port(t); p != port {
		t.Fatalf("port %d after the update, was %d", p, port)
	}
	mustGet(t, ctx, c, "/", "two")
	if v := f.stat(t, "listener_manager.listener_modified"); v != 1 {
		t.Errorf("listener_modified = %d, want 1", v)
	}

	// A new idle timeout is a new server.
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "three", "common_http_protocol_options: {idle_timeout: 600s}")))
	if code := waitClosed(t, ctx, c); code != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		t.Errorf("old connection closed with %#x, want H3_NO_ERROR", code)
	}
	c2, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c2, "/", "three")
	name := "listener.127.0.0.1_0"
	if tot, act := f.stat(t, name+".downstream_cx_total"), f.stat(t, name+".downstream_cx_active"); tot != 2 || act != 1 {
		t.Errorf("downstream_cx_total %d, _active %d; want 2, 1", tot, act)
	}
}
