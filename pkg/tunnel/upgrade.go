package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Envoy keeps every upgrade in HTTP/1.1 form inside the proxy (GET +
// Upgrade + Connection) and translates at the HTTP/2 and HTTP/3 edges
// (envoy-semantics.md §4). FromExtendedConnect is the receiving edge,
// OpenH2Upgrade the sending one.

// ProtocolHeader is the header key under which the HTTP/2 and HTTP/3
// servers hand an extended CONNECT's :protocol to the handler.
const ProtocolHeader = ":protocol"

// FromExtendedConnect turns an HTTP/2 or HTTP/3 extended CONNECT into the
// HTTP/1.1 form and reports whether it did: the method becomes GET, always —
// a POST upgrade that crossed an HTTP/2 hop arrives as GET, as in Envoy —,
// Upgrade is set to :protocol and Connection to "upgrade". `:protocol
// bytestream` is not an upgrade: the request stays a CONNECT. The
// :protocol entry is removed from the header in every case.
func FromExtendedConnect(r *http.Request) bool {
	p := r.Header.Get(ProtocolHeader)
	delete(r.Header, ProtocolHeader)
	if p == "" || r.Method != http.MethodConnect || strings.EqualFold(p, "bytestream") {
		return false
	}
	r.Method = http.MethodGet
	r.Header.Set("Upgrade", p)
	r.Header.Set("Connection", "upgrade")
	return true
}

// OpenH2Upgrade sends req, an upgrade in HTTP/1.1 form, as an extended
// CONNECT through roundTrip (an HTTP/2 client): :protocol is the upgrade
// type, Upgrade and Connection are removed, and a Content-Length of "0" is
// dropped (another is kept, and the HTTP/2 peer then enforces it, as with
// Envoy). The request body is a pipe that the tunnel writes once the
// upstream accepted, so nothing the client sends is forwarded before.
//
// ctx bounds the wait for the response head only (route timeout, client
// gone); the stream itself lives until the returned Upstream's Conn is
// closed. Upstream.Accepted is true for status 200; any other response is
// returned for the caller to pass on, and its Conn must still be closed.
func OpenH2Upgrade(ctx context.Context, roundTrip func(*http.Request) (*http.Response, error), req *http.Request, upgradeType string) (*Upstream, error) {
	out := &http.Request{
		Method:        http.MethodConnect,
		URL:           cloneURL(req),
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        req.Header.Clone(),
		Host:          req.Host,
		ContentLength: -1,
	}
	h := out.Header
	h.Del("Upgrade")
	h.Del("Connection")
	if cl := h.Get("Content-Length"); cl != "" {
		h.Del("Content-Length")
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > 0 {
			out.ContentLength = n
		}
	}
	h.Set(ProtocolHeader, upgradeType)
	return openStream(ctx, roundTrip, out, func(status int) bool { return status == http.StatusOK })
}

// OpenH2Connect sends req, a tunnel request in its wire form, through
// roundTrip (an HTTP/2 client) with a pipe as the stream's body: a plain
// CONNECT (req.Method "CONNECT", req.Host the authority; x/net then sends
// only :method and :authority) or a POST tunnel (req.URL.Path the
// post_path). accept decides from the status whether the stream is the
// tunnel: exactly 200 for tcp_proxy, any 2xx for a proxied CONNECT. ctx
// bounds the wait for the response head, as in OpenH2Upgrade.
func OpenH2Connect(ctx context.Context, roundTrip func(*http.Request) (*http.Response, error), req *http.Request, accept func(status int) bool) (*Upstream, error) {
	out := req.Clone(context.Background())
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/2.0", 2, 0
	out.ContentLength = -1
	out.Header.Del("Content-Length")
	out.Header.Del("Transfer-Encoding")
	out.Header.Del(ProtocolHeader)
	return openStream(ctx, roundTrip, out, accept)
}

// openStream sends out with a fresh pipe's reader as its body and waits
// for the response head; the pipe's writer becomes the tunnel's write side.
func openStream(ctx context.Context, roundTrip func(*http.Request) (*http.Response, error), out *http.Request, accept func(int) bool) (*Upstream, error) {
	pr, pw := io.Pipe()
	sent := make(chan struct{})
	out.Body = &sentBody{ReadCloser: pr, sent: sent}
	// The stream outlives ctx (which bounds only the wait for the answer)
	// but keeps its values: a cluster may choose its host from them.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	out = out.WithContext(sctx)
	stop := context.AfterFunc(ctx, cancel)
	res, err := roundTrip(out)
	stopped := stop()
	if err != nil {
		cancel()
		pw.Close()
		return nil, ctxOr(ctx, err)
	}
	if !stopped {
		// ctx ended while the response arrived: the stream is cancelled.
		res.Body.Close()
		pw.Close()
		return nil, ctx.Err()
	}
	conn := newH2Upstream(pw, res.Body, cancel, sent)
	if res.Request != nil && res.Request.URL != nil {
		conn.remote = addrOf(res.Request.URL.Host)
	}
	return &Upstream{Conn: conn, Response: res, Accepted: accept(res.StatusCode), Protocol: 2}, nil
}

func cloneURL(req *http.Request) *url.URL {
	u := *req.URL
	return &u
}

// NewWebSocketKey returns a fresh Sec-WebSocket-Key (16 random bytes,
// base64) and the Sec-WebSocket-Accept an RFC 6455 server must answer.
func NewWebSocketKey() (key, accept string) {
	var b [16]byte
	rand.Read(b[:])
	key = base64.StdEncoding.EncodeToString(b[:])
	return key, WebSocketAccept(key)
}

// WebSocketAccept is the Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func WebSocketAccept(key string) string {
	h := sha1.New()
	io.WriteString(h, key)
	io.WriteString(h, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
