package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// RoundTrip sends a request to a host chosen by the cluster's lb_policy,
// over HTTP/1.1 or HTTP/2 as the protocol options say: explicit HTTP/1.1
// (the default) or HTTP/2; use_downstream_protocol_config by
// req.ProtoMajor (2 and 3 go out as HTTP/2); auto_config by what each
// connection's ALPN negotiated. HTTP/1.1 uses a pooled keep-alive
// connection when one is idle; HTTP/2 multiplexes streams over pooled
// connections (see h2Pool).
//
// An extended CONNECT (RFC 8441: req.Method "CONNECT" and a
// req.Header[":protocol"]) always goes out as HTTP/2, on a shared
// connection, with req.Body (typically the caller's pipe) as the stream's
// DATA: closing the pipe's writer ends the request stream (END_STREAM),
// and closing the response body resets the stream. When the cluster
// speaks only HTTP/1.1 for it, the server did not send
// SETTINGS_ENABLE_CONNECT_PROTOCOL, or auto_config's ALPN chose HTTP/1.1,
// the error matches ErrExtendedConnectUnsupported. (Envoy as a client does
// not wait for that setting; x/net does, which makes the fallback
// possible.)
//
// It sets req.URL.Scheme ("http", or "https" under TLS) and req.URL.Host
// to the chosen host, and may add an empty User-Agent entry to req.Header
// (how net/http and x/net are told not to send their own); req.Host, the
// Host header or :authority, is left as given. Callers that need the
// request unchanged must pass a clone. It never follows redirects, adds
// Accept-Encoding or retries on its own; net/http's one exception is that
// it re-sends a request on a new connection when a reused keep-alive
// connection turned out to be closed before the request was written (or,
// for bodiless idempotent requests, closed by the server before
// answering), which Envoy avoids by noticing the close first. HTTP/2
// likewise retries a bodiless request whose connection went away before
// its stream opened.
//
// With max_requests_per_connection, the HTTP/1.1 request that uses up a
// connection carries "Connection: close", so the upstream closes it after
// answering; an HTTP/2 connection takes no new stream after that many and
// closes when its last stream ends.
//
// Errors: ErrNoHealthyUpstream, *ConnectError, *ResetError, an error
// matching ErrExtendedConnectUnsupported, or the request context's error
// (returned as net/http or x/net reports it). upstream_rq_total counts
// requests that got a connection (an HTTP/2 stream each);
// upstream_rq_active spans RoundTrip and the response body until it is
// read to the end or closed.
func (c *Cluster) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		return nil, errors.New("upstream: nil Request.URL")
	}
	h, err := c.chooseHost(req.Context())
	if err != nil {
		return nil, err
	}
	req.URL.Scheme = "http"
	if c.s.tls != nil {
		req.URL.Scheme = "https"
	}
	req.URL.Host = h.urlHost()
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""}
	}
	ext := isExtendedConnect(req)
	switch c.s.mode {
	case modeHTTP1:
		if ext {
			return nil, &extConnectError{reason: "the cluster speaks HTTP/1.1"}
		}
		return c.roundTripH1(req, h)
	case modeDownstream:
		if !ext && req.ProtoMajor < 2 {
			return c.roundTripH1(req, h)
		}
	case modeAuto:
		// A host whose last connection negotiated HTTP/1.1 is asked again
		// only when a new connection is needed (dialH1 offers both).
		if h.alpnH1.Load() && !h.h2.hasRoom() {
			if ext {
				return nil, &extConnectError{reason: "ALPN negotiated http/1.1"}
			}
			return c.roundTripH1(req, h)
		}
	}
	resp, err := c.roundTripH2(req, h, ext)
	if errors.Is(err, errNegotiatedH1) {
		if ext {
			return nil, &extConnectError{reason: "ALPN negotiated http/1.1"}
		}
		return c.roundTripH1(req, h)
	}
	return resp, err
}

