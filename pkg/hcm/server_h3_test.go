package hcm

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3" // the router's typed_config
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
	"github.com/hopproxy/hop/pkg/tunnel"
)

// h3Terminal stands in for the router: a test handler under the router's
// type URL.
type h3Terminal struct{ h filter.HandlerFunc }

func (h3Terminal) TypeURLs() []string { return []string{routerFilterTypeURL} }
func (h3Terminal) Terminal() bool     { return true }
func (b h3Terminal) Compile(proto.Message) (filter.Factory, error) {
	return func(filter.Handler) filter.Handler { return b.h }, nil
}

const h3HCM = `
stat_prefix: h3
codec_type: HTTP3
route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: none}}]}]}
http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`

// h3Fixture is an H3Server behind a QUIC listener on 127.0.0.1 and a
// client trusting its certificate.
type h3Fixture struct {
	srv    *H3Server
	st     *stats.Store
	addr   string
	client *http3.Transport
	conns  chan *quic.Conn // client connections, as dialled
	closed sync.WaitGroup  // onClose calls still due
}

func newH3Fixture(t *testing.T, extraYAML string, h filter.HandlerFunc) *h3Fixture {
	t.Helper()
	checkNoH3Leaks(t)
	reg := filter.NewRegistry()
	if err := reg.Register(h3Terminal{h}); err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON([]byte(h3HCM + extraYAML))
	if err != nil {
		t.Fatal(err)
	}
	var p hcmv3.HttpConnectionManager
	if err := protojson.Unmarshal(j, &p); err != nil {
		t.Fatal(err)
	}
	f := &h3Fixture{st: stats.New(), conns: make(chan *quic.Conn, 10)}
	cfg, err := Compile(&p, reg, f.st, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = NewH3Server(NewManager(cfg, &Env{Tunnels: &tunnel.Tracker{}}), nil, "owner", f.st)
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "127.0.0.1")
	ln, err := quic.ListenAddr("127.0.0.1:0", http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{leaf.Cert}}), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			f.closed.Add(1)
			f.srv.ServeQUICConn(c, f.closed.Done)
		}
	}()
	f.client = &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pki.Pool, NextProtos: []string{http3.NextProtoH3}},
		QUICConfig:      &quic.Config{HandshakeIdleTimeout: 5 * time.Second},
		Dial: func(ctx context.Context, addr string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			c, err := quic.DialAddr(ctx, addr, tc, qc)
			if err == nil {
				f.conns <- c
			}
			return c, err
		},
	}
	t.Cleanup(func() {
		f.client.Close()
		f.srv.Close()
		ln.Close()
		<-acceptDone
		f.closed.Wait()
	})
	return f
}

func (f *h3Fixture) url(path string) string { return "https://" + f.addr + path }

