package hcm

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Server is the HTTP/1.1 server of one filter chain. The listener hands it
// connections with ServeConn; net/http parses them and calls the Manager.
type Server struct {
	mgr   *Manager
	srv   *http.Server
	q     *connQueue
	owner any // tags the tunnels started on this server's connections

	tracks sync.Map // net.Conn → *connTrack, from ServeConn until close or hijack
	done   chan struct{}
}

// NewServer starts a server for mgr. Limits that net/http fixes per server
// (header size, header and idle timeouts) come from the Config current now
// (see SameServer). owner tags the tunnels started on the server's
// connections in the tunnel.Tracker, so that the listener that owns the
// server can cut them when it is drained away.
func NewServer(mgr *Manager, log *slog.Logger, owner any) *Server {
	cfg := mgr.Config()
	s := &Server{mgr: mgr, q: newConnQueue(), done: make(chan struct{}), owner: owner}
	s.srv = &http.Server{
		Handler:           mgr,
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
					t.(*connTrack).release()
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

// ServeConn hands an accepted connection to the server. onClose runs once
// when the connection is gone, whether net/http or a tunnel closed it.
func (s *Server) ServeConn(c net.Conn, onClose func()) {
	st := s.mgr.Config().stats
	st.cxTotal.Inc()
	st.cxHTTP1Total.Inc()
	st.cxActive.Inc()
	st.cxHTTP1Active.Inc()
	t := &connTrack{st: st, onClose: onClose, owner: s.owner}
	s.tracks.Store(c, t)
	if !s.q.push(c) {
		s.tracks.Delete(c)
		c.Close()
		t.release()
	}
}

// Shutdown stops taking connections, lets requests in flight finish and
// closes idle keep-alive connections (net/http's Shutdown). Tunnels are not
// touched: they belong to the tunnel.Tracker.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close closes every connection of the server at once.
func (s *Server) Close() {
	s.srv.Close()
	<-s.done
}

// connTrack accounts for one downstream connection exactly once.
type connTrack struct {
	released atomic.Bool
	st       *hcmStats
	onClose  func()
	owner    any
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

func (t *connTrack) release() {
	if t == nil || !t.released.CompareAndSwap(false, true) {
		return
	}
	t.st.cxActive.Dec()
	t.st.cxHTTP1Active.Dec()
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
