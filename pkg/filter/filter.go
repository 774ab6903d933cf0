// Package filter is the HTTP filter contract of hop's connection manager and
// the registry that maps an http_filters typed_config type URL to the code
// that implements it.
//
// A filter is compiled once per configuration into a Factory. The connection
// manager composes the factories of one filter chain (http_filters, or an
// upgrade type's own filters) into a single Handler when the configuration is
// compiled, never per request:
//
//	chain := router(nil); chain = buffer(chain); ...
//
// Each request then runs chain.Serve(stream). A filter either answers the
// request itself (stream.LocalReply) or calls next.Serve. The last filter must
// be terminal (the router): it ends every request and never calls next.
//
// Filters may change the request headers and body before calling next. They
// must not read Upgrade, Connection or :protocol themselves: the connection
// manager has already classified the request (Stream.UpgradeType), and
// everything byte-stream related belongs to package tunnel.
package filter

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// Handler serves one stream.
type Handler interface {
	Serve(s *Stream)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(s *Stream)

// Serve calls f(s).
func (f HandlerFunc) Serve(s *Stream) { f(s) }

// Factory wraps the rest of a chain. It is called once per compiled
// configuration.
type Factory func(next Handler) Handler

// Builder turns one http_filters entry's typed_config into a Factory.
type Builder interface {
	// TypeURLs lists the typed_config type URLs this builder accepts.
	TypeURLs() []string
	// Compile validates cfg (already proto-validated) and returns the
	// factory. Errors name the offending field relative to typed_config.
	Compile(cfg proto.Message) (Factory, error)
	// Terminal reports whether the filter ends the chain (the router).
	Terminal() bool
}

// Stream is one downstream request as filters see it. The connection manager
// fills it before the chain runs; the fields are owned by the goroutine
// serving the request.
type Stream struct {
	// Req is the request that will be sent upstream. Filters may edit its
	// headers and body. Req.Context() ends when the downstream goes away.
	Req *http.Request
	// W writes the response. Once a filter has written, no other may.
	W http.ResponseWriter
	// VirtualHost and Route are the match result; both may be nil.
	VirtualHost *router.VirtualHost
	Route       *router.Route
	// UpgradeType is the accepted upgrade ("websocket", "CONNECT", ...) as
	// the client sent it, or "" for an ordinary request.
	UpgradeType string
	// ExtendedConnect: the client sent the upgrade as an HTTP/2 or HTTP/3
	// extended CONNECT (RFC 8441/9220). The connection manager has turned
	// it into HTTP/1.1 form (GET + Upgrade + Connection), as Envoy does.
	ExtendedConnect bool
	// Env is what the connection manager offers the terminal filter.
	Env Env
}

// Env is what the connection manager offers filters, the terminal router
// above all. It is implemented by package hcm.
type Env interface {
	// LocalReply answers the request from hop itself, with Envoy's headers
	// and stats. details is Envoy's response code detail (for logs).
	LocalReply(s *Stream, status int, body, details string)
	// Cluster returns the named upstream cluster, or nil.
	Cluster(name string) *upstream.Cluster
	// PrepareResponse applies the connection manager's and the route's
	// response header rules to an upstream response's headers.
	PrepareResponse(s *Stream, h http.Header)
	// StartTunnel is called by the router once the upstream accepted an
	// upgrade: it sends the upstream's response head downstream, takes the
	// downstream connection over, and splices the two until they end (on a
	// goroutine the connection manager owns). The upstream connection is
	// owned by StartTunnel from then on, even when it returns an error.
	StartTunnel(s *Stream, up *tunnel.Upstream) error
	// Timeouts returns the route timeout to apply to the upstream request
	// and the idle timeout of the stream.
	Timeouts(s *Stream) (route, idle time.Duration)
	// OriginalConnectPort is the port the connection manager stripped
	// from a CONNECT's authority (strip_any_host_port,
	// strip_matching_host_port; Envoy's envoy.router.original_connect_port),
	// for the router to put back; "" when none was.
	OriginalConnectPort(s *Stream) string
	// WatchEarlyData starts watching for payload a CONNECT client sends
	// before the response starts (reject_connect_request_early_data);
	// EarlyData, called right before answering, tells whether any came.
	WatchEarlyData(s *Stream)
	EarlyData(s *Stream) bool
	// EndWithConnectError marks the stream of a CONNECT (or of an upgrade
	// that arrived as an extended CONNECT) whose upstream could not be
	// reached or reset before answering: the local reply that follows ends
	// it with a reset, RST_STREAM(CONNECT_ERROR) on HTTP/2 (and then
	// LocalReply does not return) or H3_CONNECT_ERROR on HTTP/3. On
	// HTTP/1.1 it does nothing.
	EndWithConnectError(s *Stream)
	// Counters the router bumps under the connection manager's stat prefix.
	CountNoRoute()
	CountNoCluster()
	CountDirectResponse()
	CountRedirect()
}

// DownstreamRemoteAddress, DownstreamLocalAddress and Protocol make a
// Stream the router.Formatter for header values (%DOWNSTREAM_REMOTE_ADDRESS%
// and friends).
func (s *Stream) DownstreamRemoteAddress() string { return s.Req.RemoteAddr }

// DownstreamLocalAddress is the address the connection was accepted on.
func (s *Stream) DownstreamLocalAddress() string {
	if a, ok := s.Req.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// Protocol is the request's protocol ("HTTP/1.1").
func (s *Stream) Protocol() string { return s.Req.Proto }

// Request makes a Stream a router.RequestFormatter, so that header values
// read the request (%REQ(:authority)%, %REQ(:path)%, %REQ(x)%). Req is the
// request as it goes upstream, so in response header mutations they see it
// with the route's rewrites and request mutations applied, as in Envoy,
// whose router edits the downstream request's headers in place. It builds
// the view at each call: the router's mutations ask once per level set.
func (s *Stream) Request() *router.Request {
	r := s.Req
	rr := &router.Request{Method: r.Method, Authority: r.Host, Path: r.URL.RequestURI(), Header: r.Header, Scheme: "http"}
	if r.TLS != nil {
		rr.Scheme = "https"
	}
	if r.Method == http.MethodConnect && r.URL.Path == "" {
		rr.Path = "" // a plain CONNECT has no :path
	}
	return rr
}

// LocalReply is shorthand for s.Env.LocalReply(s, ...).
func (s *Stream) LocalReply(status int, body, details string) {
	s.Env.LocalReply(s, status, body, details)
}

// Registry maps type URLs to builders. It is filled at start-up by explicit
// calls (see package filters), then only read.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Builder
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Builder{}} }

// Register adds b under each of its type URLs. Registering a URL twice is a
// programming error and returns an error.
func (r *Registry) Register(b Builder) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range b.TypeURLs() {
		if _, dup := r.m[u]; dup {
			return fmt.Errorf("filter: type URL %q registered twice", u)
		}
		r.m[u] = b
	}
	return nil
}

// Lookup returns the builder for a type URL, or nil.
func (r *Registry) Lookup(typeURL string) Builder {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[typeURL]
}

// TypeURLs lists every registered type URL, sorted.
func (r *Registry) TypeURLs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for u := range r.m {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}
