package hcm

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/hopproxy/hop/pkg/h2wire"
	"github.com/hopproxy/hop/pkg/tunnel"
)

// How a connection's codec is chosen (Envoy's codec_type):
//   - HTTP1: HTTP/1.1, whatever the client offers. An HTTP/2 preface is
//     a malformed HTTP/1.1 request (400).
//   - HTTP2: HTTP/2, with prior knowledge in cleartext, or over TLS
//     whatever ALPN said.
//   - AUTO: over TLS, ALPN "h2" is HTTP/2 and anything else HTTP/1.1; in
//     cleartext, a connection that starts with the HTTP/2 client preface
//     is HTTP/2 and any other HTTP/1.1 (Envoy looks at the first bytes the
//     same way).
//   - HTTP3 belongs to QUIC listeners (server_h3.go); a TCP listener with
//     it is refused when the snapshot is compiled, and served as AUTO
//     here should one get through.
type pick int

const (
	pickHTTP1 pick = iota
	pickHTTP2
	pickSniff
)

func (o *connOpts) pick(isTLS bool, alpn string) pick {
	switch o.codec {
	case hcmv3.HttpConnectionManager_HTTP1:
		return pickHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		return pickHTTP2
	}
	switch {
	case isTLS && alpn == "h2":
		return pickHTTP2
	case isTLS:
		return pickHTTP1
	}
	return pickSniff
}

// negotiatedProtocol returns the ALPN protocol of a TLS connection.
func negotiatedProtocol(c net.Conn) (alpn string, isTLS bool) {
	cs, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return "", false
	}
	return cs.ConnectionState().NegotiatedProtocol, true
}

// hideALPN keeps net/http from switching protocols on a *tls.Conn whose
// ALPN names one (it would hand an "h2" connection to its own HTTP/2 server,
// or close it): with codec_type HTTP1 the connection is HTTP/1.1 whatever
// ALPN said. net/http still sees the TLS state through ConnectionState.
func hideALPN(c net.Conn) net.Conn {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return c
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case "", "http/1.1", "http/1.0":
		return c
	}
	return tlsNoALPN{tc}
}

type tlsNoALPN struct{ *tls.Conn }

// sniffTimeout bounds the wait for a cleartext AUTO connection's first
// bytes: request_headers_timeout when set, else the connection idle
// timeout (Envoy closes a connection that sends nothing at idle_timeout);
// 0 when neither is set.
func (o *connOpts) sniffTimeout() time.Duration {
	if d := o.cfg.headersTimeout; d > 0 {
		return d
	}
	return o.cfg.connIdle
}

// sniff reads the first bytes of a cleartext AUTO connection and serves it
// as HTTP/2 when they are the client preface, as HTTP/1.1 otherwise. The
// bytes read are replayed to the chosen server. A connection that closes
// or times out before it can be told closes.
func (s *Server) sniff(c net.Conn, t *connTrack) {
	if d := s.opts.sniffTimeout(); d > 0 {
		c.SetReadDeadline(time.Now().Add(d))
	}
	buf := make([]byte, len(h2wire.ClientPreface))
	n, h2 := 0, false
	for {
		m, err := c.Read(buf[n:])
		n += m
		if !bytes.HasPrefix([]byte(h2wire.ClientPreface), buf[:n]) {
			break
		}
		if n == len(buf) {
			h2 = true
			break
		}
		if err != nil {
			s.forget(c)
			c.Close()
			t.end()
			return
		}
	}
	c.SetReadDeadline(time.Time{})
	rc := &replayConn{Conn: c, buf: buf[:n]}
	if h2 {
		s.serveHTTP2(c, rc, t)
		return
	}
	s.forget(c)
	s.serveHTTP1Conn(rc, t)
}

// replayConn replays the bytes read while sniffing before reading on.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the connection when the one below can.
func (c *replayConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return net.ErrClosed
}

// TCP hands the raw connection to tunnel.Splice once the replayed bytes
// are consumed (tunnel.Unwrapper).
func (c *replayConn) TCP() *net.TCPConn {
	if len(c.buf) > 0 {
		return nil
	}
	switch u := c.Conn.(type) {
	case *net.TCPConn:
		return u
	case tunnel.Unwrapper:
		return u.TCP()
	}
	return nil
}

var _ tunnel.Unwrapper = (*replayConn)(nil)

// serveHTTP1 is the handler of HTTP/1.1 connections. net/http hands an
// HTTP/2 preface ("PRI * HTTP/2.0") to the handler as a request; Envoy's
// HTTP/1.1 codec takes it for a malformed request and answers 400.
func (s *Server) serveHTTP1(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 {
		s.mgr.Config().cs.cxProtocolError.Inc()
		w.Header().Set("Connection", "close")
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	s.mgr.ServeHTTP(w, r)
}
