package hcm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// Env is what every Manager shares with the rest of the data plane.
type Env struct {
	Clusters *upstream.Manager
	Tunnels  *tunnel.Tracker
	Log      *slog.Logger
}

// stream is one request. It implements filter.Env for its own Stream; it
// belongs to the goroutine serving the request until a tunnel takes over.
type stream struct {
	filter.Stream
	cfg *Config
	mgr *Manager
	rw  *responseWriter

	raw *rawWriter // the writer of an upgrade request (nil otherwise)

	// connectPort is the port strip_any_host_port or
	// strip_matching_host_port took off a CONNECT's authority, for the
	// router to put back (OriginalConnectPort); "" otherwise.
	connectPort string
	connectErr  bool // EndWithConnectError: the local reply ends in a reset
	// early watches an HTTP/2 or HTTP/3 request body for bytes that
	// arrive before the response starts (WatchEarlyData); nil otherwise.
	early *earlyBody

	upgradeCounted bool // downstream_cx_upgrades_active was incremented
	tunnelStarted  bool // a tunnel owns the end-of-stream accounting now
}

// finish does the end-of-stream accounting unless a tunnel took it over.
func (s *stream) finish() {
	if s.tunnelStarted {
		return
	}
	if s.raw != nil && s.raw.finish() {
		s.releaseConn()
	}
	st := s.cfg.stats
	st.rqActive.Dec()
	st.rqCompleted.Inc()
	status := s.rw.status
	if status == 0 {
		status = http.StatusOK
	}
	st.countStatus(status)
	if s.upgradeCounted {
		st.upgradesActive.Dec()
	}
}

func (s *stream) Cluster(name string) *upstream.Cluster {
	if s.mgr.env == nil || s.mgr.env.Clusters == nil {
		return nil
	}
	return s.mgr.env.Clusters.Get(name)
}

func (s *stream) CountNoRoute()        { s.cfg.stats.noRoute.Inc() }
func (s *stream) CountNoCluster()      { s.cfg.stats.noCluster.Inc() }
func (s *stream) CountDirectResponse() { s.cfg.stats.rqDirectResponse.Inc() }
func (s *stream) CountRedirect()       { s.cfg.stats.rqRedir.Inc() }

// Timeouts: the route's timeout, and the route's idle_timeout when set,
// else the HCM stream_idle_timeout.
func (s *stream) Timeouts(fs *filter.Stream) (route, idle time.Duration) {
	idle = s.cfg.streamIdle
	if fs.Route != nil {
		route = fs.Route.Timeout
		if fs.Route.IdleTimeout >= 0 {
			idle = fs.Route.IdleTimeout
		}
	}
	return route, idle
}

