//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"golang.org/x/net/http2"
)

// fakeCluster is one cluster of the fake hop: a single endpoint reached over
// HTTP/1.1 (proxy) or, when h2, over HTTP/2 with prior knowledge (h2t). Every
// connection it opens counts as cluster.<name>.upstream_cx_total.
type fakeCluster struct {
	name  string
	addr  string
	h2    bool
	stats *fakeStats
	proxy *httputil.ReverseProxy // HTTP/1.1, upgrades included
	h2t   *http2.Transport       // extended CONNECT, for h2
}

func newFakeCluster(name, addr string, h2 bool, st *fakeStats) *fakeCluster {
	c := &fakeCluster{name: name, addr: addr, h2: h2, stats: st}
	st.declare("cluster." + name + ".upstream_cx_total")
	target := &url.URL{Scheme: "http", Host: addr}
	c.proxy = &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) }},
	}
	c.h2t = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			return c.dial(ctx)
		},
	}
	return c
}

// dial opens a connection to the endpoint and counts it.
func (c *fakeCluster) dial(ctx context.Context) (net.Conn, error) {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", c.addr)
	if err == nil {
		c.stats.inc("cluster." + c.name + ".upstream_cx_total")
	}
	return conn, err
}

// serveWebSocketOverH2 takes an HTTP/1.1 WebSocket upgrade and sends it on as
// an extended CONNECT stream (RFC 8441): Upgrade and Connection become
// :protocol, the other headers (the key included) pass through, and a 200
// answer becomes the 101 the client waits for.
func (c *fakeCluster) serveWebSocketOverH2(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	out, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+c.addr+r.URL.RequestURI(), pr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Host = r.Host
	out.Header = r.Header.Clone()
	out.Header.Del("Connection")
	out.Header.Del("Upgrade")
	out.Header[":protocol"] = []string{"websocket"}
	resp, err := c.h2t.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	resp.Header.Write(brw)
	brw.WriteString("\r\n")
	if brw.Flush() != nil {
		return
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		io.Copy(pw, brw.Reader) // client → sidecar; EOF ends the stream
		pw.Close()
	}()
	io.Copy(conn, resp.Body) // sidecar → client
	conn.Close()
	<-up
}

// serveH2WebSocket takes an extended CONNECT stream and sends it on as an
// HTTP/1.1 WebSocket upgrade: GET with Upgrade and Connection, the other
// headers as they came; a 101 answer becomes 200.
func (c *fakeCluster) serveH2WebSocket(w http.ResponseWriter, r *http.Request) {
	conn, err := c.dial(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer conn.Close()
	h := r.Header.Clone()
	delete(h, ":protocol")
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	bw := bufio.NewWriter(conn)
	fmt.Fprintf(bw, "GET %s HTTP/1.1\r\nHost: %s\r\n", r.URL.RequestURI(), r.Host)
	h.Write(bw)
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return
	}
	for k, vv := range resp.Header {
		if k != "Connection" && k != "Upgrade" {
			w.Header()[k] = vv
		}
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	go func() {
		io.Copy(conn, r.Body) // front → echo; END_STREAM half-closes
		conn.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	for { // echo → front, flushed as it comes
		n, err := br.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	// Returning ends the stream, which also ends the copy above.
}
