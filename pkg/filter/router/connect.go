package router

import (
	"net/http"

	"github.com/hopproxy/hop/pkg/filter"
	routes "github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// terminates reports whether the route terminates the request as raw TCP
// (route upgrade_configs CONNECT with connect_config, envoy-semantics.md
// §3.3): an accepted CONNECT, or a POST when allow_post is set.
//
// A POST is terminated on HTTP/2 and HTTP/3 downstreams only: there its
// body is a byte stream of its own. An HTTP/1.1 POST on such a route is
// proxied as an ordinary request (a gap: Envoy terminates its de-chunked
// body too).
func terminates(s *filter.Stream, rt *routes.Route) bool {
	cc := rt.ConnectConfig()
	if cc == nil {
		return false
	}
	switch s.Req.Method {
	case http.MethodConnect:
		return s.UpgradeType != ""
	case http.MethodPost:
		return cc.GetAllowPost() && s.UpgradeType == "" && s.Req.ProtoMajor >= 2
	}
	return false
}

// serveTerminate opens a TCP connection to the routed cluster and hands it
// to the connection manager as an accepted tunnel: the request headers are
// not sent, a 200 goes downstream once the connection exists, and whatever
// the client sent after its request head (early data included) is spliced
// upstream. A connect failure is Envoy's 503 local reply.
//
// Envoy then resets an HTTP/2 stream with CONNECT_ERROR; x/net's server
// gives a handler no way to pick a reset code, so the client gets the 503
// and, as the request side is still open, RST_STREAM(NO_ERROR).
func (f *routerFilter) serveTerminate(s *filter.Stream, cl *upstream.Cluster) {
	ctx := s.Req.Context()
	conn, err := cl.Dial(ctx)
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	conn.CountRequest()
	up := &tunnel.Upstream{
		Conn:     conn,
		Response: &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody},
		Accepted: true,
		Protocol: 1,
	}
	// StartTunnel owns both ends from here on; a failure there means the
	// downstream is gone and there is nobody to answer.
	_ = s.Env.StartTunnel(s, up)
}
