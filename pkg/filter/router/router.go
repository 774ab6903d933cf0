// Package router is envoy.filters.http.router, the terminal HTTP filter: it
// answers direct responses and redirects, picks the route's cluster, and
// forwards the request upstream: an ordinary exchange through the
// cluster's connection pool; an accepted upgrade or CONNECT as a request
// whose stream (or connection) becomes a tunnel once the upstream accepts
// it; or, on a route with connect_config, a CONNECT (or allow_post POST)
// terminated into a TCP connection to the cluster.
package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/filter"
	routes "github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// TypeURL is the typed_config type this filter implements.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// Builder builds the router filter.
type Builder struct{}

func (Builder) TypeURLs() []string { return []string{TypeURL} }
func (Builder) Terminal() bool     { return true }

func (Builder) Compile(m proto.Message) (filter.Factory, error) {
	cfg, ok := m.(*routerv3.Router)
	if !ok {
		return nil, fmt.Errorf("router: unexpected config type %T", m)
	}
	f := &routerFilter{
		suppressEnvoyHeaders:   cfg.GetSuppressEnvoyHeaders(),
		rejectConnectEarlyData: cfg.GetRejectConnectRequestEarlyData().GetValue(),
	}
	return func(filter.Handler) filter.Handler { return f }, nil
}

// routerFilter is one compiled Router config; immutable.
type routerFilter struct {
	suppressEnvoyHeaders bool
	// rejectConnectEarlyData: a CONNECT whose client sent payload before
	// the response started is answered 400 (reject_connect_request_early_data).
	rejectConnectEarlyData bool
}

func (f *routerFilter) Serve(s *filter.Stream) {
	rt := s.Route
	if rt == nil {
		s.Env.CountNoRoute()
		s.LocalReply(http.StatusNotFound, "", "route_not_found")
		return
	}
	switch rt.Action {
	case routes.ActionDirectResponse:
		s.Env.CountDirectResponse()
		s.LocalReply(int(rt.DirectStatus), rt.DirectBody, "direct_response")
		return
	case routes.ActionRedirect:
		s.Env.CountRedirect()
		scheme := "http"
		if s.Req.TLS != nil {
			scheme = "https"
		}
		status, loc := rt.Redirect(&routes.Request{Method: s.Req.Method, Authority: s.Req.Host, Path: s.Req.URL.RequestURI(), Header: s.Req.Header}, scheme)
		s.W.Header().Set("Location", loc)
		s.LocalReply(status, "", "redirect")
		return
	}
	name := rt.Cluster
	if rt.Action == routes.ActionWeightedClusters {
		name = rt.PickCluster(rand.Uint64())
	}
	cl := s.Env.Cluster(name)
	if cl == nil {
		s.Env.CountNoCluster()
		s.LocalReply(rt.ClusterNotFoundStatus, "", "cluster_not_found")
		return
	}

	// Envoy's finalizeRequestHeaders: header mutations (their formatters
	// see the authority as the connection manager left it), the CONNECT
	// port put back, host rewrite, path rewrite.
	out := s.Req
	rt.MutateRequestHeaders(out.Header, s)
	restoreConnectPort(s)
	if rt.HostRewriteLiteral != "" {
		out.Host = rt.HostRewriteLiteral
	}
	addLBContext(s, cl)
	out = s.Req
	if terminates(s, rt) {
		f.serveTerminate(s, cl, rt.ConnectConfig())
		return
	}
	if uri := rt.RewritePath(out.URL.RequestURI()); uri != out.URL.RequestURI() {
		u, err := url.ParseRequestURI(uri)
		if err == nil {
			out.URL.Path, out.URL.RawPath, out.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
		}
	}
	timeout, _ := s.Env.Timeouts(s)
	if timeout > 0 && !f.suppressEnvoyHeaders {
		out.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	switch {
	case s.UpgradeType != "" && out.Method == http.MethodConnect:
		f.serveConnect(s, cl)
	case s.UpgradeType != "":
		f.serveUpgrade(s, cl, timeout)
	default:
		f.serveHTTP(s, cl, timeout)
	}
}

// serveHTTP forwards an ordinary request through the cluster's pool.
func (f *routerFilter) serveHTTP(s *filter.Stream, cl *upstream.Cluster, timeout time.Duration) {
	ctx := s.Req.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := s.Req.WithContext(ctx)
	u := *s.Req.URL // RoundTrip sets the endpoint in the URL; keep the downstream's intact
	out.URL = &u
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.Close = false
	start := time.Now()
	res, err := cl.RoundTrip(out)
	if err != nil {
		f.upstreamFailure(s, cl, ctx, err)
		return
	}
	defer res.Body.Close()
	f.writeResponseHead(s, res, start)
	if err := copyBody(s.W, res); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cl.CountTimeout()
		}
		// The response has started: the only honest signal left is to
		// abort the downstream stream, as Envoy resets it.
		panic(http.ErrAbortHandler)
	}
	if len(res.Trailer) > 0 {
		for k, vs := range res.Trailer {
			for _, v := range vs {
				s.W.Header().Add(http.TrailerPrefix+k, v)
			}
		}
	}
}

