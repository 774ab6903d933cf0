// Package hcm is Envoy's HTTP connection manager
// (envoy.filters.network.http_connection_manager): Compile turns its config
// into an immutable Config, a Manager serves requests through the
// connection manager's rules and HTTP filters, and the servers take
// connections from the listener: Server for TCP (HTTP/1.1 through net/http,
// HTTP/2 through golang.org/x/net/http2, by codec_type), H3Server for QUIC
// (HTTP/3 through quic-go). Every request's context carries its
// connection's accounting (connTrack), whatever the protocol.
package hcm

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	_ "github.com/hopproxy/hop/pkg/h2wire/xconnect" // x/net/http2 with RFC 8441 (see the package)
)

// Server serves the TCP connections of one filter chain: HTTP/1.1 through
// net/http and HTTP/2 through golang.org/x/net/http2, chosen per connection
// by codec_type (codec.go). The listener hands it connections, TLS ones
// after their handshake, with ServeConn.
type Server struct {
	// Immutable after NewServer.
	mgr   *Manager
	srv   *http.Server // HTTP/1.1; the BaseConfig of HTTP/2 connections too
	q     *connQueue
	owner any      // tags the tunnels started on this server's connections
	opts  connOpts // what the Config at NewServer fixes per connection

	tracks sync.Map // net.Conn → *connTrack, HTTP/1.1 from ServeConn until close or hijack
	done   chan struct{}

	closing atomic.Bool // Shutdown or Close began: no new connection is served
	mu      sync.Mutex  // guards conns and, with closing, the Add side of wg
	// conns are the connections outside net/http, by the net.Conn
	// ServeConn got: nil while the codec is being sniffed, then the
	// HTTP/2 connection.
	conns map[net.Conn]*h2Conn
	wg    sync.WaitGroup // one per entry of conns
}

// connOpts are the settings of a Config that each connection keeps for its
// life (SameServer compares them).
type connOpts struct {
	codec hcmv3.HttpConnectionManager_CodecType
	h2    h2Options
	cfg   *Config // the Config the server started with (timeouts, limits)
}

// NewServer starts a server for mgr. What net/http and x/net fix per server
// or per connection (header size, header and idle timeouts, codec, HTTP/2
// settings) comes from the Config current now (see SameServer). owner tags
// the tunnels started on the server's connections in the tunnel.Tracker,
// so that the listener that owns the server can cut them when it is
// drained away.
func NewServer(mgr *Manager, log *slog.Logger, owner any) *Server {
	cfg := mgr.Config()
	s := &Server{
		mgr: mgr, q: newConnQueue(), done: make(chan struct{}), owner: owner,
		opts:  connOpts{codec: cfg.codec, h2: cfg.h2, cfg: cfg},
		conns: map[net.Conn]*h2Conn{},
	}
	// HTTP/1.1 only: HTTP/2 never goes through net/http (a TLS connection
	// whose ALPN said h2 is handed over only when the codec is HTTP/1.1).
	var protos http.Protocols
	protos.SetHTTP1(true)
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP1),
		Protocols:         &protos,
		MaxHeaderBytes:    cfg.maxHeaderBytes,
		ReadHeaderTimeout: cfg.headersTimeout,
		IdleTimeout:       cfg.connIdle,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if t, ok := s.tracks.Load(c); ok {
				return context.WithValue(ctx, connTrackKey{}, t.(*connTrack))
			}
			return ctx
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateClosed:
				if t, ok := s.tracks.LoadAndDelete(c); ok {
					t.(*connTrack).end()
				}
			case http.StateHijacked:
				// The tunnel that took the connection releases it.
				s.tracks.Delete(c)
			}
		},
	}
	if log != nil {
		s.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(s.q)
	}()
	return s
}

// Manager returns the connection manager behind the server.
func (s *Server) Manager() *Manager { return s.mgr }

// ServeConn hands an accepted connection to the server; a TLS connection
// (anything with a ConnectionState method) must have done its handshake.
// It does not block on the client: sniffing a cleartext connection's codec
// and serving HTTP/2 happen on the connection's own goroutine. onClose
// runs once when the connection is gone, whoever closed it.
func (s *Server) ServeConn(c net.Conn, onClose func()) {
	cfg := s.mgr.Config()
	alpn, isTLS := negotiatedProtocol(c)
	t := newConnTrack(cfg.stats, onClose, s.owner, isTLS)
	switch s.opts.pick(isTLS, alpn) {
	case pickHTTP1:
		s.serveHTTP1Conn(c, t)
	case pickHTTP2:
		s.goConn(c, t, func() { s.serveHTTP2(c, c, t) })
	default:
		s.goConn(c, t, func() { s.sniff(c, t) })
	}
}

