package router

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// serveUpgrade forwards an accepted HTTP/1.1 upgrade on a connection of its
// own. Nothing the client sent after the request head is read until the
// upstream answers 101, so the payload is held as Envoy holds it. For
// WebSocket the route timeout bounds the wait for the 101 and stops there;
// other upgrades wait without a bound, as in Envoy.
func (f *routerFilter) serveUpgrade(s *filter.Stream, cl *upstream.Cluster, timeout time.Duration) {
	ctx := s.Req.Context()
	if timeout > 0 && tunnel.IsWebSocket(s.UpgradeType) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := cl.Dial(ctx)
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	conn.CountRequest()
	start := time.Now()
	up, err := tunnel.OpenH1Upgrade(ctx, conn, s.Req)
	if err != nil {
		conn.Close()
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	res := up.Response
	if tunnel.IsUpgradeResponse(res) {
		// StartTunnel owns both connections from here on; a failure there
		// means the downstream is gone and there is nobody to answer.
		_ = s.Env.StartTunnel(s, up)
		return
	}
	defer conn.Close()
	defer res.Body.Close()
	// The upstream refused. The connection manager closes the downstream
	// connection after this answer: it was in upgrade mode.
	if tunnel.IsWebSocket(s.UpgradeType) && res.StatusCode < 400 {
		// Envoy: a non-101 answer below 400 to a WebSocket handshake ends
		// the stream with a local reply that echoes status and headers.
		s.Env.PrepareResponse(s, res.Header)
		h := s.W.Header()
		for k, vs := range res.Header {
			if k == "Content-Length" {
				continue
			}
			h[k] = vs
		}
		s.LocalReply(res.StatusCode, "", "websocket_handshake_unsuccessful")
		return
	}
	// 400 and above (and other upgrade types) pass through as ordinary
	// responses.
	f.writeResponseHead(s, res, start)
	if err := copyBody(s.W, res); err != nil && !errors.Is(err, context.Canceled) {
		panic(http.ErrAbortHandler)
	}
}
