package hcm

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/tunnel"
)

// The filter.Env methods for CONNECT: the port taken off a CONNECT's
// authority, and whether the client sent payload before the response
// started (the router's reject_connect_request_early_data).

// EndWithConnectError marks the stream so that LocalReply ends it with a
// reset, as Envoy's stream reset with reason ConnectError does (see
// writeReply).
func (s *stream) EndWithConnectError(fs *filter.Stream) {
	if fs.Req.ProtoMajor >= 2 {
		s.connectErr = true
	}
}

// writeReply writes a local reply's status and body (the headers are set).
// A stream marked by EndWithConnectError is then reset. HTTP/2: the reply
// is flushed, then RST_STREAM(CONNECT_ERROR); x/net resets the stream of
// a handler that panics with http.ErrAbortHandler with INTERNAL_ERROR,
// which the connection's h2wire rewrites (two streams failing at once on
// one connection may trade codes; both are resets either way), so
// writeReply does not return. HTTP/3: the stream is taken over from
// quic-go after the header, the body written on it, then RESET_STREAM and
// STOP_SENDING with H3_CONNECT_ERROR; the client may not see the 503
// (QUIC lets a reset stream's unsent and unread data go), as with Envoy.
func (s *stream) writeReply(fs *filter.Stream, status int, body string) {
	s.rw.WriteHeader(status)
	if fs.Req.Method == http.MethodHead {
		body = ""
	}
	if s.connectErr {
		switch fs.Req.ProtoMajor {
		case 2:
			if h, _ := fs.Req.Context().Value(h2ConnKey{}).(*h2Conn); h != nil {
				s.rw.Write([]byte(body))
				http.NewResponseController(s.rw).Flush()
				h.wire.MarkConnectErrorReset()
				panic(http.ErrAbortHandler)
			}
		case 3:
			if x, ok := s.rw.ResponseWriter.(*h3Exchange); ok && x.resetAfter([]byte(body), h3ConnectError) {
				return
			}
		}
	}
	if body != "" {
		s.rw.Write([]byte(body))
	}
}

// OriginalConnectPort is the port strip_any_host_port or
// strip_matching_host_port removed from the authority of a CONNECT (or of
// an HTTP/2 or HTTP/3 extended CONNECT), which the router appends again
// before the request leaves (Envoy's envoy.router.original_connect_port
// filter state); "" when nothing was removed.
func (s *stream) OriginalConnectPort(*filter.Stream) string { return s.connectPort }

// WatchEarlyData starts watching for payload the client sends before the
// response starts. On HTTP/2 and HTTP/3 the request body gets one read in
// flight at once (its bytes are handed on first, nothing is lost); on
// HTTP/1.1 nothing is needed, EarlyData looks at the socket. Call it once,
// before connecting upstream.
func (s *stream) WatchEarlyData(fs *filter.Stream) {
	if fs.Req.ProtoMajor < 2 || s.early != nil {
		return
	}
	body := fs.Req.Body
	if body == nil || body == http.NoBody {
		return
	}
	s.early = newEarlyBody(body)
	fs.Req.Body = s.early
}

// EarlyData reports whether the client has sent payload that hop holds
// and has not answered yet. HTTP/1.1: bytes behind the request head, read
// by the HTTP server or waiting in the socket (the connection is taken
// over from net/http for that). HTTP/2 and HTTP/3: the read started by
// WatchEarlyData returned bytes.
func (s *stream) EarlyData(fs *filter.Stream) bool {
	if s.early != nil {
		return s.early.arrived()
	}
	if s.raw == nil {
		return false
	}
	down, err := s.raw.conn()
	if err != nil {
		return false
	}
	return len(down.Buffered) > 0 || socketHasData(down.Conn)
}

// earlyBody is a request body with one read started when it is made, so
// that bytes arriving before the response are seen without waiting for
// them. Read (one reader at a time) returns that read's bytes first.
type earlyBody struct {
	rc   io.ReadCloser
	done chan struct{} // closed when the first read returned
	// Written by the first read before done is closed, then owned by the
	// reader.
	buf []byte
	err error
}

func newEarlyBody(rc io.ReadCloser) *earlyBody {
	b := &earlyBody{rc: rc, done: make(chan struct{}), buf: make([]byte, 16<<10)}
	go b.first()
	return b
}

func (b *earlyBody) first() {
	defer close(b.done)
	n, err := b.rc.Read(b.buf)
	b.buf, b.err = b.buf[:n], err
}

// arrived reports whether the first read has returned bytes.
func (b *earlyBody) arrived() bool {
	select {
	case <-b.done:
		return len(b.buf) > 0
	default:
		return false
	}
}

// takeFirst waits for the first read and copies what is left of its bytes
// into p. ok is false once they are all handed out and its error (if
// any) returned.
func (b *earlyBody) takeFirst(p []byte) (n int, err error, ok bool) {
	<-b.done
	if len(b.buf) > 0 {
		n = copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil, true
	}
	if b.err != nil {
		return 0, b.err, true
	}
	return 0, nil, false
}

func (b *earlyBody) Read(p []byte) (int, error) {
	if n, err, ok := b.takeFirst(p); ok {
		return n, err
	}
	return b.rc.Read(p)
}

// Close ends the body; a first read still waiting returns.
func (b *earlyBody) Close() error { return b.rc.Close() }

// h3EarlyConn is the downstream end of an HTTP/3 tunnel whose request body
// was watched: the bytes of the watching read come before the stream's.
type h3EarlyConn struct {
	*tunnel.H3Downstream
	early *earlyBody
}

func (c *h3EarlyConn) Read(p []byte) (int, error) {
	if n, err, ok := c.early.takeFirst(p); ok {
		return n, err
	}
	return c.H3Downstream.Read(p)
}

// socketHasData reports whether bytes wait to be read on the socket under
// c, without reading them (MSG_PEEK). It is false when there is no socket
// to look at.
func socketHasData(c net.Conn) bool {
	for {
		switch u := c.(type) {
		case *tls.Conn:
			c = u.NetConn()
			continue
		case tlsNoALPN:
			c = u.Conn.NetConn()
			continue
		case *net.TCPConn:
			return peekSocket(u)
		case tunnel.Unwrapper:
			if tc := u.TCP(); tc != nil {
				return peekSocket(tc)
			}
		}
		return false
	}
}