// goConn runs serve for c on a goroutine of the server, unless the server
// is closing.
func (s *Server) goConn(c net.Conn, t *connTrack, serve func()) {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.Close()
		t.end()
		return
	}
	s.conns[c] = nil
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		serve()
	}()
}

// forget removes c from conns.
func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveHTTP1Conn gives c to net/http.
func (s *Server) serveHTTP1Conn(c net.Conn, t *connTrack) {
	t.setCodec(1)
	c = hideALPN(c)
	s.tracks.Store(c, t)
	if !s.q.push(c) {
		s.tracks.Delete(c)
		c.Close()
		t.end()
	}
}

// Shutdown stops taking connections, lets requests in flight finish and
// closes idle connections: net/http's Shutdown for HTTP/1.1; for HTTP/2 a
// graceful GOAWAY, after which x/net closes the connection once its
// streams are done; connections still being sniffed are closed. It
// returns ctx's error when ctx ends first; the caller then calls Close.
// Tunnels of HTTP/1.1 connections are not touched: they belong to the
// tunnel.Tracker. A tunnel on an HTTP/2 stream keeps its connection open
// until it ends or Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for c, h := range s.conns {
		if h == nil {
			c.Close()
		} else {
			h.drain()
		}
	}
	s.mu.Unlock()
	err := s.srv.Shutdown(ctx)
	<-s.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	all := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(all)
	}()
	select {
	case <-all:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// Close closes every connection of the server at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closing.Store(true)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.srv.Close()
	<-s.done
	s.wg.Wait()
}

// connTrack accounts for one downstream connection exactly once: the
// connection stats of its connection manager and the listener's onClose.
// Its codec is set once before the connection is served and read after.
type connTrack struct {
	released atomic.Bool
	st       *hcmStats
	onClose  func()
	owner    any
	ssl      bool // counted in downstream_cx_ssl_*
	codec    int  // 1, 2 or 3 once counted in downstream_cx_http<codec>_*; 0 before
}

// newConnTrack counts a new connection (downstream_cx_total, _active and,
// for TLS, _ssl_*).
func newConnTrack(st *hcmStats, onClose func(), owner any, ssl bool) *connTrack {
	st.cxTotal.Inc()
	st.cxActive.Inc()
	if ssl {
		st.cxSSLTotal.Inc()
		st.cxSSLActive.Inc()
	}
	return &connTrack{st: st, onClose: onClose, owner: owner, ssl: ssl}
}

// setCodec counts the connection as HTTP/<major>.
func (t *connTrack) setCodec(major int) {
	t.codec = major
	switch major {
	case 1:
		t.st.cxHTTP1Total.Inc()
		t.st.cxHTTP1Active.Inc()
	case 2:
		t.st.cxHTTP2Total.Inc()
		t.st.cxHTTP2Active.Inc()
	case 3:
		t.st.cxHTTP3Total.Inc()
		t.st.cxHTTP3Active.Inc()
	}
}

// group is the tunnel group of the connection (nil without a track).
func (t *connTrack) group() any {
	if t == nil {
		return nil
	}
	return t.owner
}

type connTrackKey struct{}

func connTrackFrom(ctx context.Context) *connTrack {
	t, _ := ctx.Value(connTrackKey{}).(*connTrack)
	return t
}

// release is called by the stream that owned the connection (an HTTP/1.1
// upgrade that took it over) when it is done with it. A multiplexed
// connection (HTTP/2, HTTP/3) outlives its streams: for it release does
// nothing and the server ends the accounting.
func (t *connTrack) release() {
	if t == nil || t.codec >= 2 {
		return
	}
	t.end()
}

// end ends the accounting of the connection (once).
func (t *connTrack) end() {
	if t == nil || !t.released.CompareAndSwap(false, true) {
		return
	}
	t.st.cxActive.Dec()
	switch t.codec {
	case 1:
		t.st.cxHTTP1Active.Dec()
	case 2:
		t.st.cxHTTP2Active.Dec()
	case 3:
		t.st.cxHTTP3Active.Dec()
	}
	if t.ssl {
		t.st.cxSSLActive.Dec()
	}
	t.st.cxDestroy.Inc()
	if t.onClose != nil {
		t.onClose()
	}
}

// connQueue is a net.Listener fed by ServeConn.
type connQueue struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }
