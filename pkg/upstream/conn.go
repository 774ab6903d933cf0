package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// connect opens a connection to h within connect_timeout: TCP (or, for an
// internal address, an in-process connection to the internal listener),
// then the TLS handshake when conf is non-nil (the timeout covers both,
// and a handshake failure is a connect failure, as Envoy raises Connected
// only after the handshake). It counts as Envoy does: upstream_cx_total
// and upstream_cx_active from the start of the attempt; on failure
// upstream_cx_connect_fail (and upstream_cx_connect_timeout),
// upstream_cx_destroy, and active drops again.
//
// It returns the connection to use (the *tls.Conn under TLS) and the
// socket below it. The attempt ends early when ctx is done (the error
// wraps ctx.Err() and is not a connect failure) or when the cluster is
// removed.
func (c *Cluster) connect(ctx context.Context, h *host, conf *tls.Config) (net.Conn, socket, error) {
	addr := h.address()
	c.st.cxTotal.Inc()
	c.st.cxActive.Inc()
	h.cxTotal.Add(1)
	h.cxActive.Add(1)

	dctx, cancel := context.WithTimeout(ctx, c.s.connectTimeout)
	stop := context.AfterFunc(c.dialCtx, cancel)
	defer func() {
		stop()
		cancel()
	}()
	var nc net.Conn
	tlsFailed := false
	sock, err := c.dialSocket(dctx, h, addr)
	if err == nil {
		nc = sock
		if conf != nil {
			var tlsc *tls.Conn
			if tlsc, err = c.handshake(dctx, sock, conf); err == nil {
				nc = tlsc
			} else {
				sock.Close()
				tlsFailed = true
			}
		}
	}
	if err == nil {
		return nc, sock, nil
	}
	c.connClosed(h)
	if ctx.Err() != nil {
		return nil, nil, fmt.Errorf("upstream: cluster %q: connect to %s: %w", c.s.name, addr, ctx.Err())
	}
	c.st.cxConnectFail.Inc()
	h.cxFail.Add(1)
	var ce *ConnectError
	switch {
	case c.dialCtx.Err() != nil:
		return nil, nil, &ConnectError{ResetReason: ResetLocalConnectionFailure, Reason: "cluster removed", Host: addr, Err: err}
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		c.st.cxConnectTimeout.Inc()
		return nil, nil, &ConnectError{ResetReason: ResetConnectionTimeout, Host: addr, Err: err}
	case tlsFailed:
		return nil, nil, &ConnectError{ResetReason: ResetRemoteConnectionFailure, Reason: tlsFailureReason(err), Host: addr, Err: err}
	case errors.As(err, &ce):
		return nil, nil, ce
	default:
		return nil, nil, &ConnectError{ResetReason: ResetRemoteConnectionFailure, Reason: transportFailureReason(err), Host: addr, Err: err}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connClosed accounts for the end of a connection, or of a failed attempt.
func (c *Cluster) connClosed(h *host) {
	c.st.cxActive.Dec()
	c.st.cxDestroy.Inc()
	h.cxActive.Add(-1)
}

// Dial opens a new connection to a host chosen by the cluster's
// lb_policy, for an upgrade or a tunnel. These connections are never pooled.
// With an UpstreamTlsContext it is a TLS connection offering only ALPN
// "http/1.1" (an upgrade speaks HTTP/1.1 on it); Conn.TCP is nil then, and
// for an internal address (an in-process connection to an internal
// listener). An ORIGINAL_DST cluster takes the destination from ctx's
// LBContext (WithLBContext).
// It waits for the cluster's first DNS answers (or, for EDS, its first
// SetEndpoints), then for at most
// connect_timeout (or until ctx is done). Errors are ErrNoHealthyUpstream,
// *ConnectError, or ctx's error wrapped.
//
// Dial does not count a request; call Conn.CountRequest when the connection
// carries one (an HTTP upgrade), as opposed to plain TCP proxying.
func (c *Cluster) Dial(ctx context.Context) (*Conn, error) {
	h, err := c.chooseHost(ctx)
	if err != nil {
		return nil, err
	}
	nc, sock, err := c.connect(ctx, h, c.s.tlsDial)
	if err != nil {
		return nil, err
	}
	conn := &Conn{nc: nc, sock: sock, c: c, h: h}
	if tc, ok := sock.(*net.TCPConn); ok && c.s.tlsDial == nil {
		conn.tc = tc
	}
	return conn, nil
}

// Conn is a Dial'ed upstream connection. It implements net.Conn by
// delegating to the socket (TCP, or an internal connection), or to the TLS
// connection over it, and counts as upstream_cx_active until Close. Always
// close it through Conn.Close (not through TCP().Close), or the stats
// never see the end.
type Conn struct {
	// Immutable. nc carries the bytes (the *tls.Conn under TLS); sock is
	// the socket below it; tc is sock when it is TCP without TLS, else nil.
	nc   net.Conn
	sock socket
	tc   *net.TCPConn
	c    *Cluster
	h    *host

	state atomic.Uint32 // connClosed and connCounted bits
}

const (
	connClosedBit  = 1 << iota // Close has run
	connCountedBit             // CountRequest has run
)

// TCP returns the raw connection, so that io.Copy between two
// *net.TCPConn can use splice(2). Use it for I/O only; close the Conn. It
// is nil under TLS, where the bytes must go through the Conn, and for an
// internal connection.
func (c *Conn) TCP() *net.TCPConn { return c.tc }

// HostAddress is the "ip:port" the connection went to, or the internal
// address "envoy://<listener>/<endpoint_id>".
func (c *Conn) HostAddress() string { return c.h.address() }

// CountRequest counts the connection as one upstream request
// (upstream_rq_total, and upstream_rq_active until Close), as Envoy does for
// an upgrade or CONNECT stream. Calls after the first do nothing.
func (c *Conn) CountRequest() {
	for {
		old := c.state.Load()
		if old != 0 { // closed, or already counted
			return
		}
		if c.state.CompareAndSwap(old, connCountedBit) {
			break
		}
	}
	c.c.st.rqTotal.Inc()
	c.c.st.rqActive.Inc()
	c.h.rqTotal.Add(1)
	c.h.rqActive.Add(1)
}

// CountBytes adds bytes received from and sent to the upstream to
// upstream_cx_rx_bytes_total and upstream_cx_tx_bytes_total, for callers
// that copy through TCP() (Conn's own methods do not count, to keep splice).
func (c *Conn) CountBytes(rx, tx int64) {
	if rx > 0 {
		c.c.st.cxRxBytes.Add(uint64(rx))
	}
	if tx > 0 {
		c.c.st.cxTxBytes.Add(uint64(tx))
	}
}

// Close closes the connection. It is idempotent: only the first call
// closes and updates the stats; later calls return nil.
func (c *Conn) Close() error {
	var old uint32
	for {
		old = c.state.Load()
		if old&connClosedBit != 0 {
			return nil
		}
		if c.state.CompareAndSwap(old, old|connClosedBit) {
			break
		}
	}
	err := c.nc.Close()
	c.c.connClosed(c.h)
	if old&connCountedBit != 0 {
		c.c.st.rqActive.Dec()
		c.h.rqActive.Add(-1)
	}
	return err
}

// CloseWrite shuts down the sending side: a FIN to the upstream (or its
// end of an internal connection), or under TLS a close_notify alert.
func (c *Conn) CloseWrite() error {
	if tc, ok := c.nc.(*tls.Conn); ok {
		return tc.CloseWrite()
	}
	return c.sock.CloseWrite()
}

// CloseRead shuts down the reading side of the socket.
func (c *Conn) CloseRead() error { return c.sock.CloseRead() }

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) { return c.nc.Read(b) }

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) { return c.nc.Write(b) }

// ReadFrom implements io.ReaderFrom through the TCP connection, unwrapping
// a *Conn source, so io.Copy into a Conn can splice. Under TLS it copies
// through the TLS connection, and for an internal connection through its
// socket.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rc, ok := r.(*Conn); ok {
		r = rc.nc
	}
	if c.tc == nil {
		return io.Copy(c.nc, r)
	}
	return c.tc.ReadFrom(r)
}

// WriteTo implements io.WriterTo through the TCP connection, unwrapping a
// *Conn destination, so io.Copy out of a Conn can splice. Under TLS it
// copies through the TLS connection, and for an internal connection
// through its socket.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if wc, ok := w.(*Conn); ok {
		w = wc.nc
	}
	if c.tc == nil {
		return io.Copy(w, onlyReader{c.nc})
	}
	return c.tc.WriteTo(w)
}

// onlyReader hides everything but Read, so io.Copy cannot come back to a
// WriteTo.
type onlyReader struct{ io.Reader }

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

var (
	_ net.Conn      = (*Conn)(nil)
	_ io.ReaderFrom = (*Conn)(nil)
	_ io.WriterTo   = (*Conn)(nil)
)
