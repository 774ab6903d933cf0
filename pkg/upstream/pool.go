package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// maxIdlePerHost bounds the idle keep-alive connections kept per host
// (net/http's default of 2 would close most of them under load). It is
// Envoy's default circuit-breaker max_connections.
const maxIdlePerHost = 1024

// newPool builds h's HTTP/1.1 pool: net/http's Transport, dialling h
// through connect (and the TLS handshake: requests then have the "https"
// scheme, and DialTLSContext does the whole dial). It never proxies (Proxy
// is nil), never asks for gzip, and speaks HTTP/1.1 only. The dial context
// net/http passes is already detached from the request's cancellation (the
// connection may serve a later request); connect still stops at
// connect_timeout or when the cluster is removed.
func (c *Cluster) newPool(h *host) *http.Transport {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dialH1(ctx, h) }
	t := &http.Transport{
		DialContext:            dial,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    maxIdlePerHost,
		IdleConnTimeout:        c.s.idleTimeout,
		MaxResponseHeaderBytes: c.s.maxResponseHeaders,
		Protocols:              protos,
	}
	if c.s.tls != nil {
		t.DialTLSContext = dial
	}
	return t
}

// errNegotiatedH2 reports that a connection dialled for the HTTP/1.1 pool
// of an auto_config cluster negotiated h2; it went to the HTTP/2 pool and
// the request follows it there.
var errNegotiatedH2 = errors.New("upstream: ALPN negotiated h2")

// dialH1 opens a connection for the HTTP/1.1 pool. Under auto_config it
// first takes a connection the HTTP/2 pool handed over, and otherwise
// offers both protocols: an h2 answer moves the connection to the HTTP/2
// pool and fails this dial with errNegotiatedH2.
func (c *Cluster) dialH1(ctx context.Context, h *host) (net.Conn, error) {
	conf := c.s.tlsH1
	if c.s.mode == modeAuto {
		if pc := h.takeHandOff(); pc != nil {
			return pc, nil
		}
		conf = c.s.tlsAuto
	}
	nc, sock, err := c.connect(ctx, h, conf)
	if err != nil {
		return nil, err
	}
	pc := c.newPoolConn(nc, sock, h)
	if c.s.mode == modeAuto {
		if negotiated(nc) == alpnH2 {
			h.alpnH1.Store(false)
			if err := h.h2.add(pc); err != nil {
				return nil, err
			}
			return nil, errNegotiatedH2
		}
		h.alpnH1.Store(true)
	}
	c.st.cxHTTP1.Inc()
	return pc, nil
}

// negotiated is the ALPN protocol of a TLS connection, "" otherwise.
func negotiated(nc net.Conn) string {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.ConnectionState().NegotiatedProtocol
	}
	return ""
}

// poolConn is a pooled connection, HTTP/1.1 or HTTP/2: it counts bytes
// (the plaintext, under TLS), requests (for HTTP/1.1
// max_requests_per_connection) and its own end. It deliberately has no
// ReadFrom, so request bodies are written through Write and counted.
type poolConn struct {
	nc       net.Conn // the *tls.Conn under TLS, else sock
	sock     socket   // TCP, or an internal connection
	c        *Cluster
	h        *host
	requests atomic.Int64 // uses, for max_requests_per_connection
	closed   atomic.Bool
}

func (c *Cluster) newPoolConn(nc net.Conn, sock socket, h *host) *poolConn {
	return &poolConn{nc: nc, sock: sock, c: c, h: h}
}

func (pc *poolConn) Read(b []byte) (int, error) {
	n, err := pc.nc.Read(b)
	pc.c.st.cxRxBytes.Add(uint64(n))
	return n, err
}

func (pc *poolConn) Write(b []byte) (int, error) {
	n, err := pc.nc.Write(b)
	pc.c.st.cxTxBytes.Add(uint64(n))
	return n, err
}

func (pc *poolConn) Close() error {
	if !pc.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := pc.nc.Close()
	pc.c.connClosed(pc.h)
	return err
}

// CloseWrite lets net/http half-close the connection under a 101 body
// (under TLS: a close_notify alert).
func (pc *poolConn) CloseWrite() error {
	if tc, ok := pc.nc.(*tls.Conn); ok {
		return tc.CloseWrite()
	}
	return pc.sock.CloseWrite()
}

func (pc *poolConn) LocalAddr() net.Addr                { return pc.nc.LocalAddr() }
func (pc *poolConn) RemoteAddr() net.Addr               { return pc.nc.RemoteAddr() }
func (pc *poolConn) SetDeadline(t time.Time) error      { return pc.nc.SetDeadline(t) }
func (pc *poolConn) SetReadDeadline(t time.Time) error  { return pc.nc.SetReadDeadline(t) }
func (pc *poolConn) SetWriteDeadline(t time.Time) error { return pc.nc.SetWriteDeadline(t) }

var _ net.Conn = (*poolConn)(nil)
