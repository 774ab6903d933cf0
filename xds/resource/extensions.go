package resource

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	// The extension types hop implements, and the TypedStruct wrappers, are
	// registered so that their payloads can be unpacked and walked.
	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/bootstrap/internal_listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/request_id/uuid/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Extension categories. The names follow Envoy's extension categories where
// Envoy has one; CategoryHTTPFilterPerRoute is hop's name for the
// typed_per_filter_config payloads that Envoy files under its HTTP filters.
// categoryFilterSettings is the per-route settings of one filter inside a
// FilterConfig; no filter hop implements has any, so it has no types.
const (
	CategoryNetworkFilter             = "envoy.filters.network"
	CategoryHTTPFilter                = "envoy.filters.http"
	CategoryHTTPFilterPerRoute        = "envoy.filters.http.per_route"
	CategoryListenerFilter            = "envoy.filters.listener"
	CategoryDownstreamTransportSocket = "envoy.transport_sockets.downstream"
	CategoryUpstreamTransportSocket   = "envoy.transport_sockets.upstream"
	CategoryUpstreamOptions           = "envoy.upstream_options"
	CategoryAccessLogger              = "envoy.access_loggers"
	CategoryBootstrap                 = "envoy.bootstrap"
	CategoryRequestID                 = "envoy.request_id"

	categoryFilterSettings = "envoy.filters.http.per_route.config"
)

// typeURLPrefix is the prefix of the type URLs hop reports. Lookups ignore
// whatever precedes the last '/', as Envoy and protobuf do.
const typeURLPrefix = "type.googleapis.com/"

// Extension is one typed_config type hop implements in one category.
type Extension struct {
	// Category is one of the Category constants.
	Category string
	// TypeURL is the full type URL, "type.googleapis.com/<message name>".
	TypeURL string
}

// extensions is the table of typed_config types hop implements. The
// messages' fields are further limited by supported_fields.go.
var extensions = []Extension{
	{CategoryNetworkFilter, typeURLPrefix + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"},
	{CategoryNetworkFilter, typeURLPrefix + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"},
	{CategoryHTTPFilter, typeURLPrefix + "envoy.extensions.filters.http.router.v3.Router"},
	{CategoryHTTPFilter, typeURLPrefix + "envoy.extensions.filters.http.buffer.v3.Buffer"},
	{CategoryHTTPFilterPerRoute, typeURLPrefix + "envoy.config.route.v3.FilterConfig"},
	{CategoryListenerFilter, typeURLPrefix + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
	{CategoryDownstreamTransportSocket, typeURLPrefix + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
	{CategoryDownstreamTransportSocket, typeURLPrefix + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"},
	{CategoryDownstreamTransportSocket, typeURLPrefix + "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"},
	{CategoryUpstreamTransportSocket, typeURLPrefix + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
	{CategoryUpstreamTransportSocket, typeURLPrefix + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"},
	{CategoryUpstreamOptions, typeURLPrefix + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"},
	{CategoryAccessLogger, typeURLPrefix + "envoy.extensions.access_loggers.file.v3.FileAccessLog"},
	{CategoryAccessLogger, typeURLPrefix + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"},
	{CategoryAccessLogger, typeURLPrefix + "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"},
	{CategoryBootstrap, typeURLPrefix + "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"},
	{CategoryRequestID, typeURLPrefix + "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"},
}

// Supported returns the extension types hop implements, grouped by
// category, for documentation (README, hop --help). The slice is a copy.
func Supported() []Extension {
	return append([]Extension(nil), extensions...)
}

// supportedTypes maps category → message full name → true. Built once from
// extensions and never modified.
var supportedTypes = func() map[string]map[protoreflect.FullName]bool {
	m := make(map[string]map[protoreflect.FullName]bool)
	for _, e := range extensions {
		if m[e.Category] == nil {
			m[e.Category] = make(map[protoreflect.FullName]bool)
		}
		m[e.Category][typeName(e.TypeURL)] = true
	}
	return m
}()

// typeName returns the message name in a type URL: the part after the last
// '/'.
func typeName(url string) protoreflect.FullName {
	return protoreflect.FullName(url[strings.LastIndexByte(url, '/')+1:])
}

// typedStructNames are the wrappers whose inner type_url names the
// extension. Their payload is a google.protobuf.Struct in JSON form.
var typedStructNames = map[protoreflect.FullName]bool{
	"xds.type.v3.TypedStruct":  true,
	"udpa.type.v1.TypedStruct": true,
}

// extensionPoint is a google.protobuf.Any field (or map of Any) through
// which hop loads an extension.
type extensionPoint struct {
	// field is the Any-valued field.
	field protoreflect.FullName
	// via, when set, restricts the point to messages reached through that
	// field (TransportSocket means different things in a FilterChain and in
	// a Cluster).
	via protoreflect.FullName
	// category is the extension category the payload must belong to.
	category string
	// required: the containing message must set field (hop never falls back
	// to looking an extension up by name).
	required bool
	// optionalFlag names a bool field of the containing message; when it is
	// true and the payload's type is unsupported, the whole containing
	// message is skipped (HttpFilter.is_optional).
	optionalFlag protoreflect.Name
}

// extensionPoints lists every Any field that supported_fields.go allows.
// A test checks that none is missing.
var extensionPoints = []extensionPoint{
	{field: "envoy.config.listener.v3.Filter.typed_config", category: CategoryNetworkFilter, required: true},
	{field: "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.typed_config", category: CategoryHTTPFilter, required: true, optionalFlag: "is_optional"},
	{field: "envoy.config.listener.v3.ListenerFilter.typed_config", category: CategoryListenerFilter, required: true},
	{field: "envoy.config.core.v3.TransportSocket.typed_config", via: "envoy.config.listener.v3.FilterChain.transport_socket", category: CategoryDownstreamTransportSocket, required: true},
	{field: "envoy.config.core.v3.TransportSocket.typed_config", via: "envoy.config.cluster.v3.Cluster.transport_socket", category: CategoryUpstreamTransportSocket, required: true},
	{field: "envoy.config.accesslog.v3.AccessLog.typed_config", category: CategoryAccessLogger, required: true},
	{field: "envoy.config.cluster.v3.Cluster.typed_extension_protocol_options", category: CategoryUpstreamOptions},
	{field: "envoy.config.route.v3.VirtualHost.typed_per_filter_config", category: CategoryHTTPFilterPerRoute},
	{field: "envoy.config.route.v3.Route.typed_per_filter_config", category: CategoryHTTPFilterPerRoute},
	{field: "envoy.config.route.v3.FilterConfig.config", category: categoryFilterSettings, optionalFlag: "is_optional"},
	{field: "envoy.config.core.v3.TypedExtensionConfig.typed_config", via: "envoy.config.bootstrap.v3.Bootstrap.bootstrap_extensions", category: CategoryBootstrap, required: true},
	{field: "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension.typed_config", category: CategoryRequestID, required: true},
}

// pointsByMessage indexes extensionPoints by the message that holds the
// field. Built once and never modified.
var pointsByMessage = func() map[protoreflect.FullName][]extensionPoint {
	m := make(map[protoreflect.FullName][]extensionPoint)
	for _, p := range extensionPoints {
		msg := p.field.Parent()
		m[msg] = append(m[msg], p)
	}
	return m
}()

// pointFor returns the extension point for an Any field of a message that
// was reached through via.
func pointFor(field, via protoreflect.FullName) (extensionPoint, bool) {
	for _, p := range pointsByMessage[field.Parent()] {
		if p.field == field && (p.via == "" || p.via == via) {
			return p, true
		}
	}
	return extensionPoint{}, false
}
