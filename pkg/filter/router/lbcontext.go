package router

import (
	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/upstream"
)

// addLBContext gives the request's context what a cluster that chooses
// hosts per request (ORIGINAL_DST) reads, before any path sends it
// upstream: the request's headers, ":authority" being the authority as it
// leaves hop (a stripped CONNECT port put back). Every context derived from
// the request's then carries it. Other clusters cost nothing.
func addLBContext(s *filter.Stream, cl *upstream.Cluster) {
	if !cl.UsesLBContext() {
		return
	}
	ctx := upstream.WithLBContext(s.Req.Context(), upstream.LBContext{Header: func(name string) (string, bool) {
		r := s.Req
		if name == ":authority" {
			return r.Host, r.Host != ""
		}
		vs := r.Header.Values(name)
		if len(vs) == 0 {
			return "", false
		}
		return vs[0], true
	}})
	s.Req = s.Req.WithContext(ctx)
}
