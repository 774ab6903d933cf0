package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// maxIdlePerHost bounds the idle keep-alive connections kept per host
// (net/http's default of 2 would close most of them under load). It is
// Envoy's default circuit-breaker max_connections.
const maxIdlePerHost = 1024

// newPool builds h's HTTP/1.1 pool: net/http's Transport, dialling h
// through connect. It never proxies (Proxy is nil), never asks for gzip,
// and speaks HTTP/1.1 only. The dial context net/http passes is already
// detached from the request's cancellation (the connection may serve a later
// request); connect still stops at connect_timeout or when the cluster is
// removed.
func (c *Cluster) newPool(h *host) *http.Transport {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			tc, err := c.connect(ctx, h)
			if err != nil {
				return nil, err
			}
			return &poolConn{tc: tc, c: c, h: h}, nil
		},
		DisableCompression:     true,
		MaxIdleConnsPerHost:    maxIdlePerHost,
		IdleConnTimeout:        c.s.idleTimeout,
		MaxResponseHeaderBytes: c.s.maxResponseHeaders,
		Protocols:              protos,
	}
}

// RoundTrip sends an HTTP/1.1 request to a host chosen by the cluster's
// lb_policy, over a pooled keep-alive connection when one is idle.
//
// It sets req.URL.Scheme to "http" and req.URL.Host to the chosen host, and
// may add an empty User-Agent entry to req.Header (how net/http is told not
// to send its own); req.Host, the Host header, is left as given. Callers
// that need the request unchanged must pass a clone. It never follows
// redirects, adds Accept-Encoding or retries on its own; net/http's one
// exception is that it re-sends a request on a new connection when a reused
// keep-alive connection turned out to be closed before the request was
// written (or, for bodiless idempotent requests, closed by the server before
// answering), which Envoy avoids by noticing the close first.
//
// With max_requests_per_connection, the request that uses up a connection
// carries "Connection: close", so the upstream closes it after answering.
//
// Errors: ErrNoHealthyUpstream, *ConnectError, *ResetError, or the
// request context's error (returned as net/http reports it).
// upstream_rq_total counts requests that got a connection;
// upstream_rq_active spans RoundTrip and the response body until it is read
// to the end or closed.
func (c *Cluster) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		return nil, errors.New("upstream: nil Request.URL")
	}
	h, err := c.chooseHost(req.Context())
	if err != nil {
		return nil, err
	}
	req.URL.Scheme = "http"
	req.URL.Host = h.key
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""}
	}
	send := req
	if c.s.maxRequestsPerConn > 0 {
		send = c.limitRequests(req)
	}
	c.st.rqActive.Inc()
	h.rqActive.Add(1)
	resp, err := h.pool.RoundTrip(send)
	if err != nil {
		err = classifyRoundTripError(send, err)
		var ce *ConnectError
		if !errors.As(err, &ce) {
			c.countRequest(h)
		}
		c.requestDone(h)
		return nil, err
	}
	c.countRequest(h)
	if resp.Body == nil || resp.Body == http.NoBody {
		c.requestDone(h)
		return resp, nil
	}
	b := &countedBody{ReadCloser: resp.Body, c: c, h: h}
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok {
		resp.Body = &countedRWBody{countedBody: b, w: rw} // a 101's body is the connection
	} else {
		resp.Body = b
	}
	return resp, nil
}

func (c *Cluster) countRequest(h *host) {
	c.st.rqTotal.Inc()
	h.rqTotal.Add(1)
}

// requestDone ends a request's upstream_rq_active span. For a host that
// left the host set (or whose cluster was retired) it also closes idle
// connections, so that connections returned to its pool afterwards do not
// linger until idle_timeout.
func (c *Cluster) requestDone(h *host) {
	c.st.rqActive.Dec()
	h.rqActive.Add(-1)
	if h.removed.Load() {
		h.pool.CloseIdleConnections()
	}
}

// limitRequests enforces max_requests_per_connection: when the request is
// given the connection's last allowed use, it asks the upstream to close.
// The header map is shared with req, so the caller sees the added token.
func (c *Cluster) limitRequests(req *http.Request) *http.Request {
	limit := int64(c.s.maxRequestsPerConn)
	hdr := req.Header
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		pc, ok := info.Conn.(*poolConn)
		if !ok || pc.requests.Add(1) < limit {
			return
		}
		if v := hdr.Get("Connection"); v != "" {
			hdr.Set("Connection", v+", close")
		} else {
			hdr.Set("Connection", "close")
		}
	}}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

// countedBody ends the request's upstream_rq_active span at EOF, a read
// error, or Close, whichever comes first.
type countedBody struct {
	io.ReadCloser
	c    *Cluster
	h    *host
	done atomic.Bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *countedBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}

func (b *countedBody) finish() {
	if b.done.CompareAndSwap(false, true) {
		b.c.requestDone(b.h)
	}
}

// countedRWBody keeps a 101 Switching Protocols body writable.
type countedRWBody struct {
	*countedBody
	w io.Writer
}

func (b *countedRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// CloseWrite half-closes the upgraded connection, as net/http's 101 body does.
func (b *countedRWBody) CloseWrite() error {
	if cw, ok := b.w.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("upstream: CloseWrite not supported")
}

// poolConn is a pooled connection: it counts bytes, requests (for
// max_requests_per_connection) and its own end. It deliberately has no
// ReadFrom, so request bodies are written through Write and counted.
type poolConn struct {
	tc       *net.TCPConn
	c        *Cluster
	h        *host
	requests atomic.Int64 // uses, for max_requests_per_connection
	closed   atomic.Bool
}

func (pc *poolConn) Read(b []byte) (int, error) {
	n, err := pc.tc.Read(b)
	pc.c.st.cxRxBytes.Add(uint64(n))
	return n, err
}

func (pc *poolConn) Write(b []byte) (int, error) {
	n, err := pc.tc.Write(b)
	pc.c.st.cxTxBytes.Add(uint64(n))
	return n, err
}

func (pc *poolConn) Close() error {
	if !pc.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := pc.tc.Close()
	pc.c.connClosed(pc.h)
	return err
}

// CloseWrite lets net/http half-close the connection under a 101 body.
func (pc *poolConn) CloseWrite() error                  { return pc.tc.CloseWrite() }
func (pc *poolConn) LocalAddr() net.Addr                { return pc.tc.LocalAddr() }
func (pc *poolConn) RemoteAddr() net.Addr               { return pc.tc.RemoteAddr() }
func (pc *poolConn) SetDeadline(t time.Time) error      { return pc.tc.SetDeadline(t) }
func (pc *poolConn) SetReadDeadline(t time.Time) error  { return pc.tc.SetReadDeadline(t) }
func (pc *poolConn) SetWriteDeadline(t time.Time) error { return pc.tc.SetWriteDeadline(t) }

var (
	_ net.Conn           = (*poolConn)(nil)
	_ io.ReadCloser      = (*countedBody)(nil)
	_ io.ReadWriteCloser = (*countedRWBody)(nil)
)
