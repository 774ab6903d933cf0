package hcm

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// protocolHeader is where every codec hands an extended CONNECT's :protocol
// to the Manager (see tunnel.FromExtendedConnect).
const protocolHeader = ":protocol"

// h3Proto is r.Proto of an HTTP/3 request; quic-go puts the :protocol
// value there instead for an extended CONNECT.
const h3Proto = "HTTP/3.0"

// serveHTTP is the http3.Server's handler: Envoy's HTTP/3 codec checks,
// then the Manager.
func (s *H3Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	hc := h3ConnFrom(r.Context())
	if hc == nil {
		// Not a connection handed over by ServeQUICConn: cannot happen,
		// but never serve a request without its accounting.
		panic(http.ErrAbortHandler)
	}
	if r.Method == http.MethodConnect && r.Proto != h3Proto {
		cfg := s.mgr.Config()
		if !cfg.allowExtendedConnect {
			s.refuseExtendedConnect(w, hc, cfg)
			return
		}
		r.Header[protocolHeader] = []string{r.Proto}
		r.Proto = h3Proto
	}
	hc.streamStart()
	defer hc.streamEnd()
	x := &h3Exchange{w: w, conn: hc, codec: s.codec}
	if r.Body != nil && r.Body != http.NoBody {
		x.body.rc, x.body.x = r.Body, x
		r.Body = &x.body
	}
	s.mgr.ServeHTTP(x, r)
}

// refuseExtendedConnect answers a request carrying :protocol on a
// connection manager without allow_extended_connect as Envoy's HTTP/3 codec
// does (EnvoyQuicServerStream::OnInitialHeadersComplete, details
// invalid_http_header): with override_stream_error_on_invalid_http_message
// (or the HCM's stream_error_on_invalid_http_message) the stream is reset
// (H3_GENERAL_PROTOCOL_ERROR, http3.tx_reset); otherwise the whole
// connection is closed with H3_FRAME_ERROR.
func (s *H3Server) refuseExtendedConnect(w http.ResponseWriter, hc *h3Conn, cfg *Config) {
	if !cfg.h3OverrideStreamError {
		hc.conn.CloseWithError(h3FrameError, "invalid_http_header")
		return
	}
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		panic(http.ErrAbortHandler) // quic-go resets the stream itself
	}
	str, err := hs.HTTPStream()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	str.CancelRead(h3GeneralProtocolError)
	str.CancelWrite(h3GeneralProtocolError)
	s.codec.txReset.Inc()
}

// h3Exchange is the ResponseWriter the Manager gets for an HTTP/3 request,
// with the request body inside: it notices the peer resetting the stream
// (http3.rx_reset: a RESET_STREAM shows on reading the body, a
// STOP_SENDING on writing the response, counted once each as Envoy does),
// and keeps a stream that a tunnel takes over (HTTPStream) counted as
// running on its connection until its write side ends.
type h3Exchange struct {
	w     http.ResponseWriter // quic-go's
	conn  *h3Conn
	codec *h3CodecStats
	body  h3Body

	rxResetRead, rxResetWrite atomic.Bool
}

var (
	_ http.ResponseWriter = (*h3Exchange)(nil)
	_ http3.HTTPStreamer  = (*h3Exchange)(nil)
	_ http3.Settingser    = (*h3Exchange)(nil)
	_ interface {
		FlushError() error
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	} = (*h3Exchange)(nil)
)

// noteReset counts a reset by the peer once per kind.
func (x *h3Exchange) noteReset(err error, seen *atomic.Bool) {
	if err == nil || err == io.EOF {
		return
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote && seen.CompareAndSwap(false, true) {
		x.codec.rxReset.Inc()
	}
}

func (x *h3Exchange) Header() http.Header { return x.w.Header() }

func (x *h3Exchange) WriteHeader(code int) { x.w.WriteHeader(code) }

func (x *h3Exchange) Write(p []byte) (int, error) {
	n, err := x.w.Write(p)
	x.noteReset(err, &x.rxResetWrite)
	return n, err
}

func (x *h3Exchange) Flush() { x.FlushError() }

func (x *h3Exchange) FlushError() error {
	f, ok := x.w.(interface{ FlushError() error })
	if !ok {
		return http.ErrNotSupported
	}
	err := f.FlushError()
	x.noteReset(err, &x.rxResetWrite)
	return err
}

// HTTPStream hands the stream over (to a tunnel). It stays counted as
// running on the connection until its write side ends.
func (x *h3Exchange) HTTPStream() (*http3.Stream, error) {
	hs, ok := x.w.(http3.HTTPStreamer)
	if !ok {
		return nil, http.ErrNotSupported
	}
	str, err := hs.HTTPStream()
	if err != nil {
		return nil, err
	}
	x.conn.streamStart()
	context.AfterFunc(str.Context(), x.conn.streamEnd)
	return str, nil
}

// resetAfter takes the stream over once the response header has been
// set (WriteHeader, no body written), sends the header and body, then
// resets both directions of the stream with code, counted as
// http3.tx_reset. It reports false, having sent nothing, when the stream
// could not be taken over.
func (x *h3Exchange) resetAfter(body []byte, code quic.StreamErrorCode) bool {
	str, err := x.HTTPStream()
	if err != nil {
		return false
	}
	if len(body) > 0 {
		str.Write(body)
	}
	str.CancelRead(code)
	str.CancelWrite(code)
	x.codec.txReset.Inc()
	return true
}

func (x *h3Exchange) ReceivedSettings() <-chan struct{} {
	return x.w.(http3.Settingser).ReceivedSettings()
}

func (x *h3Exchange) Settings() *http3.Settings { return x.w.(http3.Settingser).Settings() }

func (x *h3Exchange) SetReadDeadline(t time.Time) error {
	if d, ok := x.w.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return http.ErrNotSupported
}

func (x *h3Exchange) SetWriteDeadline(t time.Time) error {
	if d, ok := x.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return d.SetWriteDeadline(t)
	}
	return http.ErrNotSupported
}

// Unwrap lets http.ResponseController reach quic-go's writer.
func (x *h3Exchange) Unwrap() http.ResponseWriter { return x.w }

// h3Body is the request body as the Manager reads it.
type h3Body struct {
	rc io.ReadCloser
	x  *h3Exchange
}

func (b *h3Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.x.noteReset(err, &b.x.rxResetRead)
	return n, err
}

func (b *h3Body) Close() error { return b.rc.Close() }