// UpgradeProtocol says which protocol an upgrade (WebSocket and the like)
// should try first for a downstream request of HTTP major version
// downstreamMajor: 2 (an extended CONNECT through RoundTrip, falling back
// to an HTTP/1.1 upgrade through Dial on ErrExtendedConnectUnsupported)
// or 1 (Dial). As Envoy's upstreamHttpProtocol: explicit HTTP/2 and
// auto_config give 2, use_downstream_protocol_config gives 2 for HTTP/2 and
// HTTP/3 downstreams, everything else 1.
func (c *Cluster) UpgradeProtocol(downstreamMajor int) int {
	switch c.s.mode {
	case modeHTTP2, modeAuto:
		return 2
	case modeDownstream:
		if downstreamMajor >= 2 {
			return 2
		}
	}
	return 1
}

// TunnelProtocol says over which HTTP version a tcp_proxy tunnels to this
// cluster, as Envoy's generic connection pool decides from the cluster's
// features: 2 when HTTP/2 options are configured (explicit HTTP/2,
// auto_config, or use_downstream_protocol_config or the deprecated
// protocol_selection with HTTP/2 options; a tcp_proxy has no downstream
// HTTP version to follow), else 1.
func (c *Cluster) TunnelProtocol() int {
	switch c.s.mode {
	case modeHTTP2, modeAuto:
		return 2
	case modeDownstream:
		if c.s.h2Set {
			return 2
		}
	}
	return 1
}

// ErrExtendedConnectUnsupported is matched (errors.Is) by RoundTrip's
// error for an extended CONNECT that the upstream cannot take over HTTP/2.
// Nothing was sent; the caller may carry the upgrade over HTTP/1.1 (Dial).
var ErrExtendedConnectUnsupported = errors.New("upstream: extended CONNECT is not supported by the upstream")

// extConnectError says why an extended CONNECT could not be sent; it
// matches ErrExtendedConnectUnsupported and wraps x/net's error, if any.
type extConnectError struct {
	reason string
	err    error
}

func (e *extConnectError) Error() string {
	return ErrExtendedConnectUnsupported.Error() + ": " + e.reason
}

func (e *extConnectError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrExtendedConnectUnsupported}
	}
	return []error{ErrExtendedConnectUnsupported, e.err}
}

// isExtendedConnect reports an RFC 8441 request, as x/net recognises it.
func isExtendedConnect(req *http.Request) bool {
	return req.Method == http.MethodConnect && len(req.Header[":protocol"]) > 0 && req.Header[":protocol"][0] != ""
}

// roundTripH1 sends req over h's HTTP/1.1 pool.
func (c *Cluster) roundTripH1(req *http.Request, h *host) (*http.Response, error) {
	send := req
	if c.s.maxRequestsPerConn > 0 {
		send = c.limitRequests(req)
	}
	var held *heldBody
	if c.s.mode == modeAuto && req.Body != nil && req.Body != http.NoBody {
		// net/http closes the body when the dial fails; keep it for the
		// HTTP/2 attempt that errNegotiatedH2 calls for.
		held = &heldBody{ReadCloser: req.Body, held: true}
		if send == req {
			cp := *req // shallow, so the header map stays shared
			send = &cp
		}
		send.Body = held
	}
	c.st.rqActive.Inc()
	h.rqActive.Add(1)
	resp, err := h.pool.RoundTrip(send)
	if errors.Is(err, errNegotiatedH2) { // auto_config: the new connection went to the HTTP/2 pool
		held.release(false)
		c.requestDone(h)
		return c.roundTripH2(req, h, false)
	}
	held.release(true)
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
	return c.wrapBody(resp, h, nil), nil
}

