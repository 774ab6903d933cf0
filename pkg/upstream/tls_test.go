package upstream

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// tlsSocket is an envoy.transport_sockets.tls UpstreamTlsContext trusting
// caFile, sending sni, with optional alpn_protocols.
func tlsSocket(t *testing.T, caFile, sni string, alpn ...string) *corev3.TransportSocket {
	t.Helper()
	utc := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: alpn,
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
		}},
	}}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, utc)},
	}
}

// tlsServer is a loopback HTTPS server whose ALPN list is nextProtos;
// "h2" is served by x/net's server. It records what clients offered.
type tlsServer struct {
	addr     string
	accepted atomic.Int64

	mu     sync.Mutex
	snis   []string   // ServerName of each ClientHello
	offers [][]string // SupportedProtos of each ClientHello
}

func newTLSServer(t *testing.T, leaf tlstest.Leaf, nextProtos []string, h http.Handler) *tlsServer {
	t.Helper()
	return newTLSServerFunc(t, leaf, func(int) []string { return nextProtos }, h)
}

// newTLSServerFunc is newTLSServer whose ALPN list for the n-th handshake
// (from 1) is alpnFor(n).
func newTLSServerFunc(t *testing.T, leaf tlstest.Leaf, alpnFor func(n int) []string, h http.Handler) *tlsServer {
	t.Helper()
	ts := &tlsServer{}
	conf := &tls.Config{Certificates: []tls.Certificate{leaf.Cert}}
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		ts.mu.Lock()
		ts.snis = append(ts.snis, hello.ServerName)
		ts.offers = append(ts.offers, hello.SupportedProtos)
		n := len(ts.snis)
		ts.mu.Unlock()
		c := &tls.Config{Certificates: conf.Certificates, NextProtos: alpnFor(n)}
		return c, nil
	}
	h2srv := &http2.Server{}
	srv := &http.Server{
		Handler:   h,
		TLSConfig: conf,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			"h2": func(s *http.Server, c *tls.Conn, h http.Handler) {
				h2srv.ServeConn(c, &http2.ServeConnOpts{BaseConfig: s, Handler: h})
			},
		},
		ErrorLog: log.New(io.Discard, "", 0), // handshake failures are expected
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				ts.accepted.Add(1)
			}
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(l, conf)) // ServeTLS would add ALPN protocols
	}()
	t.Cleanup(func() { srv.Close(); <-done })
	return ts
}

func (ts *tlsServer) seen() (snis []string, offers [][]string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.snis...), append([][]string(nil), ts.offers...)
}

func autoConfig(t *testing.T) map[string]*anypb.Any {
	return httpOptions(t, &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{
		AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{AllowConnect: true}},
	}})
}

func TestTLSHTTP2WithSNI(t *testing.T) {
	ctx := testCtx(t)
	pki := tlstest.New(t)
	srv := newTLSServer(t, pki.Leaf(t, "backend.example"), []string{"h2"}, protoHandler)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "tlsh2", srv.addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	pb.TransportSocket = tlsSocket(t, pki.CAFile, "backend.example")
	c := mustAdd(t, m, pb)
	for range 3 {
		if got := get(t, ctx, c); got != "HTTP/2.0" {
			t.Fatalf("upstream saw %q, want HTTP/2.0", got)
		}
	}
	snis, offers := srv.seen()
	if len(snis) != 1 || snis[0] != "backend.example" {
		t.Errorf("SNIs seen = %q, want one handshake with backend.example", snis)
	}
	if len(offers) != 1 || len(offers[0]) != 1 || offers[0][0] != "h2" {
		t.Errorf("ALPN offered = %q, want [h2] (Envoy's fallback for an HTTP/2 pool)", offers)
	}
	wantStats(t, st, "tlsh2", map[string]int64{
		"ssl.handshake": 1, "ssl.connection_error": 0, "upstream_cx_http2_total": 1, "upstream_rq_total": 3,
	})
	if rx := statValue(t, st, "cluster.tlsh2.upstream_cx_rx_bytes_total"); rx == 0 {
		t.Error("upstream_cx_rx_bytes_total = 0")
	}
}