// passResponse answers with an upstream's answer to an upgrade or CONNECT
// that did not open a tunnel, as an ordinary response (head and body),
// then releases the upstream.
func (f *routerFilter) passResponse(s *filter.Stream, up *tunnel.Upstream, start time.Time) {
	defer up.Conn.Close()
	defer up.Response.Body.Close()
	f.writeResponseHead(s, up.Response, start)
	if err := copyBody(s.W, up.Response); err != nil && !errors.Is(err, context.Canceled) {
		panic(http.ErrAbortHandler)
	}
}

func (f *routerFilter) writeResponseHead(s *filter.Stream, res *http.Response, start time.Time) {
	s.Env.PrepareResponse(s, res.Header)
	if !f.suppressEnvoyHeaders {
		res.Header.Set("X-Envoy-Upstream-Service-Time", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
	}
	h := s.W.Header()
	for k, vs := range res.Header {
		h[k] = vs
	}
	if res.ContentLength >= 0 && h.Get("Content-Length") == "" && res.Request.Method != http.MethodHead {
		h.Set("Content-Length", strconv.FormatInt(res.ContentLength, 10))
	}
	s.W.WriteHeader(res.StatusCode)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody streams the body, flushing after each read when the length is
// unknown so server-sent events and long polls are not held back.
func copyBody(w http.ResponseWriter, res *http.Response) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	flush := res.ContentLength < 0
	rc := http.NewResponseController(w)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				rc.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// upstreamFailure answers with Envoy's local reply for a failed upstream
// exchange.
func (f *routerFilter) upstreamFailure(s *filter.Stream, cl *upstream.Cluster, ctx context.Context, err error) {
	if s.Req.Context().Err() != nil {
		return // the downstream went away; nobody to answer
	}
	var ce *upstream.ConnectError
	var ure *upstream.ResetError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		cl.CountTimeout()
		s.LocalReply(http.StatusGatewayTimeout, "upstream request timeout", "upstream_response_timeout")
		return
	case errors.Is(err, errBadAccept):
		s.LocalReply(http.StatusBadGateway, "upstream WebSocket handshake failed: Sec-WebSocket-Accept does not match", "websocket_handshake_unsuccessful")
		return
	case errors.Is(err, upstream.ErrNoHealthyUpstream):
		s.LocalReply(http.StatusServiceUnavailable, "no healthy upstream", "no_healthy_upstream")
		return
	}
	// The upstream failed to connect or reset (Envoy's response flags UF
	// and UC): as Envoy's doEndStream, an HTTP/2 or HTTP/3 CONNECT then
	// gets CONNECT_ERROR (H3_CONNECT_ERROR) after the local reply,
	// upgrades too since they arrived as extended CONNECTs.
	if s.Req.ProtoMajor >= 2 && (s.Req.Method == http.MethodConnect || s.UpgradeType != "") {
		s.Env.EndWithConnectError(s)
	}
	switch {
	case errors.As(err, &ce):
		s.LocalReply(ce.StatusCode(), ce.LocalReplyBody(), "upstream_reset_before_response_started{"+ce.ResetReason+"}")
	case errors.As(err, &ure):
		s.LocalReply(ure.StatusCode(), ure.LocalReplyBody(), "upstream_reset_before_response_started{"+ure.ResetReason+"}")
	default: // tunnel.ResetError and the rest: the connection ended
		s.LocalReply(http.StatusServiceUnavailable, resetBody, "upstream_reset_before_response_started{connection_termination}")
	}
}

const resetBody = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