// roundTripH2 sends req as a stream over h's HTTP/2 pool.
func (c *Cluster) roundTripH2(req *http.Request, h *host, ext bool) (*http.Response, error) {
	c.st.rqActive.Inc()
	h.rqActive.Add(1)
	hasBody := req.Body != nil && req.Body != http.NoBody
	for attempt := 1; ; attempt++ {
		hc, err := h.h2.get(req.Context(), ext)
		if err != nil {
			c.requestDone(h)
			return nil, err
		}
		end := &streamEnd{p: h.h2, hc: hc}
		send := req
		if hasBody {
			end.pending.Store(2)
			cp := *req // shallow: x/net sees the same request but for the body
			cp.Body = &endBody{ReadCloser: req.Body, end: end}
			send = &cp
		} else {
			end.pending.Store(1)
		}
		resp, err := hc.cc.RoundTrip(send)
		if err == nil {
			c.countRequest(h)
			return c.wrapBody(resp, h, end.done), nil
		}
		end.abort()
		if attempt < maxH2Attempts && streamNeverOpened(err) && !hasBody {
			continue
		}
		err = classifyH2Error(req, err)
		if ext && req.Context().Err() == nil && !errors.Is(err, ErrExtendedConnectUnsupported) && refusedXConnect(hc) {
			// x/net's text changed: what h2wire saw of the server's
			// SETTINGS still tells.
			err = &extConnectError{reason: "the server did not enable SETTINGS_ENABLE_CONNECT_PROTOCOL", err: err}
		}
		var ece *extConnectError
		if !errors.As(err, &ece) {
			c.countRequest(h)
		}
		c.requestDone(h)
		return nil, err
	}
}

// refusedXConnect reports that the server's first SETTINGS arrived without
// SETTINGS_ENABLE_CONNECT_PROTOCOL=1, in which case x/net fails every
// extended CONNECT on the connection before sending it.
func refusedXConnect(hc *h2Conn) bool {
	select {
	case <-hc.w.PeerSettings():
		return !hc.w.PeerExtendedConnect()
	default:
		return false
	}
}

// streamEnd releases a stream's place in the pool once both its halves
// are over: the response body (read to the end or closed) and, when there
// is one, the request body (x/net closes it when it is done sending,
// which is also when it forgets the stream).
type streamEnd struct {
	p       *h2Pool
	hc      *h2Conn
	pending atomic.Int32 // halves still running
	aborted atomic.Bool
}

// done ends one half.
func (e *streamEnd) done() {
	if e.pending.Add(-1) == 0 {
		e.p.release(e.hc)
	}
}

// abort ends the stream at once: RoundTrip failed.
func (e *streamEnd) abort() {
	if e.aborted.CompareAndSwap(false, true) {
		e.pending.Store(0)
		e.p.release(e.hc)
	}
}

// endBody tells the streamEnd when x/net closes the request body.
type endBody struct {
	io.ReadCloser
	end  *streamEnd
	once sync.Once
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		if !b.end.aborted.Load() {
			b.end.done()
		}
	})
	return err
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
		h.closeIdle()
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

// wrapBody makes resp.Body end the request's upstream_rq_active span,
// and call onDone (if not nil) then.
func (c *Cluster) wrapBody(resp *http.Response, h *host, onDone func()) *http.Response {
	if resp.Body == nil || resp.Body == http.NoBody {
		c.requestDone(h)
		if onDone != nil {
			onDone()
		}
		return resp
	}
	b := &countedBody{ReadCloser: resp.Body, c: c, h: h, onDone: onDone}
	if rw, ok := resp.Body.(io.ReadWriteCloser); ok {
		resp.Body = &countedRWBody{countedBody: b, w: rw} // a 101's body is the connection
	} else {
		resp.Body = b
	}
	return resp
}

// heldBody defers Close while held, so that a request body survives an
// attempt that sent nothing.
type heldBody struct {
	io.ReadCloser
	mu     sync.Mutex
	held   bool // guarded by mu
	closed bool // Close was called while held; guarded by mu
}

func (b *heldBody) Close() error {
	b.mu.Lock()
	if b.held {
		b.closed = true
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	return b.ReadCloser.Close()
}

// release ends the held phase; a Close that came during it is carried out
// now if closeNow. A nil b does nothing.
func (b *heldBody) release(closeNow bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.held = false
	closed := b.closed
	b.mu.Unlock()
	if closed && closeNow {
		b.ReadCloser.Close()
	}
}

// countedBody ends the request's upstream_rq_active span at EOF, a read
// error, or Close, whichever comes first.
type countedBody struct {
	io.ReadCloser
	c      *Cluster
	h      *host
	onDone func() // may be nil
	done   atomic.Bool
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
		if b.onDone != nil {
			b.onDone()
		}
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

var (
	_ io.ReadCloser      = (*countedBody)(nil)
	_ io.ReadWriteCloser = (*countedRWBody)(nil)
)