func TestTLSHTTP1(t *testing.T) {
	ctx := testCtx(t)
	pki := tlstest.New(t)
	srv := newTLSServer(t, pki.Leaf(t, "127.0.0.1"), []string{"h2", "http/1.1"}, protoHandler)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "tlsh1", srv.addr)
	pb.TransportSocket = tlsSocket(t, pki.CAFile, "")
	c := mustAdd(t, m, pb)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/1.1" || req.URL.Scheme != "https" {
		t.Errorf("upstream saw %q with scheme %q, want HTTP/1.1 over https", b, req.URL.Scheme)
	}
	snis, offers := srv.seen()
	if len(snis) != 1 || snis[0] != "" || len(offers[0]) != 1 || offers[0][0] != "http/1.1" {
		t.Errorf("handshakes: SNIs %q, ALPN %q; want no SNI and [http/1.1]", snis, offers)
	}
	wantStats(t, st, "tlsh1", map[string]int64{"ssl.handshake": 1, "upstream_cx_http1_total": 1})
}

func TestAutoConfigFollowsALPN(t *testing.T) {
	for _, tc := range []struct {
		name       string
		serverALPN []string
		want       string
		h1, h2     int64
	}{
		{"h2", []string{"h2", "http/1.1"}, "HTTP/2.0", 0, 1},
		{"http1", []string{"http/1.1"}, "HTTP/1.1", 1, 0},
		{"no alpn", nil, "HTTP/1.1", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			pki := tlstest.New(t)
			srv := newTLSServer(t, pki.Leaf(t, "127.0.0.1"), tc.serverALPN, protoHandler)
			m, st := newTestManager(t, nil)
			pb := staticCluster(t, "auto", srv.addr)
			pb.TypedExtensionProtocolOptions = autoConfig(t)
			pb.TransportSocket = tlsSocket(t, pki.CAFile, "auto.example")
			c := mustAdd(t, m, pb)
			if c.UpgradeProtocol(1) != 2 {
				t.Errorf("UpgradeProtocol(1) = %d, want 2", c.UpgradeProtocol(1))
			}
			for range 3 {
				if got := get(t, ctx, c); got != tc.want {
					t.Fatalf("upstream saw %q, want %q", got, tc.want)
				}
			}
			if n := srv.accepted.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
			_, offers := srv.seen()
			if len(offers) == 0 || len(offers[0]) != 2 || offers[0][0] != "h2" || offers[0][1] != "http/1.1" {
				t.Errorf("ALPN offered = %q, want [h2 http/1.1]", offers)
			}
			wantStats(t, st, "auto", map[string]int64{
				"upstream_cx_http1_total": tc.h1, "upstream_cx_http2_total": tc.h2, "upstream_rq_total": 3,
			})

			req, pw := extendedConnect(ctx)
			defer pw.Close()
			resp, err := c.RoundTrip(req)
			if tc.h2 == 0 {
				if !errors.Is(err, ErrExtendedConnectUnsupported) {
					t.Errorf("extended CONNECT error = %v, want ErrExtendedConnectUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("extended CONNECT: %v", err)
			}
			resp.Body.Close() // protoHandler answered 200 and ended
		})
	}
}

func TestTLSWrongCA(t *testing.T) {
	ctx := testCtx(t)
	pki, other := tlstest.New(t), tlstest.New(t)
	srv := newTLSServer(t, pki.Leaf(t, "127.0.0.1"), []string{"h2"}, protoHandler)
	m, st := newTestManager(t, nil)
	for _, name := range []string{"wrongca1", "wrongca2"} {
		pb := staticCluster(t, name, srv.addr)
		if name == "wrongca2" {
			pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
		}
		pb.TransportSocket = tlsSocket(t, other.CAFile, "")
		c := mustAdd(t, m, pb)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		_, err := c.RoundTrip(req)
		var ce *ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: RoundTrip error = %v (%T), want *ConnectError", name, err, err)
		}
		want := "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, " +
			"transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
		if ce.StatusCode() != 503 || ce.LocalReplyBody() != want {
			t.Errorf("%s: local reply %d %q, want 503 %q", name, ce.StatusCode(), ce.LocalReplyBody(), want)
		}
		if _, err := c.Dial(ctx); !errors.As(err, &ce) || ce.ResetReason != ResetRemoteConnectionFailure {
			t.Errorf("%s: Dial error = %v, want a remote connection failure", name, err)
		}
		wantStats(t, st, name, map[string]int64{
			"upstream_cx_connect_fail": 2, "upstream_cx_active": 0, "upstream_cx_destroy": 2, "upstream_rq_total": 0,
			"ssl.handshake": 0, "ssl.connection_error": 2, "ssl.fail_verify_error": 2,
		})
	}
}

