package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
)

// defaultHandshakeTimeout bounds a TLS handshake when the filter chain has
// no transport_socket_connect_timeout. Envoy has no bound then; hop keeps
// a stalled client from holding a goroutine forever.
const defaultHandshakeTimeout = 15 * time.Second

// tlsStats are the TLS stats of a listener, Envoy's listener.<name>.ssl.*
// that crypto/tls lets hop observe, and the transport socket timeout.
type tlsStats struct {
	handshake, connError, noCert, reused *stats.Counter
	connectTimeout                       *stats.Counter
}

func newTLSStats(sc stats.Scope) tlsStats {
	ssl := sc.Sub("ssl")
	return tlsStats{
		handshake:      ssl.Counter("handshake"),
		connError:      ssl.Counter("connection_error"),
		noCert:         ssl.Counter("no_certificate"),
		reused:         ssl.Counter("session_reused"),
		connectTimeout: sc.Counter("downstream_cx_transport_socket_connect_timeout"),
	}
}

// handshake runs the TLS handshake of a connection whose chain terminates
// TLS, bounded by the chain's transport_socket_connect_timeout (else
// defaultHandshakeTimeout) and by the manager's quit. conn may replay the
// ClientHello a tls_inspector read. On failure the caller closes the
// connection.
func (m *Manager) handshake(a *active, fc *snapshot.FilterChain, conn net.Conn) (*tls.Conn, bool) {
	d := fc.HandshakeTimeout
	if d <= 0 {
		d = defaultHandshakeTimeout
	}
	ctx, cancel := context.WithTimeout(m.quit, d)
	defer cancel()
	tc := tls.Server(conn, fc.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		switch {
		case m.quit.Err() != nil: // shutting down: not the client's doing
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			a.tls.connectTimeout.Inc()
		default:
			a.tls.connError.Inc()
		}
		m.log.Debug("TLS handshake failed", "listener", a.cfg.Name, "remote", conn.RemoteAddr().String(), "error", err)
		return nil, false
	}
	a.tls.handshake.Inc()
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		a.tls.noCert.Inc()
	}
	if st.DidResume {
		a.tls.reused.Inc()
	}
	return tc, true
}
