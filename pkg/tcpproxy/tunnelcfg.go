package tcpproxy

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	uuidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hopproxy/hop/pkg/format"
)

// tunnelingAccepted are the TunnelingConfig fields hop implements.
var tunnelingAccepted = map[protoreflect.Name]bool{
	"hostname": true, "use_post": true, "post_path": true, "headers_to_add": true,
	"propagate_response_headers": true, "propagate_response_trailers": true,
	"request_id_extension": true, "request_id_header": true, "request_id_metadata_key": true,
}

// Envoy's names and defaults for the tunnel request id.
const (
	requestIDNamespace     = "envoy.filters.network.tcp_proxy"
	defaultRequestIDHeader = "X-Request-Id"
	defaultRequestIDKey    = "tunnel_request_id"
	maxHeadersToAdd        = 1000 // the proto's constraint
)

// tunneling is a compiled tunneling_config: how each downstream
// connection's bytes are carried over an HTTP CONNECT or POST stream.
// Immutable after compileTunneling.
type tunneling struct {
	hostname *format.Format // per connection; absent values print "-"
	usePost  bool
	postURL  url.URL // the POST's request-target (post_path, default "/")
	postPath string  // post_path as configured, written verbatim on HTTP/1.1
	headers  format.HeadersToAdd

	// Kept on the connection (session) for access logs, which hop does not
	// have yet: no observable effect today.
	propagateHeaders, propagateTrailers bool

	// requestIDHeader is the canonical header of a generated request id,
	// "" when request_id_extension is unset; requestIDKey its dynamic
	// metadata key under requestIDNamespace.
	requestIDHeader, requestIDKey string

	usesServerName bool // some format reads %REQUESTED_SERVER_NAME%
}

// compileTunneling checks and compiles tc; errors name the field under
// tunneling_config.
func compileTunneling(tc *tcpv3.TcpProxy_TunnelingConfig) (*tunneling, error) {
	if err := checkFields(tc.ProtoReflect(), "tunneling_config.", tunnelingAccepted); err != nil {
		return nil, err
	}
	t := &tunneling{
		usePost:           tc.GetUsePost(),
		postPath:          tc.GetPostPath(),
		propagateHeaders:  tc.GetPropagateResponseHeaders(),
		propagateTrailers: tc.GetPropagateResponseTrailers(),
	}
	if tc.GetHostname() == "" {
		return nil, fmt.Errorf("tcp_proxy: tunneling_config.hostname: must not be empty")
	}
	var err error
	if t.hostname, err = format.Parse(tc.GetHostname(), format.Options{}); err != nil {
		return nil, fmt.Errorf("tcp_proxy: tunneling_config.hostname: %w", err)
	}
	if t.postPath != "" && !t.usePost {
		return nil, fmt.Errorf("tcp_proxy: tunneling_config.post_path: Can't set a post path when POST method isn't used")
	}
	if t.postPath == "" {
		t.postPath = "/"
	}
	if strings.HasPrefix(t.postPath, "/") && !strings.HasPrefix(t.postPath, "//") {
		t.postURL = url.URL{Opaque: t.postPath} // sent as :path verbatim
	} else {
		t.postURL = url.URL{Path: t.postPath}
	}
	if n := len(tc.GetHeadersToAdd()); n > maxHeadersToAdd {
		return nil, fmt.Errorf("tcp_proxy: tunneling_config.headers_to_add: %d entries, at most %d are allowed", n, maxHeadersToAdd)
	}
	if t.headers, err = format.CompileHeadersToAdd(tc.GetHeadersToAdd(), "tunneling_config.headers_to_add", nil); err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	if err := t.compileRequestID(tc); err != nil {
		return nil, err
	}
	t.usesServerName = t.hostname.Uses("REQUESTED_SERVER_NAME") || t.headers.Uses("REQUESTED_SERVER_NAME")
	return t, nil
}

// compileRequestID accepts the uuid request id extension, Envoy's only
// one; its tracing options mean nothing without tracing.
func (t *tunneling) compileRequestID(tc *tcpv3.TcpProxy_TunnelingConfig) error {
	ext := tc.GetRequestIdExtension()
	if ext == nil {
		return nil // request_id_header and request_id_metadata_key mean nothing then
	}
	const path = "tunneling_config.request_id_extension"
	if err := checkFields(ext.ProtoReflect(), path+".", map[protoreflect.Name]bool{"typed_config": true}); err != nil {
		return err
	}
	cfg := &uuidv3.UuidRequestIdConfig{}
	if a := ext.GetTypedConfig(); a == nil || !a.MessageIs(cfg) {
		return fmt.Errorf("tcp_proxy: %s.typed_config: only %s is supported: %w", path, cfg.ProtoReflect().Descriptor().FullName(), ErrUnsupported)
	}
	if err := ext.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return fmt.Errorf("tcp_proxy: %s.typed_config: %w", path, err)
	}
	t.requestIDHeader = defaultRequestIDHeader
	if h := tc.GetRequestIdHeader(); h != "" {
		if !format.IsModifiableHeader(h) {
			return fmt.Errorf("tcp_proxy: tunneling_config.request_id_header: %q: \":\"-prefixed or host headers may not be modified", h)
		}
		t.requestIDHeader = textproto.CanonicalMIMEHeaderKey(h)
	}
	t.requestIDKey = defaultRequestIDKey
	if k := tc.GetRequestIdMetadataKey(); k != "" {
		t.requestIDKey = k
	}
	return nil
}

// newRequest builds the tunnel request of one attempt, in wire form:
// :method CONNECT or POST, :authority (and Host) the hostname, for POST
// :path post_path (RoundTrip adds :scheme), then the request id, then
// headers_to_add, as Envoy's HttpUpstream::setRequestEncoder.
func (t *tunneling) newRequest(s *session) *http.Request {
	env := format.Env{Stream: s}
	host := t.hostname.Eval(&env)
	req := &http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Host: host},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, t.headers.Len()+1),
		Host:       host,
	}
	if t.usePost {
		req.Method = http.MethodPost
		u := t.postURL
		req.URL = &u
	}
	if t.requestIDHeader != "" {
		id := newUUID()
		s.setRequestID(t.requestIDKey, id)
		req.Header[t.requestIDHeader] = []string{id}
	}
	t.headers.Apply(req.Header, &env)
	return req
}

// newUUID returns a random (version 4) UUID, what Envoy's uuid request id
// extension generates.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