func TestDialTLS(t *testing.T) {
	ctx := testCtx(t)
	pki := tlstest.New(t)
	offered := make(chan []string, 1)
	conf := &tls.Config{
		Certificates: []tls.Certificate{pki.Leaf(t, "127.0.0.1").Cert},
		NextProtos:   []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			offered <- hello.SupportedProtos
			return nil, nil
		},
	}
	addr := rawServer(t, func(conn net.Conn) {
		tc := tls.Server(conn, conf)
		io.Copy(tc, tc) // echo until close_notify
		tc.Close()
	})
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "dialtls", addr)
	pb.TypedExtensionProtocolOptions = autoConfig(t)
	pb.TransportSocket = tlsSocket(t, pki.CAFile, "")
	c := mustAdd(t, m, pb)
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.TCP() != nil {
		t.Error("TCP() is not nil under TLS: a splice would bypass the encryption")
	}
	if got := <-offered; len(got) != 1 || got[0] != "http/1.1" {
		t.Errorf("Dial offered ALPN %q, want [http/1.1]", got)
	}
	go func() {
		n, _ := io.Copy(conn, stringsReader("ping"))
		conn.CountBytes(0, n)
		conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", got, err)
	}
	conn.CountBytes(int64(len(got)), 0)
	wantStats(t, st, "dialtls", map[string]int64{
		"upstream_cx_active": 1, "upstream_cx_rx_bytes_total": 4, "upstream_cx_tx_bytes_total": 4, "ssl.handshake": 1,
	})
	conn.Close()
	wantStats(t, st, "dialtls", map[string]int64{"upstream_cx_active": 0, "upstream_cx_destroy": 1})
}

func TestAutoConfigNeedsTLS(t *testing.T) {
	pb := staticCluster(t, "autoplain", "127.0.0.1:1")
	pb.TypedExtensionProtocolOptions = autoConfig(t)
	err := Compile(pb)
	want := `upstream: cluster "autoplain": typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].auto_config: ALPN configured for cluster "autoplain" which has a non-ALPN transport socket (auto_config needs an UpstreamTlsContext)`
	if err == nil || err.Error() != want {
		t.Errorf("Compile = %v, want %s", err, want)
	}
	pb.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}
	if err := Compile(pb); err == nil {
		t.Error("auto_config over raw_buffer compiled")
	}
}

func TestAutoConfigHostMovesToH2(t *testing.T) {
	ctx := testCtx(t)
	pki := tlstest.New(t)
	release := make(chan struct{})
	blocked := make(chan struct{})
	srv := newTLSServerFunc(t, pki.Leaf(t, "127.0.0.1"), func(n int) []string {
		if n == 1 {
			return []string{"http/1.1"}
		}
		return []string{"h2", "http/1.1"}
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			close(blocked)
			<-release
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Proto+" "+string(b))
	}))
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "automove", srv.addr)
	pb.TypedExtensionProtocolOptions = autoConfig(t)
	pb.TransportSocket = tlsSocket(t, pki.CAFile, "")
	c := mustAdd(t, m, pb)

	if got := get(t, ctx, c); got != "HTTP/1.1 " {
		t.Fatalf("first request: upstream saw %q, want HTTP/1.1", got)
	}
	// Keep the idle HTTP/1.1 connection busy, so the next request needs a
	// new connection: that one negotiates h2 and the request follows it,
	// body and all.
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/block", nil)
		resp, err := c.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-blocked:
	case <-ctx.Done():
		t.Fatal("the blocking request never arrived")
	}
	// A pipe: closing it (as net/http does to the body of a request whose
	// dial failed) would lose the payload.
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "payload")
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://x/echo", pr)
	req.ContentLength = 7
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0 payload" {
		t.Errorf("POST: upstream saw %q, want HTTP/2.0 with the body", b)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Errorf("blocked request: %v", err)
	}
	wantStats(t, st, "automove", map[string]int64{
		"upstream_cx_http1_total": 1, "upstream_cx_http2_total": 1, "upstream_rq_total": 3, "upstream_rq_active": 0,
	})
	// The host now speaks HTTP/2 first.
	if got := get(t, ctx, c); got != "HTTP/2.0 " {
		t.Errorf("after the move: upstream saw %q, want HTTP/2.0", got)
	}
}
