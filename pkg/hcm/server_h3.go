package hcm

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hopproxy/hop/pkg/stats"
)

// HTTP/3 error codes (RFC 9114 §8.1) hop sends.
const (
	h3NoError              = 0x100
	h3GeneralProtocolError = 0x101
	h3FrameError           = 0x106
	h3ConnectError         = 0x10f
)

// H3Server is the HTTP/3 server of one filter chain of a QUIC listener. The
// listener owns the UDP socket and the QUIC handshakes and hands each
// established connection over with ServeQUICConn; quic-go's http3.Server
// parses its requests and calls the Manager.
//
// Before a request reaches the Manager, the server applies what Envoy's
// HTTP/3 codec does: an extended CONNECT (RFC 9220) is refused unless
// http3_protocol_options.allow_extended_connect is set, and otherwise handed
// on in the shape every codec uses (r.Header[":protocol"]); the request's
// context carries the connection's *connTrack.
type H3Server struct {
	// Immutable after NewH3Server.
	mgr   *Manager
	srv   *http3.Server
	owner any // tags the tunnels started on this server's connections
	codec *h3CodecStats

	conns    sync.Map    // *quic.Conn → *h3Conn, while served
	draining atomic.Bool // Shutdown began: idle connections are closed

	mu     sync.Mutex // guards closed and the Add side of wg
	closed bool
	wg     sync.WaitGroup // one per connection being served
}

// h3CodecStats are Envoy's HTTP/3 codec stats (http3.*, at the root for
// downstream connections) that hop can observe honestly.
type h3CodecStats struct {
	rxReset, txReset, versionRFCv1 *stats.Counter
}

func newH3CodecStats(st *stats.Store) *h3CodecStats {
	sc := st.Root().Sub("http3")
	return &h3CodecStats{
		rxReset:      sc.Counter("rx_reset"),
		txReset:      sc.Counter("tx_reset"),
		versionRFCv1: sc.Counter("quic_version_rfc_v1"),
	}
}

// NewH3Server returns a server for mgr. The settings quic-go fixes per
// server (header size limit, idle timeout) come from the Config current
// now, as with NewServer (see SameServer). owner tags the tunnels started
// on the server's streams; st holds the http3.* codec stats.
func NewH3Server(mgr *Manager, log *slog.Logger, owner any, st *stats.Store) *H3Server {
	cfg := mgr.Config()
	s := &H3Server{mgr: mgr, owner: owner, codec: newH3CodecStats(st)}
	s.srv = &http3.Server{
		Handler:        http.HandlerFunc(s.serveHTTP),
		MaxHeaderBytes: cfg.maxHeaderBytes,
		IdleTimeout:    cfg.connIdle,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			if v, ok := s.conns.Load(c); ok {
				hc := v.(*h3Conn)
				ctx = context.WithValue(ctx, connTrackKey{}, hc.track)
				return context.WithValue(ctx, h3ConnKey{}, hc)
			}
			return ctx
		},
	}
	if log != nil && log.Enabled(context.Background(), slog.LevelDebug) {
		s.srv.Logger = log // quic-go logs every request at debug level
	}
	return s
}

// Manager returns the connection manager behind the server.
func (s *H3Server) Manager() *Manager { return s.mgr }

// ServeQUICConn serves an established QUIC connection (ALPN h3) on a new
// goroutine until it closes. onClose runs once when it is gone. After
// Shutdown or Close the connection is closed at once (H3_NO_ERROR).
func (s *H3Server) ServeQUICConn(c *quic.Conn, onClose func()) {
	cfg := s.mgr.Config()
	if c.ConnectionState().Version == quic.Version1 {
		s.codec.versionRFCv1.Inc()
	}
	// A QUIC connection is a TLS connection to Envoy (downstream_cx_ssl_*).
	// Its streams never release it (connTrack.release is a no-op for
	// HTTP/3): the accounting ends here when the connection is gone.
	t := newConnTrack(cfg.stats, onClose, s.owner, true)
	t.setCodec(3)
	hc := &h3Conn{conn: c, track: t, srv: s}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.CloseWithError(h3NoError, "")
		t.end()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.conns.Store(c, hc)
	if s.draining.Load() {
		hc.closeWhenIdle()
	}
	go func() {
		defer s.wg.Done()
		// Returns once the connection is closed and every handler on it
		// has returned; a server closed meanwhile leaves it open.
		s.srv.ServeQUICConn(c)
		c.CloseWithError(h3NoError, "")
		s.conns.Delete(c)
		hc.stopTimer()
		t.end()
	}()
}

// Shutdown stops taking connections and sends every connection a GOAWAY:
// requests in flight and tunnels finish, and a connection is closed
// (H3_NO_ERROR) once nothing runs on it. What is still open when ctx ends
// is closed. Tunnels are not cut: they end with their connection, or
// belong to the tunnel.Tracker.
func (s *H3Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.draining.Store(true)
	s.conns.Range(func(_, v any) bool {
		v.(*h3Conn).closeWhenIdle()
		return true
	})
	err := s.srv.Shutdown(ctx) // GOAWAY, then Close when ctx ends
	s.wg.Wait()
	return err
}

// Close closes every connection of the server at once (H3_NO_ERROR).
func (s *H3Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.srv.Close()
	s.wg.Wait()
}

// h3Conn is one HTTP/3 connection being served. Its streams are counted so
// that a draining server can close it as soon as nothing runs on it.
type h3Conn struct {
	conn  *quic.Conn
	track *connTrack
	srv   *H3Server

	mu     sync.Mutex // guards active and linger
	active int        // handlers running and streams taken over by tunnels
	linger *time.Timer
}

type h3ConnKey struct{}

func h3ConnFrom(ctx context.Context) *h3Conn {
	c, _ := ctx.Value(h3ConnKey{}).(*h3Conn)
	return c
}

// streamStart counts a stream as running on the connection.
func (c *h3Conn) streamStart() {
	c.mu.Lock()
	c.active++
	if c.linger != nil {
		c.linger.Stop()
		c.linger = nil
	}
	c.mu.Unlock()
}

// streamEnd ends what streamStart counted.
func (c *h3Conn) streamEnd() {
	c.mu.Lock()
	c.active--
	if c.active == 0 && c.srv.draining.Load() {
		c.armLocked()
	}
	c.mu.Unlock()
}

// closeWhenIdle closes the connection once nothing runs on it.
func (c *h3Conn) closeWhenIdle() {
	c.mu.Lock()
	if c.active == 0 {
		c.armLocked()
	}
	c.mu.Unlock()
}

// armLocked closes the connection after a linger of a few probe timeouts:
// the last response's bytes (and the GOAWAY) leave before the
// CONNECTION_CLOSE, which would otherwise discard what quic-go still
// holds for the stream.
func (c *h3Conn) armLocked() {
	if c.linger != nil {
		return
	}
	cs := c.conn.ConnectionStats()
	pto := cs.SmoothedRTT + 4*cs.MeanDeviation + 25*time.Millisecond
	c.linger = time.AfterFunc(3*pto, func() {
		c.conn.CloseWithError(h3NoError, "")
	})
}

func (c *h3Conn) stopTimer() {
	c.mu.Lock()
	if c.linger != nil {
		c.linger.Stop()
		c.linger = nil
	}
	c.mu.Unlock()
}
