package tcpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// openH1Post sends req as "POST <path> HTTP/1.1" with a chunked body on
// conn and reads the response head, as Envoy's HTTP/1.1 codec sends a
// use_post tunnel. On a 2xx the tunnel writes chunks and reads the
// response body, framed as the response says (chunked, Content-Length, or
// until the connection closes). ctx bounds the wait for the response head.
func openH1Post(ctx context.Context, conn *upstream.Conn, req *http.Request, path string) (*tunnel.Upstream, error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	bw := bufio.NewWriterSize(conn, 2048)
	bw.WriteString("POST ")
	bw.WriteString(path)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	h := req.Header.Clone()
	h.Del("Host")
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	h.Write(bw)
	bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	err := bw.Flush()
	var res *http.Response
	if err == nil {
		res, err = http.ReadResponse(bufio.NewReaderSize(conn, 4096), req)
	}
	if !stop() {
		if res != nil {
			res.Body.Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, &tunnel.ResetError{Err: err}
	}
	up := &tunnel.Upstream{Conn: conn, Response: res, Protocol: 1}
	if tunnel.Is2xx(res.StatusCode) {
		up.Accepted = true
		up.Conn = &postConn{conn: conn, body: res.Body, bw: bufio.NewWriterSize(conn, postChunkBuffer)}
	}
	return up, nil
}

// postChunkBuffer holds a chunk header, one full copy buffer of the
// splice (32 KiB) and the trailing CRLF, so a chunk is one write.
const postChunkBuffer = 32<<10 + 64

// postConn is an HTTP/1.1 POST tunnel: writes become chunks of the
// request body, reads come from the response body. It deliberately does
// not expose the TCP connection (tunnel.Unwrapper): the bytes are framed.
type postConn struct {
	conn *upstream.Conn
	body io.ReadCloser

	mu       sync.Mutex // guards bw and ended: Write and CloseWrite may race
	bw       *bufio.Writer
	ended    bool // the last chunk was written
	closeMu  sync.Once
	closeErr error
}

func (p *postConn) Read(b []byte) (int, error) { return p.body.Read(b) }

// Write sends b as one chunk.
func (p *postConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return 0, errors.New("tcp_proxy: write after the end of the POST body")
	}
	var size [16]byte
	p.bw.Write(strconv.AppendInt(size[:0], int64(len(b)), 16))
	p.bw.WriteString("\r\n")
	p.bw.Write(b)
	p.bw.WriteString("\r\n")
	if err := p.bw.Flush(); err != nil {
		return 0, fmt.Errorf("tcp_proxy: write POST body: %w", err)
	}
	return len(b), nil
}

// CloseWrite ends the request body (the last chunk) and half-closes the
// connection.
func (p *postConn) CloseWrite() error {
	p.mu.Lock()
	if p.ended {
		p.mu.Unlock()
		return nil
	}
	p.ended = true
	p.bw.WriteString("0\r\n\r\n")
	err := p.bw.Flush()
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.conn.CloseWrite()
}

// Close closes the response body and the connection.
func (p *postConn) Close() error {
	p.closeMu.Do(func() {
		p.body.Close()
		p.closeErr = p.conn.Close()
	})
	return p.closeErr
}

func (p *postConn) LocalAddr() net.Addr                { return p.conn.LocalAddr() }
func (p *postConn) RemoteAddr() net.Addr               { return p.conn.RemoteAddr() }
func (p *postConn) SetDeadline(t time.Time) error      { return p.conn.SetDeadline(t) }
func (p *postConn) SetReadDeadline(t time.Time) error  { return p.conn.SetReadDeadline(t) }
func (p *postConn) SetWriteDeadline(t time.Time) error { return p.conn.SetWriteDeadline(t) }

var _ net.Conn = (*postConn)(nil)
