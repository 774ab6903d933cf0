package upstream

import (
	"errors"
	"fmt"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// protocolMode is how a cluster picks the protocol of a request, as
// Envoy's ClusterInfoImpl::upstreamHttpProtocol.
type protocolMode uint8

const (
	// modeHTTP1 speaks HTTP/1.1 (explicit_http_config.http_protocol_options,
	// or nothing configured).
	modeHTTP1 protocolMode = iota
	// modeHTTP2 speaks HTTP/2: h2c with prior knowledge, or h2 over TLS.
	modeHTTP2
	// modeDownstream speaks what the downstream spoke: HTTP/2 for HTTP/2
	// and HTTP/3 requests, HTTP/1.1 otherwise.
	modeDownstream
	// modeAuto offers "h2" and "http/1.1" by ALPN and speaks what each
	// connection negotiated. Only valid over TLS.
	modeAuto
)

func (m protocolMode) String() string {
	return [...]string{"http1", "http2", "use_downstream_protocol", "auto"}[m]
}

// h2Options are the Http2ProtocolOptions hop applies. Zero values keep
// x/net's defaults.
type h2Options struct {
	maxStreams   uint32        // max_concurrent_streams: streams per connection; 0 = no limit of our own
	streamWindow int32         // initial_stream_window_size
	connWindow   int32         // initial_connection_window_size
	hpackSize    uint32        // hpack_table_size, when hpackSet
	hpackSet     bool          //
	pingInterval time.Duration // connection_keepalive.interval
	pingTimeout  time.Duration // connection_keepalive.timeout
}

const errHTTP3 = "HTTP/3 upstreams are not supported"

// compileProtocol applies the HTTP protocol options: either
// typed_extension_protocol_options or the deprecated Cluster fields
// (http2_protocol_options, protocol_selection); common_http_protocol_options
// may come from either place, but not both.
func compileProtocol(c *clusterv3.Cluster, s *settings) error {
	s.maxRequestsPerConn = c.GetMaxRequestsPerConnection().GetValue()
	common := c.GetCommonHttpProtocolOptions()
	commonPath := "common_http_protocol_options"
	keys := make([]string, 0, len(c.GetTypedExtensionProtocolOptions()))
	for k := range c.GetTypedExtensionProtocolOptions() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var typed *httpv3.HttpProtocolOptions
	var typedPath string
	for _, k := range keys {
		path := fmt.Sprintf("typed_extension_protocol_options[%q]", k)
		if k != httpOptionsName {
			return fmt.Errorf("%s: %w", path, ErrUnsupported)
		}
		opts, err := unpackHTTPOptions(c.GetTypedExtensionProtocolOptions()[k], path)
		if err != nil {
			return err
		}
		typed, typedPath = opts, path
		if opts.GetCommonHttpProtocolOptions() != nil {
			if common != nil {
				return fmt.Errorf("%s.common_http_protocol_options: cannot be set together with the cluster's common_http_protocol_options", path)
			}
			common, commonPath = opts.GetCommonHttpProtocolOptions(), path+".common_http_protocol_options"
		}
	}
	if typed != nil {
		// Envoy ignores the deprecated fields then; hop refuses the
		// ambiguity instead of dropping a protocol choice silently.
		if c.GetHttp2ProtocolOptions() != nil {
			return fmt.Errorf("http2_protocol_options: cannot be set together with %s", typedPath)
		}
		if c.GetProtocolSelection() != clusterv3.Cluster_USE_CONFIGURED_PROTOCOL {
			return fmt.Errorf("protocol_selection: cannot be set together with %s", typedPath)
		}
		if err := compileTypedProtocol(typed, typedPath, s); err != nil {
			return err
		}
	} else if err := compileLegacyProtocol(c, s); err != nil {
		return err
	}
	if common == nil {
		return nil
	}
	if common.IdleTimeout != nil {
		s.idleTimeout = common.GetIdleTimeout().AsDuration()
	}
	if kb := common.GetMaxResponseHeadersKb(); kb != nil {
		s.maxResponseHeaders = int64(kb.GetValue()) << 10
	}
	if m := common.GetMaxRequestsPerConnection(); m != nil {
		if c.GetMaxRequestsPerConnection() != nil {
			return fmt.Errorf("%s.max_requests_per_connection: only one of max_requests_per_connection from Cluster or HttpProtocolOptions can be specified", commonPath)
		}
		s.maxRequestsPerConn = m.GetValue()
	}
	return nil
}

// compileLegacyProtocol reads the deprecated Cluster fields, as Envoy's
// createOptions does without typed options.
func compileLegacyProtocol(c *clusterv3.Cluster, s *settings) error {
	downstream := c.GetProtocolSelection() == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
	if !downstream && c.GetHttpProtocolOptions() != nil && c.GetHttp2ProtocolOptions() != nil {
		return errors.New("Both HTTP1 and HTTP2 options may only be configured with non-default 'protocol_selection' values")
	}
	compileH2(c.GetHttp2ProtocolOptions(), s)
	switch {
	case downstream:
		s.mode = modeDownstream
	case c.GetHttp2ProtocolOptions() != nil:
		s.mode = modeHTTP2
	}
	return nil
}

// compileTypedProtocol reads the upstream_protocol_options oneof of
// HttpProtocolOptions (config.cc in source/extensions/upstreams/http).
func compileTypedProtocol(opts *httpv3.HttpProtocolOptions, path string, s *settings) error {
	var h2 *corev3.Http2ProtocolOptions
	switch {
	case opts.GetExplicitHttpConfig() != nil:
		e, p := opts.GetExplicitHttpConfig(), path+".explicit_http_config"
		if e.GetHttp3ProtocolOptions() != nil {
			return fmt.Errorf("%s.http3_protocol_options: %s", p, errHTTP3)
		}
		if e.GetHttp2ProtocolOptions() != nil {
			s.mode = modeHTTP2
			h2 = e.GetHttp2ProtocolOptions()
		}
	case opts.GetUseDownstreamProtocolConfig() != nil:
		d, p := opts.GetUseDownstreamProtocolConfig(), path+".use_downstream_protocol_config"
		if d.GetHttp3ProtocolOptions() != nil {
			return fmt.Errorf("%s.http3_protocol_options: %s", p, errHTTP3)
		}
		s.mode = modeDownstream
		h2 = d.GetHttp2ProtocolOptions()
	case opts.GetAutoConfig() != nil:
		a, p := opts.GetAutoConfig(), path+".auto_config"
		if a.GetHttp3ProtocolOptions() != nil {
			return fmt.Errorf("%s.http3_protocol_options: %s", p, errHTTP3)
		}
		s.mode = modeAuto
		s.autoPath = p
		h2 = a.GetHttp2ProtocolOptions()
	}
	compileH2(h2, s)
	return nil
}

func unpackHTTPOptions(a *anypb.Any, path string) (*httpv3.HttpProtocolOptions, error) {
	opts := &httpv3.HttpProtocolOptions{}
	if !a.MessageIs(opts) {
		return nil, fmt.Errorf("%s: type %q is not %s", path, a.GetTypeUrl(), httpOptionsName)
	}
	if err := a.UnmarshalTo(opts); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := opts.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkFields(opts.ProtoReflect(), httpOptionsFields, path); err != nil {
		return nil, err
	}
	return opts, nil
}

// compileH2 applies the Http2ProtocolOptions fields listed in http2Fields.
// Ranges were checked by ValidateAll (Envoy's proto constraints).
func compileH2(o *corev3.Http2ProtocolOptions, s *settings) {
	if o == nil {
		return
	}
	s.h2Set = true
	if v := o.GetMaxConcurrentStreams(); v != nil {
		s.h2.maxStreams = v.GetValue()
	}
	if v := o.GetInitialStreamWindowSize(); v != nil {
		s.h2.streamWindow = int32(v.GetValue())
	}
	if v := o.GetInitialConnectionWindowSize(); v != nil {
		s.h2.connWindow = int32(v.GetValue())
	}
	if v := o.GetHpackTableSize(); v != nil {
		s.h2.hpackSize, s.h2.hpackSet = v.GetValue(), true
	}
	if ka := o.GetConnectionKeepalive(); ka != nil {
		s.h2.pingInterval = ka.GetInterval().AsDuration()
		s.h2.pingTimeout = ka.GetTimeout().AsDuration() // required by the proto
	}
}

// checkAutoNeedsTLS mirrors Envoy's ClusterImplBase check: ALPN selection
// needs a transport socket that supports ALPN.
func checkAutoNeedsTLS(s *settings) error {
	if s.mode == modeAuto && s.tls == nil {
		return fmt.Errorf("%s: ALPN configured for cluster %q which has a non-ALPN transport socket (auto_config needs an UpstreamTlsContext)", s.autoPath, s.name)
	}
	return nil
}
