package router

import (
	"context"
	"net/http"
	"time"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// serveConnect proxies an accepted CONNECT on a route without
// connect_config (envoy-semantics.md §3.2): the CONNECT goes upstream on
// the cluster's protocol — over HTTP/1.1 on a connection of its own
// ("CONNECT <authority> HTTP/1.1", no body framing), over HTTP/2 as a
// plain CONNECT stream (:method and :authority, no :scheme, :path or
// :protocol) — with the headers the connection manager and the route
// left. Nothing the client sends is read until the upstream answers; a
// 2xx (passed on unchanged, 202 stays 202) makes the stream a tunnel and
// the held payload follows, anything else is an ordinary response and the
// payload is never sent. The wait for the answer is not bounded by the
// route timeout, as in Envoy; the client going away ends it.
func (f *routerFilter) serveConnect(s *filter.Stream, cl *upstream.Cluster) {
	ctx := s.Req.Context()
	early := f.watchEarlyData(s)
	start := time.Now()
	var up *tunnel.Upstream
	var err error
	if cl.UpgradeProtocol(s.Req.ProtoMajor) == 2 {
		up, err = tunnel.OpenH2Connect(ctx, cl.RoundTrip, s.Req, tunnel.Is2xx)
	} else {
		up, err = openH1Connect(ctx, cl, s.Req)
	}
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	if early && s.Env.EarlyData(s) {
		up.Conn.Close()
		if up.Response.Body != nil {
			up.Response.Body.Close()
		}
		s.LocalReply(http.StatusBadRequest, "", "early_connect_data")
		return
	}
	if up.Accepted {
		// StartTunnel owns both ends from here on; a failure there means
		// the downstream is gone and there is nobody to answer.
		_ = s.Env.StartTunnel(s, up)
		return
	}
	f.passResponse(s, up, start)
}

// openH1Connect sends the CONNECT on a new HTTP/1.1 connection.
func openH1Connect(ctx context.Context, cl *upstream.Cluster, req *http.Request) (*tunnel.Upstream, error) {
	conn, err := cl.Dial(ctx)
	if err != nil {
		return nil, err
	}
	conn.CountRequest()
	up, err := tunnel.OpenH1Connect(ctx, conn, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return up, nil
}
