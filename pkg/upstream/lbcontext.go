package upstream

import (
	"context"
	"net/netip"
)

// LBContext is what a cluster's load balancer may learn about the
// downstream request or connection that a new upstream request or
// connection serves, as Envoy's LoadBalancerContext. Only ORIGINAL_DST
// clusters read it today (Cluster.UsesLBContext).
//
// The zero value knows nothing: an ORIGINAL_DST cluster then has no
// destination and fails with ErrNoHealthyUpstream.
type LBContext struct {
	// Header returns the first value of a downstream request header. name
	// is lower-case as configured (for example "x-envoy-original-dst-host");
	// the pseudo-header ":authority" must be answered with the request's
	// authority (Host). Nil for a connection without a request (tcp_proxy).
	Header func(name string) (string, bool)

	// DownstreamLocalAddr is the downstream connection's original
	// destination, used when there is no usable header. Envoy uses the
	// connection's local address only when an original_dst listener
	// filter restored it (localAddressRestored); hop has no such filter
	// yet, so callers leave this zero unless they know the local address
	// is the destination the client meant. Passing a listener's own
	// address would make the cluster connect back to that listener.
	DownstreamLocalAddr netip.AddrPort
}

type lbContextKey struct{}

// WithLBContext returns a context that carries lc to Cluster.Dial and
// Cluster.RoundTrip (through the request's context). Callers may skip it
// for clusters whose UsesLBContext is false, which saves the allocation.
func WithLBContext(ctx context.Context, lc LBContext) context.Context {
	return context.WithValue(ctx, lbContextKey{}, &lc)
}

// lbContextFrom returns the LBContext of ctx, or nil.
func lbContextFrom(ctx context.Context) *LBContext {
	lc, _ := ctx.Value(lbContextKey{}).(*LBContext)
	return lc
}

// UsesLBContext reports whether the cluster chooses hosts from an
// LBContext (see WithLBContext): true for ORIGINAL_DST clusters.
func (c *Cluster) UsesLBContext() bool { return c.s.kind == kindOriginalDst }