// LocalReply answers from hop as Envoy's sendLocalReply does: the status,
// a text/plain body when there is one, content-length, server, and the
// route's response headers.
func (s *stream) LocalReply(fs *filter.Stream, status int, body, details string) {
	h := s.rw.Header()
	if body != "" {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if fs.Route != nil {
		fs.Route.MutateResponseHeaders(h, fs)
	}
	s.finalizeResponse(fs, h)
	if s.mgr.env != nil && s.mgr.env.Log != nil && s.mgr.env.Log.Enabled(context.Background(), slog.LevelDebug) {
		s.mgr.env.Log.Debug("local reply", "status", status, "details", details, "path", fs.Req.URL.Path)
	}
	s.writeReply(fs, status, body)
}

// PrepareResponse applies Envoy's response header rules to an upstream
// response: hop-by-hop headers out (Upgrade and Connection too unless the
// exchange is an upgrade), the route's mutations, and the server header.
func (s *stream) PrepareResponse(fs *filter.Stream, h http.Header) {
	if s.cfg.via != "" {
		appendHeader(h, "Via", s.cfg.via, ", ")
	}
	h.Del("Transfer-Encoding")
	h.Del("Keep-Alive")
	h.Del("Proxy-Connection")
	if fs.UpgradeType == "" || !tunnel.IsUpgrade(h) {
		h.Del("Connection")
		h.Del("Upgrade")
	}
	if fs.Route != nil {
		fs.Route.MutateResponseHeaders(h, fs)
	}
	s.finalizeResponse(fs, h)
}

// finalizeResponse sets the headers every response gets: server, and the
// request id when always_set_request_id_in_response.
func (s *stream) finalizeResponse(fs *filter.Stream, h http.Header) {
	s.setServer(h)
	if s.cfg.alwaysSetReqID {
		if id := fs.Req.Header.Get("X-Request-Id"); id != "" {
			h.Set("X-Request-Id", id)
		}
	}
}

func (s *stream) setServer(h http.Header) {
	switch s.cfg.serverHeader.String() {
	case "PASS_THROUGH":
		return
	case "APPEND_IF_ABSENT":
		if h.Get("Server") != "" {
			return
		}
	}
	h.Set("Server", s.cfg.serverName)
}

// StartTunnel answers the client that the upgrade was accepted and splices
// the stream with the upstream's tunnel. The response head follows Envoy's
// translations (envoy-semantics.md §4.3): an HTTP/1.1 client gets 101 (an
// HTTP/2 upstream's 200 becomes 101 with Upgrade and Connection added); an
// HTTP/2 or HTTP/3 client gets 200 without Upgrade, Connection or a
// Content-Length of "0". A CONNECT is answered with the upstream's 2xx
// itself (202 stays 202; a terminated one with hop's 200), without
// Content-Length or Transfer-Encoding on any protocol
// (envoy-semantics.md §3.2, §3.3). A POST terminated under allow_post is
// answered 200 on its own stream, whatever the protocol: over HTTP/1.1
// the request body (de-chunked) feeds the upstream and the upstream's
// bytes are the chunked response body.
func (s *stream) StartTunnel(fs *filter.Stream, up *tunnel.Upstream) error {
	h := up.Response.Header
	s.PrepareResponse(fs, h)
	connect := fs.Req.Method == http.MethodConnect
	if s.raw != nil {
		// An HTTP/1.1 upgrade or CONNECT: the connection becomes the
		// tunnel.
		if connect {
			h.Del("Upgrade")
			h.Del("Connection")
			h.Del("Content-Length")
			return s.startH1Tunnel(fs, up, up.Response.StatusCode)
		}
		if up.Protocol != 1 {
			h.Set("Upgrade", fs.UpgradeType)
			h.Set("Connection", "upgrade")
		}
		h.Del("Content-Length")
		return s.startH1Tunnel(fs, up, http.StatusSwitchingProtocols)
	}
	status := http.StatusOK
	if connect {
		status = up.Response.StatusCode
	}
	h.Del("Upgrade")
	h.Del("Connection")
	if connect || h.Get("Content-Length") == "0" {
		h.Del("Content-Length")
	}
	dst := s.rw.Header()
	for k, v := range h {
		dst[k] = v
	}
	rc := http.NewResponseController(s.rw)
	if fs.Req.ProtoMajor == 1 {
		// net/http would otherwise drain the request body before the
		// response starts.
		if err := rc.EnableFullDuplex(); err != nil {
			up.Conn.Close()
			return fmt.Errorf("hcm: full duplex: %w", err)
		}
	}
	s.rw.WriteHeader(status)
	s.cfg.stats.countStatus(status)
	s.tunnelStarted = true
	opt := s.tunnelOptions(fs)
	group := connTrackFrom(fs.Req.Context()).group()
	if fs.Req.ProtoMajor == 3 {
		down, err := tunnel.NewH3Downstream(s.rw.ResponseWriter, fs.Req)
		if err != nil {
			up.Conn.Close()
			s.endStream()
			return fmt.Errorf("hcm: take the HTTP/3 stream over: %w", err)
		}
		var dc net.Conn = down
		if s.early != nil {
			dc = &h3EarlyConn{H3Downstream: down, early: s.early}
		}
		s.mgr.env.Tunnels.Go(group, dc, up.Conn, nil, up.Buffered, opt, s.tunnelDone)
		return nil
	}
	// HTTP/2 (and an HTTP/1.1 POST): the stream lives as long as this
	// handler, so the tunnel runs here and the response ends when it
	// returns.
	if err := rc.Flush(); err != nil {
		up.Conn.Close()
		s.endStream()
		return fmt.Errorf("hcm: send the tunnel response: %w", err)
	}
	down := tunnel.NewH2Downstream(s.rw, fs.Req)
	s.tunnelDone(s.mgr.env.Tunnels.Run(group, down, up.Conn, nil, up.Buffered, opt))
	if fs.Req.ProtoMajor == 1 && down.Aborted() {
		// The chunked body must not look complete.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// startH1Tunnel writes the response head on the hijacked HTTP/1.1
// connection of an upgrade or CONNECT (s.raw is set) and splices it with
// the upstream on a tracker goroutine.
func (s *stream) startH1Tunnel(fs *filter.Stream, up *tunnel.Upstream, status int) error {
	down, err := s.raw.conn()
	if err != nil {
		up.Conn.Close()
		return err
	}
	for k, v := range up.Response.Header {
		s.raw.hdr[k] = v
	}
	s.raw.tunnel = true
	s.raw.WriteHeader(status)
	if len(up.Buffered) > 0 {
		s.raw.bw.Write(up.Buffered) // what the upstream sent right behind its 101
	}
	s.rw.status = status
	s.cfg.stats.countStatus(status) // charged when the head is sent, as Envoy does
	if err := s.raw.bw.Flush(); err != nil || s.raw.err != nil {
		up.Conn.Close()
		down.Conn.Close()
		s.tunnelStarted = true // accounted below, not by finish
		s.endStream()
		s.releaseConn()
		return fmt.Errorf("hcm: write upgrade response: %w", errors.Join(err, s.raw.err))
	}
	s.tunnelStarted = true
	track := connTrackFrom(fs.Req.Context())
	s.mgr.env.Tunnels.Go(track.group(), down.Conn, up.Conn, down.Buffered, nil, s.tunnelOptions(fs), func(r tunnel.Result) {
		s.tunnelDone(r)
		track.release()
	})
	return nil
}

// tunnelOptions are the splice options of the stream's tunnel: the route's
// idle_timeout, else the HCM's stream_idle_timeout.
func (s *stream) tunnelOptions(fs *filter.Stream) tunnel.Options {
	_, idle := s.Timeouts(fs)
	return tunnel.Options{IdleTimeout: idle}
}

// tunnelDone does the end-of-stream accounting of a finished tunnel.
func (s *stream) tunnelDone(r tunnel.Result) {
	if r.Cause == tunnel.CauseIdleTimeout {
		s.cfg.stats.rqIdleTimeout.Inc()
	}
	s.endStream()
}

// endStream does the end-of-stream accounting of a stream whose tunnel
// started.
func (s *stream) endStream() {
	st := s.cfg.stats
	if s.upgradeCounted {
		// A POST terminated under allow_post is a tunnel, not an upgrade.
		st.upgradesActive.Dec()
	}
	st.rqActive.Dec()
	st.rqCompleted.Inc()
}

func (s *stream) releaseConn() {
	connTrackFrom(s.Req.Context()).release()
}

// responseWriter records the status sent downstream and lets
// http.ResponseController reach the connection below.
type responseWriter struct {
	http.ResponseWriter
	status int
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController find Hijack and Flush.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
