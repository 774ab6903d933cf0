package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
)

// Downstream is a hijacked HTTP/1.1 connection with the bytes the HTTP
// server had read past the request headers.
type Downstream struct {
	Conn     net.Conn
	Buffered []byte // pipelined payload to replay upstream before splicing
}

// HijackH1 takes the connection of an HTTP/1.1 request over from net/http.
// The bytes already buffered by the server — anything the client sent after
// the request headers — are returned so they can be replayed upstream.
func HijackH1(w http.ResponseWriter) (*Downstream, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("tunnel: hijack: %w", err)
	}
	d := &Downstream{Conn: c}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n) // cannot fail: n bytes are buffered
		d.Buffered = append([]byte(nil), b...)
	}
	return d, nil
}

// Upstream is an upstream connection whose response head has been read.
type Upstream struct {
	Conn     net.Conn
	Response *http.Response
	Buffered []byte // bytes read past the response head; replay downstream
	// Accepted: the upstream took the upgrade (101 from HTTP/1.1, 200 from
	// HTTP/2 or HTTP/3) and Conn is the tunnel. Otherwise Response is an
	// ordinary answer to pass on; its body is read from Response.Body.
	Accepted bool
	Protocol int // the upstream leg's HTTP major version: 1 or 2
}

// OpenH1Upgrade writes req's head (never its body) on conn as an HTTP/1.1
// request and reads the response head. The context bounds the wait for the
// response: when it ends first the connection is closed and ctx.Err() is
// returned. Bytes the upstream sent after its response head are returned in
// Upstream.Buffered. The response body is not read. A 101 is accepted.
func OpenH1Upgrade(ctx context.Context, conn net.Conn, req *http.Request) (*Upstream, error) {
	return openH1(ctx, conn, req, IsUpgradeResponse)
}

// OpenH1Connect is OpenH1Upgrade for a CONNECT (request line
// "CONNECT <req.Host> HTTP/1.1"): any 2xx is accepted and its
// Content-Length or Transfer-Encoding means nothing (Envoy's HTTP/1.1
// client codec switches to raw bytes on a 2xx to CONNECT). Nothing of
// req's body is written; the caller holds its payload until Accepted.
func OpenH1Connect(ctx context.Context, conn net.Conn, req *http.Request) (*Upstream, error) {
	return openH1(ctx, conn, req, func(res *http.Response) bool { return Is2xx(res.StatusCode) })
}

// Is2xx reports a 2xx status, what a CONNECT over HTTP/1.1 needs.
func Is2xx(status int) bool { return status >= 200 && status < 300 }

func openH1(ctx context.Context, conn net.Conn, req *http.Request, accept func(*http.Response) bool) (*Upstream, error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	bw := bufio.NewWriterSize(conn, 2048)
	if err := WriteRequestHead(bw, req); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("tunnel: write upstream request: %w", err))
	}
	// One reader per tunnel (not per message). When accepted it is dropped
	// once its buffered bytes are copied out; otherwise it frames the body.
	br := bufio.NewReaderSize(conn, 4096)
	res, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, ctxOr(ctx, &ResetError{Err: err})
	}
	up := &Upstream{Conn: conn, Response: res, Protocol: 1}
	if accept(res) {
		up.Accepted = true
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			up.Buffered = append([]byte(nil), b...)
		}
		res.Body = http.NoBody
	}
	return up, nil
}

// ResetError reports an upstream connection that failed after it was
// established and before a full response head arrived.
type ResetError struct{ Err error }

func (e *ResetError) Error() string {
	return "tunnel: upstream reset before response: " + e.Err.Error()
}
func (e *ResetError) Unwrap() error { return e.Err }

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// WriteRequestHead writes "METHOD target HTTP/1.1", Host and req.Header.
// Transfer-Encoding is never written: an upgrade's payload is opaque.
func WriteRequestHead(w *bufio.Writer, req *http.Request) error {
	target := req.URL.RequestURI()
	if req.Method == http.MethodConnect {
		target = req.Host
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(req.Host)
	w.WriteString("\r\n")
	writeHeader(w, req.Header, "Transfer-Encoding", "Host")
	_, err := w.WriteString("\r\n")
	return err
}

// WriteResponseHead writes an HTTP/1.1 status line and headers.
// Transfer-Encoding is written only when chunked is true.
func WriteResponseHead(w *bufio.Writer, status int, h http.Header, chunked bool) error {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(status))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\n")
	writeHeader(w, h, "Transfer-Encoding")
	if chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, err := w.WriteString("\r\n")
	return err
}

func writeHeader(w *bufio.Writer, h http.Header, skip ...string) {
	keys := make([]string, 0, len(h))
outer:
	for k := range h {
		for _, s := range skip {
			if k == s {
				continue outer
			}
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}
