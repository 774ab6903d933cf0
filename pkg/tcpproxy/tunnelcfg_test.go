package tcpproxy

import (
	"errors"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/pkg/stats"
)

func tunnelProxy(tc *tcpv3.TcpProxy_TunnelingConfig) *tcpv3.TcpProxy {
	return &tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"), TunnelingConfig: tc}
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func uuidExtension(t *testing.T) *hcmv3.RequestIDExtension {
	a, err := anypb.New(&uuidv3.UuidRequestIdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.RequestIDExtension{TypedConfig: a}
}

func TestCompileTunnelingErrors(t *testing.T) {
	notUUID, _ := anypb.New(durationpb.New(0))
	cases := []struct {
		name string
		tc   *tcpv3.TcpProxy_TunnelingConfig
		err  string
	}{
		{"no hostname", &tcpv3.TcpProxy_TunnelingConfig{}, "tcp_proxy: tunneling_config.hostname: must not be empty"},
		{"post_path without use_post", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", PostPath: "/p"},
			"tcp_proxy: tunneling_config.post_path: Can't set a post path when POST method isn't used"},
		{"unknown command in hostname", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "%UPSTREAM_HOST%:1"},
			"tcp_proxy: tunneling_config.hostname: %UPSTREAM_HOST%: unsupported command UPSTREAM_HOST"},
		{"unknown command in a header", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1",
			HeadersToAdd: []*corev3.HeaderValueOption{header("a", "b"), header("x", "%NOPE%")}},
			"tcp_proxy: tunneling_config.headers_to_add[1].header.value: %NOPE%: unsupported command NOPE"},
		{"pseudo header", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1",
			HeadersToAdd: []*corev3.HeaderValueOption{header(":path", "/x")}},
			`tcp_proxy: tunneling_config.headers_to_add[0].header.key: ":path": ":"-prefixed or host headers may not be modified`},
		{"host header", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1",
			HeadersToAdd: []*corev3.HeaderValueOption{header("host", "x")}},
			`tcp_proxy: tunneling_config.headers_to_add[0].header.key: "host": ":"-prefixed or host headers may not be modified`},
		{"formatters", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", Formatters: []*corev3.TypedExtensionConfig{{Name: "f"}}},
			"tcp_proxy: tunneling_config.formatters: unsupported field"},
		{"request id extension not uuid", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1",
			RequestIdExtension: &hcmv3.RequestIDExtension{TypedConfig: notUUID}},
			"tcp_proxy: tunneling_config.request_id_extension.typed_config: only envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig is supported: unsupported field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tunnelProxy(tc.tc), stats.New())
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("err = %v\nwant %s", err, tc.err)
			}
			if strings.Contains(tc.err, "unsupported field") && !errors.Is(err, ErrUnsupported) {
				t.Errorf("err does not wrap ErrUnsupported")
			}
		})
	}
}

// fakeConn gives a session its addresses.
type fakeConn struct {
	net.Conn
	local, remote net.Addr
}

func (f fakeConn) LocalAddr() net.Addr  { return f.local }
func (f fakeConn) RemoteAddr() net.Addr { return f.remote }

func testSession(sni string) *session {
	return newSession(fakeConn{
		local:  &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80},
		remote: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4567},
	}, Downstream{ServerName: sni})
}

