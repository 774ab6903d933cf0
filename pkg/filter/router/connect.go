package router

import (
	"net/http"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/hopproxy/hop/pkg/filter"
	routes "github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// restoreConnectPort appends the port the connection manager stripped from
// a CONNECT's authority, unless the authority (rewritten meanwhile) has a
// port again, as Envoy's finalizeRequestHeaders does.
func restoreConnectPort(s *filter.Stream) {
	port := s.Env.OriginalConnectPort(s)
	if port == "" || hasPort(s.Req.Host) {
		return
	}
	s.Req.Host += ":" + port
}

// hasPort reports whether an authority ends with a port ("[::1]:80" does,
// "[::1]" and "example.com" do not).
func hasPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	return i >= 0 && i > strings.LastIndexByte(host, ']')
}

// terminates reports whether the route terminates the request as raw TCP
// (route upgrade_configs CONNECT with connect_config, envoy-semantics.md
// §3.3): an accepted CONNECT, or a POST when allow_post is set — on every
// protocol; over HTTP/1.1 the POST's body, de-framed, is the byte stream.
func terminates(s *filter.Stream, rt *routes.Route) bool {
	cc := rt.ConnectConfig()
	if cc == nil {
		return false
	}
	switch s.Req.Method {
	case http.MethodConnect:
		return s.UpgradeType != ""
	case http.MethodPost:
		return cc.GetAllowPost() && s.UpgradeType == ""
	}
	return false
}

// serveTerminate opens a TCP connection to the routed cluster (an
// ORIGINAL_DST one picks the host from the request's headers, :authority
// included) and hands it to the connection manager as an accepted tunnel:
// the request headers are not sent (a PROXY protocol header is, first,
// with proxy_protocol_config), a 200 goes downstream once the connection
// exists, and whatever the client sent after its request head (early data
// included) is spliced upstream; a request that ended with its headers
// half-closes the upstream at once. A connect failure is Envoy's 503
// local reply (then, on HTTP/2, RST_STREAM(CONNECT_ERROR): see
// upstreamFailure). With reject_connect_request_early_data, a CONNECT
// whose client sent payload before the 200 is answered 400 and the
// upstream connection closed unused.
func (f *routerFilter) serveTerminate(s *filter.Stream, cl *upstream.Cluster, cc *routev3.RouteAction_UpgradeConfig_ConnectConfig) {
	ctx := s.Req.Context()
	early := f.watchEarlyData(s)
	conn, err := cl.Dial(ctx)
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	conn.CountRequest()
	if early && s.Env.EarlyData(s) {
		conn.Close()
		s.LocalReply(http.StatusBadRequest, "", "early_connect_data")
		return
	}
	if pp := cc.GetProxyProtocolConfig(); pp != nil {
		hdr := proxyProtocolHeader(pp.GetVersion(), s.DownstreamRemoteAddress(), s.DownstreamLocalAddress())
		if _, err := conn.Write(hdr); err != nil {
			conn.Close()
			f.upstreamFailure(s, cl, ctx, &tunnel.ResetError{Err: err})
			return
		}
	}
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

// watchEarlyData starts watching for early CONNECT payload when the router
// rejects it, and reports whether it did.
func (f *routerFilter) watchEarlyData(s *filter.Stream) bool {
	if !f.rejectConnectEarlyData || s.Req.Method != http.MethodConnect {
		return false
	}
	s.Env.WatchEarlyData(s)
	return true
}