// dial opens a QUIC connection (ALPN h3), for an http3.ClientConn.
func (f *h3Fixture) dial(t *testing.T, ctx context.Context) *quic.Conn {
	t.Helper()
	c, err := quic.DialAddr(ctx, f.addr, f.client.TLSClientConfig.Clone(), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

// dialRaw opens a QUIC connection (ALPN h3) and returns it once the
// server serves it (its control stream arrived). Nothing reads the
// server's control stream, so the client never closes on a GOAWAY as
// quic-go's HTTP/3 client does.
func (f *h3Fixture) dialRaw(t *testing.T, ctx context.Context) *quic.Conn {
	t.Helper()
	c := f.dial(t, ctx)
	if _, err := c.AcceptUniStream(ctx); err != nil {
		t.Fatalf("no control stream from the server: %v", err)
	}
	return c
}

func (f *h3Fixture) stat(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := f.st.Get(name)
	if !ok {
		t.Fatalf("stat %q does not exist", name)
	}
	return v
}

func (f *h3Fixture) get(t *testing.T, ctx context.Context, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url(path), nil)
	resp, err := f.client.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkNoH3Leaks fails the test if goroutines of quic-go or of this package
// outlive it (it runs after every other cleanup).
func checkNoH3Leaks(t *testing.T) {
	leakcheck.Check(t, "quic-go/quic-go", "hcm.(*H3Server)", "hcm.(*h3Conn)")
}

// TestH3Request: a request reaches the Manager as HTTP/3 with its
// connection's track in the context, and the connection and codec stats
// are Envoy's.
func TestH3Request(t *testing.T) {
	type seen struct {
		major int
		proto string
		group any
		tls   bool
	}
	got := make(chan seen, 1)
	f := newH3Fixture(t, "", func(s *filter.Stream) {
		got <- seen{s.Req.ProtoMajor, s.Req.Proto, connTrackFrom(s.Req.Context()).group(), s.Req.TLS != nil}
		io.WriteString(s.W, "hello")
	})
	ctx := testCtx(t)
	for range 2 {
		if code, body := f.get(t, ctx, "/x"); code != 200 || body != "hello" {
			t.Fatalf("got %d %q", code, body)
		}
		if s := <-got; s != (seen{3, "HTTP/3.0", "owner", true}) {
			t.Errorf("handler saw %+v", s)
		}
	}
	for name, want := range map[string]int64{
		"http.h3.downstream_cx_total":        1,
		"http.h3.downstream_cx_http3_total":  1,
		"http.h3.downstream_cx_http3_active": 1,
		"http.h3.downstream_cx_ssl_total":    1,
		"http.h3.downstream_cx_http1_total":  0,
		"http.h3.downstream_rq_http3_total":  2,
		"http3.quic_version_rfc_v1":          1,
	} {
		if v := f.stat(t, name); v != want {
			t.Errorf("%s = %d, want %d", name, v, want)
		}
	}
	f.client.Close()
	f.srv.Close()
	f.closed.Wait()
	for name, want := range map[string]int64{
		"http.h3.downstream_cx_http3_active": 0,
		"http.h3.downstream_cx_ssl_active":   0,
		"http.h3.downstream_cx_active":       0,
		"http.h3.downstream_cx_destroy":      1,
	} {
		if v := f.stat(t, name); v != want {
			t.Errorf("after close: %s = %d, want %d", name, v, want)
		}
	}
}

// extendedConnect sends an RFC 9220 extended CONNECT (:protocol websocket).
func (f *h3Fixture) extendedConnect(ctx context.Context, rt http.RoundTripper) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, f.url("/chat?x=1"), nil)
	req.Proto = "websocket"
	req.Header.Set("Sec-WebSocket-Version", "13")
	return rt.RoundTrip(req)
}

