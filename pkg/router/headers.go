package router

import (
	"fmt"
	"net/http"
	"net/textproto"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	subst "github.com/hopproxy/hop/pkg/format"
)

// Formatter supplies the per-stream values that header substitution
// operators expand to. The connection manager implements it; an empty
// return value means "unknown" and formats as "".
type Formatter interface {
	// DownstreamRemoteAddress is the client address as ip:port
	// ("[::1]:5000" for IPv6).
	DownstreamRemoteAddress() string
	// DownstreamLocalAddress is the address the connection was accepted
	// on, as ip:port.
	DownstreamLocalAddress() string
	// Protocol is the downstream protocol: "HTTP/1.1", "HTTP/2", "HTTP/3".
	Protocol() string
}

// RequestFormatter is a Formatter that can also hand out the downstream
// request. When the Formatter given to a Mutate method implements it,
// %REQ(:authority)%, %REQ(:path)%, %REQ(:method)% and %REQ(:scheme)% read
// the Request fields, and in MutateResponseHeaders %REQ(x)% reads the
// request's headers. Without it those expand to "".
type RequestFormatter interface {
	Formatter
	Request() *Request
}

// MutateRequestHeaders applies the request_headers_to_add/remove of the
// route, its virtual host and the route configuration to h, in Envoy's
// order. h must be in net/http's canonical form. %REQ(x)% reads h as it
// stands when each level is applied.
func (r *Route) MutateRequestHeaders(h http.Header, f Formatter) {
	if h == nil || len(r.requestMutations) == 0 {
		return
	}
	ctx := evalContext{f: f, headers: h}
	if rf, ok := f.(RequestFormatter); ok {
		ctx.req = rf.Request()
	}
	for _, m := range r.requestMutations {
		m.apply(h, &ctx)
	}
}

// MutateResponseHeaders applies the response_headers_to_add/remove of the
// route, its virtual host and the route configuration to h, in Envoy's
// order. %REQ(x)% reads the request headers when f is a RequestFormatter.
func (r *Route) MutateResponseHeaders(h http.Header, f Formatter) {
	if h == nil || len(r.responseMutations) == 0 {
		return
	}
	ctx := evalContext{f: f}
	if rf, ok := f.(RequestFormatter); ok {
		ctx.req = rf.Request()
		if ctx.req != nil {
			ctx.headers = ctx.req.Header
		}
	}
	for _, m := range r.responseMutations {
		m.apply(h, &ctx)
	}
}

// headerMutation is one level's (route, virtual host or route
// configuration) headers_to_add and headers_to_remove.
type headerMutation struct {
	remove []string // canonical keys
	add    subst.HeadersToAdd
}

// compileMutation returns nil when both lists are empty.
func compileMutation(adds []*corev3.HeaderValueOption, removes []string, addPath, removePath string) (*headerMutation, error) {
	if len(adds) == 0 && len(removes) == 0 {
		return nil, nil
	}
	m := &headerMutation{}
	var err error
	if m.add, err = subst.CompileHeadersToAdd(adds, addPath, routerCommands); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	for i, k := range removes {
		if !subst.IsModifiableHeader(k) {
			return nil, fmt.Errorf("router: %s[%d]: %q: \":\"-prefixed or host headers may not be removed", removePath, i, k)
		}
		m.remove = append(m.remove, textproto.CanonicalMIMEHeaderKey(k))
	}
	return m, nil
}

// apply follows Envoy's HeaderParser::evaluateHeaders: remove, then
// format every value against the headers as they stand, then overwrite,
// then append.
func (m *headerMutation) apply(h http.Header, ctx *evalContext) {
	for _, k := range m.remove {
		delete(h, k)
	}
	if m.add.Len() == 0 {
		return
	}
	env := ctx.env()
	m.add.Apply(h, &env)
}
