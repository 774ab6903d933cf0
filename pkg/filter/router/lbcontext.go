package router

import (
	"context"
	"net/http"

	"github.com/hopproxy/hop/pkg/upstream"
)

// lbContext returns ctx carrying what a cluster that chooses hosts per
// request (ORIGINAL_DST) reads: the request's headers, ":authority" being
// the authority as it leaves hop (a stripped CONNECT port put back). Other
// clusters get ctx unchanged, at no cost.
func lbContext(ctx context.Context, cl *upstream.Cluster, r *http.Request) context.Context {
	if !cl.UsesLBContext() {
		return ctx
	}
	return upstream.WithLBContext(ctx, upstream.LBContext{Header: func(name string) (string, bool) {
		if name == ":authority" {
			return r.Host, r.Host != ""
		}
		vs := r.Header.Values(name)
		if len(vs) == 0 {
			return "", false
		}
		return vs[0], true
	}})
}