// TestH3ExtendedConnect: with allow_extended_connect the request reaches
// the connection manager in the shape every codec uses (and the Manager
// turns it into GET + Upgrade); without it, Envoy resets the stream when
// the invalid message is a stream error, and closes the connection
// otherwise (H3_FRAME_ERROR).
func TestH3ExtendedConnect(t *testing.T) {
	const ws = "\nupgrade_configs: [{upgrade_type: websocket}]"
	for _, tc := range []struct {
		name     string
		yaml     string
		wantCode quic.ApplicationErrorCode // 0: served
		stream   bool                      // the error is a stream reset (the connection lives on)
	}{
		{"allowed", ws + "\nhttp3_protocol_options: {allow_extended_connect: true}", 0, false},
		{"refused, stream error", ws + "\nhttp3_protocol_options: {override_stream_error_on_invalid_http_message: true}", h3GeneralProtocolError, true},
		{"refused, stream error from the HCM", ws + "\nstream_error_on_invalid_http_message: true\nhttp3_protocol_options: {}", h3GeneralProtocolError, true},
		{"refused, connection error", ws, h3FrameError, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type seen struct {
				method, upgrade, path, host, proto string
				extended                           bool
				protocolLeft                       bool
			}
			got := make(chan seen, 1)
			f := newH3Fixture(t, tc.yaml, func(s *filter.Stream) {
				if s.Req.Method != http.MethodGet || s.Req.URL.Path == "/chat" {
					_, left := s.Req.Header[protocolHeader]
					got <- seen{s.Req.Method, s.Req.Header.Get("Upgrade"), s.Req.URL.RequestURI(), s.Req.Host, s.Req.Proto, s.ExtendedConnect, left}
				}
				s.W.WriteHeader(http.StatusOK)
			})
			ctx := testCtx(t)
			// One connection, driven by hand: quic-go's Transport would
			// drop a connection after any stream error.
			cc := f.client.NewClientConn(f.dial(t, ctx))
			resp, err := f.extendedConnect(ctx, cc)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("extended CONNECT: %v", err)
				}
				resp.Body.Close()
				want := seen{http.MethodGet, "websocket", "/chat?x=1", f.addr, "HTTP/3.0", true, false}
				if s := <-got; s != want {
					t.Errorf("handler saw %+v, want %+v", s, want)
				}
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %d", resp.StatusCode)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("extended CONNECT answered %d, want an error", resp.StatusCode)
			}
			var h3err *http3.Error
			if !errors.As(err, &h3err) || quic.ApplicationErrorCode(h3err.ErrorCode) != tc.wantCode || !h3err.Remote {
				t.Fatalf("error %v, want the peer's H3 error %#x", err, tc.wantCode)
			}
			if tc.stream {
				var se *quic.StreamError
				if !errors.As(err, &se) {
					t.Errorf("error %v is not a stream reset", err)
				}
				if v := f.stat(t, "http3.tx_reset"); v != 1 {
					t.Errorf("http3.tx_reset = %d, want 1", v)
				}
				// The connection goes on.
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url("/after"), nil)
				resp, err := cc.RoundTrip(req)
				if err != nil {
					t.Fatalf("GET after the reset: %v", err)
				}
				resp.Body.Close()
				if v := f.stat(t, "http.h3.downstream_cx_total"); v != 1 {
					t.Errorf("downstream_cx_total = %d, want 1 (one connection)", v)
				}
			} else {
				var ae *quic.ApplicationError
				if !errors.As(err, &ae) {
					t.Errorf("error %v is not a connection close", err)
				}
			}
			select {
			case s := <-got:
				t.Errorf("the refused request reached the handler: %+v", s)
			default:
			}
			if v := f.stat(t, "http.h3.downstream_rq_total"); v > 1 {
				t.Errorf("downstream_rq_total = %d: the refused request was counted", v)
			}
		})
	}
}

// TestH3RxReset: a client that cancels its request resets both sides of
// the stream; the handler sees it reading the body (RESET_STREAM) and
// writing the response (STOP_SENDING), one http3.rx_reset each.
func TestH3RxReset(t *testing.T) {
	errs := make(chan error, 2)
	started := make(chan struct{})
	f := newH3Fixture(t, "", func(s *filter.Stream) {
		close(started)
		_, err := io.Copy(io.Discard, s.Req.Body)
		errs <- err
		chunk := make([]byte, 16<<10)
		for {
			if _, err := s.W.Write(chunk); err != nil {
				errs <- err
				return
			}
			http.NewResponseController(s.W).Flush()
			if s.Req.Context().Err() != nil {
				errs <- s.Req.Context().Err()
				return
			}
		}
	})
	ctx := testCtx(t)
	rctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, f.url("/up"), pr)
	done := make(chan error, 1)
	go func() {
		resp, err := f.client.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	pw.Write([]byte("some body"))
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the request did not reach the handler")
	}
	cancel()
	<-done
	for i := range 2 {
		select {
		case err := <-errs:
			var se *quic.StreamError
			if !errors.As(err, &se) || !se.Remote {
				t.Errorf("handler error %d: %v, want a reset by the peer", i, err)
			}
		case <-ctx.Done():
			t.Fatal("the handler did not see the reset")
		}
	}
	if v := f.stat(t, "http3.rx_reset"); v != 2 {
		t.Errorf("http3.rx_reset = %d, want 2", v)
	}
}