// TestNewRequest checks the tunnel request of Envoy's
// HttpUpstreamRequestEncoderTest: method, authority, path and headers.
func TestNewRequest(t *testing.T) {
	appendHdr := func(k, v string) *corev3.HeaderValueOption {
		h := header(k, v)
		h.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		return h
	}
	cases := []struct {
		name       string
		tc         *tcpv3.TcpProxy_TunnelingConfig
		sni        string
		method     string
		host, path string // path "" for CONNECT
		header     http.Header
	}{
		{"connect", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "foo.lyft.com:80"}, "", "CONNECT", "foo.lyft.com:80", "", http.Header{}},
		{"post", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "foo.lyft.com:80", UsePost: true}, "", "POST", "foo.lyft.com:80", "/", http.Header{}},
		{"post custom path", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", UsePost: true, PostPath: "/test?a=b"}, "", "POST", "h:1", "/test?a=b", http.Header{}},
		{"headers", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", HeadersToAdd: []*corev3.HeaderValueOption{
			header("header0", "value0"), appendHdr("header1", "value1"), appendHdr("header1", "value2"),
			header("downstream-local-port", "%DOWNSTREAM_LOCAL_PORT%"),
			header("downstream-local-ip", "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%"),
			header("client", "%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_PORT%"),
			header("absent", "%REQUESTED_SERVER_NAME%"),                 // "" → not sent
			header("filter-state", "%FILTER_STATE(envoy.tcp_proxy.x)%"), // absent → not sent
		}}, "", "CONNECT", "h:1", "", http.Header{
			"Header0": {"value0"}, "Header1": {"value1", "value2"}, "Downstream-Local-Port": {"80"},
			"Downstream-Local-Ip": {"127.0.0.1"}, "Client": {"10.1.2.3:4567|4567"},
		}},
		{"sni hostname", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "%REQUESTED_SERVER_NAME%:443"}, "www.google.com", "CONNECT", "www.google.com:443", "", http.Header{}},
		{"no sni", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "%REQUESTED_SERVER_NAME%:443"}, "", "CONNECT", "-:443", "", http.Header{}},
		{"metadata hostname absent", &tcpv3.TcpProxy_TunnelingConfig{Hostname: "%DYNAMIC_METADATA(tunnel:address)%:443"}, "", "CONNECT", "-:443", "", http.Header{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tunnelProxy(tc.tc), stats.New())
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Contains(tc.tc.GetHostname(), "REQUESTED_SERVER_NAME")
			for _, h := range tc.tc.GetHeadersToAdd() {
				want = want || strings.Contains(h.GetHeader().GetValue(), "REQUESTED_SERVER_NAME")
			}
			if got := c.UsesServerName(); got != want {
				t.Errorf("UsesServerName = %v, want %v", got, want)
			}
			s := testSession(tc.sni)
			for range 2 { // the compiled config is reused as is (ConfigReuse)
				req := c.tunnel.newRequest(s)
				if req.Method != tc.method || req.Host != tc.host {
					t.Errorf("%s %s, want %s %s", req.Method, req.Host, tc.method, tc.host)
				}
				if tc.path != "" && req.URL.RequestURI() != tc.path {
					t.Errorf("path %q, want %q", req.URL.RequestURI(), tc.path)
				}
				if d := cmp.Diff(tc.header, req.Header); d != "" {
					t.Errorf("headers (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, tc := range []struct {
		name, header, key, wantHeader, wantKey string
	}{
		{"defaults", "", "", "X-Request-Id", "tunnel_request_id"},
		{"overrides", "x-rid", "rid", "X-Rid", "rid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tunnelProxy(&tcpv3.TcpProxy_TunnelingConfig{
				Hostname: "h:1", RequestIdExtension: uuidExtension(t), RequestIdHeader: tc.header, RequestIdMetadataKey: tc.key,
				HeadersToAdd: []*corev3.HeaderValueOption{header("echo-id", "%DYNAMIC_METADATA(envoy.filters.network.tcp_proxy:"+tc.wantKey+")%")},
			}), stats.New())
			if err != nil {
				t.Fatal(err)
			}
			s := testSession("")
			req := c.tunnel.newRequest(s)
			id := req.Header.Get(tc.wantHeader)
			if !uuidRE.MatchString(id) {
				t.Fatalf("request id %q (headers %v)", id, req.Header)
			}
			if tc.header != "" && req.Header.Get("X-Request-Id") != "" {
				t.Error("x-request-id sent although request_id_header overrides it")
			}
			if md, ok := s.DynamicMetadata("envoy.filters.network.tcp_proxy", []string{tc.wantKey}); !ok || md != id {
				t.Errorf("metadata %q %v, want %q", md, ok, id)
			}
			if req.Header.Get("Echo-Id") != id {
				t.Errorf("headers_to_add sees %q, want %q", req.Header.Get("Echo-Id"), id)
			}
			if again := c.tunnel.newRequest(s).Header.Get(tc.wantHeader); again == id {
				t.Error("a second attempt reused the request id")
			}
		})
	}
}
