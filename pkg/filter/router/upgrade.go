package router

import (
	"context"
	"errors"
	"time"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// serveUpgrade forwards an accepted upgrade. Over an HTTP/2 upstream it is
// an extended CONNECT stream on a shared connection; over HTTP/1.1 it is a
// connection of its own. Nothing the client sends after the request head
// is read until the upstream accepts (101 from HTTP/1.1, 200 from HTTP/2),
// so the payload is held as Envoy holds it. For WebSocket the route timeout
// bounds the wait for that answer and stops there; other upgrades wait
// without a bound, as in Envoy.
//
// Beyond Envoy: when an HTTP/2 upstream did not advertise extended CONNECT
// (SETTINGS_ENABLE_CONNECT_PROTOCOL), or auto_config's ALPN chose
// HTTP/1.1, the upgrade is carried over HTTP/1.1 instead of failing.
func (f *routerFilter) serveUpgrade(s *filter.Stream, cl *upstream.Cluster, timeout time.Duration) {
	ctx := s.Req.Context()
	if timeout > 0 && tunnel.IsWebSocket(s.UpgradeType) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	var up *tunnel.Upstream
	var err error
	if cl.UpgradeProtocol(s.Req.ProtoMajor) == 2 {
		up, err = tunnel.OpenH2Upgrade(ctx, cl.RoundTrip, s.Req, s.UpgradeType)
		if errors.Is(err, upstream.ErrExtendedConnectUnsupported) {
			up, err = openH1Upgrade(ctx, s, cl)
		}
	} else {
		up, err = openH1Upgrade(ctx, s, cl)
	}
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	if up.Accepted {
		// StartTunnel owns both ends from here on; a failure there means
		// the downstream is gone and there is nobody to answer.
		_ = s.Env.StartTunnel(s, up)
		return
	}
	res := up.Response
	// The upstream refused. The connection manager closes an HTTP/1.1
	// downstream connection after this answer: it was in upgrade mode.
	if tunnel.IsWebSocket(s.UpgradeType) && res.StatusCode < 400 && up.Protocol == 1 {
		defer up.Conn.Close()
		defer res.Body.Close()
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
	// 400 and above, other upgrade types, and any answer but 200 from an
	// HTTP/2 upstream pass through as ordinary responses.
	f.passResponse(s, up, start)
}

// openH1Upgrade sends the upgrade on a new HTTP/1.1 connection.
//
// Beyond Envoy: a WebSocket that reached hop as an RFC 8441/9220 extended
// CONNECT carries no Sec-WebSocket-Key (those handshakes have none), which
// an RFC 6455 server rejects. hop supplies a fresh key, checks the
// server's Sec-WebSocket-Accept (a mismatch is a 502) and does not pass the
// Accept on to the client, which never expects one.
func openH1Upgrade(ctx context.Context, s *filter.Stream, cl *upstream.Cluster) (*tunnel.Upstream, error) {
	var accept string
	if s.ExtendedConnect && tunnel.IsWebSocket(s.UpgradeType) && s.Req.Header.Get("Sec-WebSocket-Key") == "" {
		var key string
		key, accept = tunnel.NewWebSocketKey()
		s.Req.Header.Set("Sec-WebSocket-Key", key)
		if s.Req.Header.Get("Sec-WebSocket-Version") == "" {
			s.Req.Header.Set("Sec-WebSocket-Version", "13")
		}
	}
	conn, err := cl.Dial(ctx)
	if err != nil {
		return nil, err
	}
	conn.CountRequest()
	up, err := tunnel.OpenH1Upgrade(ctx, conn, s.Req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if accept != "" && up.Accepted {
		if up.Response.Header.Get("Sec-WebSocket-Accept") != accept {
			conn.Close()
			return nil, errBadAccept
		}
		up.Response.Header.Del("Sec-WebSocket-Accept")
	}
	return up, nil
}

// errBadAccept: the HTTP/1.1 WebSocket server answered hop's synthesized
// key with a wrong Sec-WebSocket-Accept.
var errBadAccept = errors.New("router: upstream WebSocket handshake: Sec-WebSocket-Accept does not match the key")
