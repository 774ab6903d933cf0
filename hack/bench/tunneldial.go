//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http2"
)

// tunnel is one established byte stream as the load client sees it: a TCP
// connection (direct, tcph2), the same after an HTTP/1.1 CONNECT
// (h1connect), or an HTTP/2 CONNECT stream (h2connect).
type tunnel interface {
	io.ReadWriter
	// CloseWrite half-closes: a FIN, or END_STREAM on HTTP/2.
	CloseWrite() error
	// Close ends the tunnel cleanly once both directions are done.
	Close() error
	// Abort ends the tunnel at once and unblocks any Read or Write.
	Abort()
}

// dialFunc opens one tunnel; ctx bounds the establishment only.
type dialFunc func(ctx context.Context) (tunnel, error)

// tcpTunnel is a TCP connection; br holds bytes read past a CONNECT
// response head, when there were any.
type tcpTunnel struct {
	*net.TCPConn
	br *bufio.Reader
}

func (t *tcpTunnel) Read(p []byte) (int, error) {
	if t.br != nil {
		return t.br.Read(p)
	}
	return t.TCPConn.Read(p)
}

func (t *tcpTunnel) Abort() { t.TCPConn.Close() }

// dialTCP returns a dialFunc for a plain TCP connection to addr: the direct
// baseline, and tcph2's client side.
func dialTCP(addr string) dialFunc {
	var d net.Dialer
	return func(ctx context.Context) (tunnel, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
		return &tcpTunnel{TCPConn: c.(*net.TCPConn)}, nil
	}
}

// dialH1Connect returns a dialFunc that connects to addr, sends
// "CONNECT authority HTTP/1.1" and waits for a 200.
func dialH1Connect(addr, authority string) dialFunc {
	var d net.Dialer
	head := []byte("CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n\r\n")
	return func(ctx context.Context) (tunnel, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
		tc := c.(*net.TCPConn)
		stop := context.AfterFunc(ctx, func() { tc.Close() })
		br := bufio.NewReaderSize(tc, 1024)
		_, err = tc.Write(head)
		if err == nil {
			err = readConnectHead(br)
		}
		if !stop() {
			tc.Close()
			return nil, fmt.Errorf("bench: CONNECT via %s: %w", addr, context.Cause(ctx))
		}
		if err != nil {
			tc.Close()
			return nil, fmt.Errorf("bench: CONNECT via %s: %w", addr, err)
		}
		t := &tcpTunnel{TCPConn: tc}
		if br.Buffered() > 0 {
			t.br = br
		}
		return t, nil
	}
}

// readConnectHead reads an HTTP/1.1 response head and fails unless its
// status is 200.
func readConnectHead(br *bufio.Reader) error {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("response: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	if _, err := tp.ReadMIMEHeader(); err != nil {
		return fmt.Errorf("response head: %w", err)
	}
	if !strings.HasPrefix(proto, "HTTP/1.") || code != "200" {
		return fmt.Errorf("response %q, want HTTP/1.1 200", line)
	}
	return nil
}

// h2Client opens HTTP/2 CONNECT streams over a fixed set of cleartext
// (prior knowledge) connections, taken round-robin: a new stream per tunnel
// on a kept connection. conns is fixed after newH2Client.
type h2Client struct {
	authority string
	conns     []*http2.ClientConn
	next      atomic.Uint64
}

// newH2Client dials n HTTP/2 connections to addr; ctx bounds the dials.
func newH2Client(ctx context.Context, addr, authority string, n int) (*h2Client, error) {
	c := &h2Client{authority: authority}
	tr := &http2.Transport{AllowHTTP: true}
	var d net.Dialer
	for range n {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
		cc, err := tr.NewClientConn(conn)
		if err != nil {
			conn.Close()
			c.Close()
			return nil, fmt.Errorf("bench: HTTP/2 to %s: %w", addr, err)
		}
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

// Close closes every connection, cutting streams still open.
func (c *h2Client) Close() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

// dial opens a CONNECT stream whose request body is a pipe and waits for a
// 200. The stream lives until the tunnel is closed or aborted; ctx bounds
// the wait for the response head only.
func (c *h2Client) dial(ctx context.Context) (tunnel, error) {
	cc := c.conns[c.next.Add(1)%uint64(len(c.conns))]
	pr, pw := io.Pipe()
	sctx, cancel := context.WithCancel(context.Background())
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Scheme: "http", Host: c.authority},
		Host:          c.authority,
		Header:        http.Header{},
		Body:          pr,
		ContentLength: -1,
	}).WithContext(sctx)
	stop := context.AfterFunc(ctx, cancel)
	resp, err := cc.RoundTrip(req)
	if !stop() {
		err = context.Cause(ctx)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	if err != nil {
		cancel()
		pw.Close()
		if resp != nil {
			resp.Body.Close()
		}
		return nil, fmt.Errorf("bench: HTTP/2 CONNECT %s: %w", c.authority, err)
	}
	return &h2Tunnel{pw: pw, body: resp.Body, cancel: cancel}, nil
}

// h2Tunnel is one CONNECT stream: writes go into the request body, reads
// come from the response body.
type h2Tunnel struct {
	pw     *io.PipeWriter
	body   io.ReadCloser
	cancel context.CancelFunc
}

func (t *h2Tunnel) Read(p []byte) (int, error)  { return t.body.Read(p) }
func (t *h2Tunnel) Write(p []byte) (int, error) { return t.pw.Write(p) }
func (t *h2Tunnel) CloseWrite() error           { return t.pw.Close() }

func (t *h2Tunnel) Close() error {
	t.pw.Close()
	err := t.body.Close()
	t.cancel()
	return err
}

var errAborted = errors.New("bench: tunnel aborted")

func (t *h2Tunnel) Abort() {
	t.cancel()
	t.pw.CloseWithError(errAborted)
	t.body.Close()
}
