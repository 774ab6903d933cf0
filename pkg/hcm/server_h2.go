package hcm

import (
	"context"
	"net"
	"net/http"

	"golang.org/x/net/http2"

	"github.com/hopproxy/hop/pkg/h2wire"
)

// h2Conn is one HTTP/2 connection of a Server, served by its own
// http2.Server: x/net reports errors (CountError) per server and starts a
// graceful shutdown only for the connections of a server registered with
// ConfigureServer, so one of each per connection lets hop act on one
// connection. It is created by serveHTTP2 and immutable after.
type h2Conn struct {
	s     *Server
	wire  *h2wire.Conn
	track *connTrack
	cs    *codecStats
	srv   *http2.Server
	// hook's Shutdown starts srv's graceful shutdown (GOAWAY, then close
	// once the streams are done): ConfigureServer registers it there. hook
	// serves nothing.
	hook *http.Server
}

// serveHTTP2 serves an HTTP/2 connection until it closes. key is the
// connection as ServeConn got it (its entry in s.conns), c what to read
// (key, or key with the sniffed preface replayed). It runs on the
// connection's goroutine (goConn).
func (s *Server) serveHTTP2(key, c net.Conn, t *connTrack) {
	defer t.end()
	defer s.forget(key)
	t.setCodec(2)
	o := s.opts.h2
	h := &h2Conn{s: s, track: t, cs: s.mgr.Config().cs}
	h.wire = h2wire.Server(c, h2wire.Options{
		Counters:             h.cs.wire,
		StripExtendedConnect: !o.allowConnect,
		OnFirstWrite:         h.started,
	})
	h.srv = &http2.Server{
		MaxConcurrentStreams:         o.maxConcurrentStreams,
		MaxDecoderHeaderTableSize:    o.hpackTableSize,
		MaxUploadBufferPerConnection: o.connWindow,
		MaxUploadBufferPerStream:     o.streamWindow,
		IdleTimeout:                  s.opts.cfg.connIdle,
		CountError:                   h.countError,
	}
	h.hook = &http.Server{}
	if err := http2.ConfigureServer(h.hook, h.srv); err != nil {
		// Only a TLS cipher list can make it fail, and hook has none.
		c.Close()
		return
	}
	s.mu.Lock()
	s.conns[key] = h // a Shutdown from now on drains it; one before reaches it through started
	s.mu.Unlock()
	ctx := context.WithValue(context.Background(), connTrackKey{}, t)
	ctx = context.WithValue(ctx, h2ConnKey{}, h)
	h.srv.ServeConn(h.wire.Outer(), &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.srv,
		Handler:    h,
	})
}

// h2ConnKey is the context key of a stream's *h2Conn.
type h2ConnKey struct{}

// started runs before the connection's first write, when x/net has
// registered the connection for graceful shutdown: a Shutdown that came
// before could not reach it, so it drains now.
func (h *h2Conn) started() {
	if h.s.closing.Load() {
		h.drain()
	}
}

// drain starts the graceful shutdown of the connection: GOAWAY(NO_ERROR),
// streams in flight finish, then x/net closes it. It does not block.
func (h *h2Conn) drain() {
	h.hook.Shutdown(context.Background()) // hook has no listener nor connection: returns at once
}

// ServeHTTP is the handler of the connection's streams. A request with
// :protocol (extended CONNECT) where allow_connect is off never reaches the
// connection manager: it is an invalid HTTP message, as nghttp2 sees it in
// Envoy (the setting was not advertised).
func (h *h2Conn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header[":protocol"]; ok && !h.s.opts.h2.allowConnect {
		if h.s.opts.h2.streamErrorOnInvalid {
			h.wire.MarkProtocolErrorReset()
		}
		h.invalidMessage()
		// x/net resets a stream whose handler panics with ErrAbortHandler
		// and sends nothing else on it: the documented net/http way to
		// abort a request.
		panic(http.ErrAbortHandler)
	}
	h.cs.streamsActive.Inc()
	defer h.cs.streamsActive.Dec()
	h.s.mgr.ServeHTTP(w, r)
}

// invalidMessage handles an invalid HTTP message as Envoy's HTTP/2 codec
// does: http2.rx_messaging_error; then, unless stream errors are enabled
// (override_stream_error_on_invalid_http_message and the HCM fallback),
// a connection error: downstream_cx_protocol_error, GOAWAY(PROTOCOL_ERROR)
// and close.
func (h *h2Conn) invalidMessage() {
	h.cs.rxMessagingError.Inc()
	if h.s.opts.h2.streamErrorOnInvalid {
		return
	}
	h.cs.cxProtocolError.Inc()
	h.wire.Abort()
}

// countError receives x/net's error tokens ("<conn|stream>_<code>_<what>").
// The stream errors that are HTTP messaging errors to nghttp2 (malformed
// pseudo-headers, authority or path; a body longer than its
// content-length; bad trailers) go through invalidMessage: x/net has reset
// the stream with PROTOCOL_ERROR, Envoy's stream error too.
func (h *h2Conn) countError(token string) {
	switch token {
	case "stream_PROTOCOL_ERROR_bad_connect",
		"stream_PROTOCOL_ERROR_bad_path_method",
		"stream_PROTOCOL_ERROR_bad_path",
		"stream_PROTOCOL_ERROR_authority_host_mismatch",
		"stream_PROTOCOL_ERROR_multiple_host_headers",
		"stream_PROTOCOL_ERROR_userinfo_in_authority",
		"stream_PROTOCOL_ERROR_invalid_authority",
		"stream_PROTOCOL_ERROR_send_too_much",
		"stream_PROTOCOL_ERROR_trailers_pseudo",
		"stream_PROTOCOL_ERROR_trailers_not_ended":
		h.invalidMessage()
	}
}
