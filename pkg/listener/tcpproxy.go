package listener

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/tcpproxy"
)

// serveTCPProxy hands a connection of a tcp_proxy chain (after its TLS
// handshake, if any) to the chain's proxy. Connecting upstream may take
// up to the cluster's connect_timeout per attempt, so it never runs on the
// accept loop: onLoop says dispatch was called there. release runs once
// the connection is gone; its tunnel is tagged with the listener, so that
// the end of a drain cuts it.
func (m *Manager) serveTCPProxy(a *active, fc *snapshot.FilterChain, conn net.Conn, release func(), onLoop bool) {
	env := tcpproxy.Env{Clusters: m.env.Clusters, Tunnels: m.env.Tunnels, Log: m.log}
	var info tcpproxy.Downstream
	if fc.TCP.UsesServerName() {
		info.ServerName = serverName(conn)
	}
	if !onLoop {
		fc.TCP.Serve(m.quit, env, a, conn, info, release)
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fc.TCP.Serve(m.quit, env, a, conn, info, release)
	}()
}

// serverName is the SNI of conn's ClientHello: from the handshake of a
// chain that terminates TLS, or, when a tls_inspector read the hello and
// the chain passes TLS through, from the replayed hello bytes (parsed
// again: dispatch's ConnInfo is not handed down here). "" when neither.
func serverName(conn net.Conn) string {
	switch c := conn.(type) {
	case *tls.Conn:
		return c.ConnectionState().ServerName
	case *peekedConn:
		if len(c.buf) == 0 || c.buf[0] != 0x16 {
			return ""
		}
		var name string
		tls.Server(&replayConn{buf: c.buf}, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName
			return nil, errSniffDone
		}}).Handshake()
		return name
	}
	return ""
}

// replayConn is a net.Conn that reads buf and refuses everything else; it
// only feeds the hello parser above.
type replayConn struct {
	buf []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		return 0, errSniffDone
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *replayConn) Write(p []byte) (int, error)      { return 0, errSniffDone }
func (r *replayConn) Close() error                     { return nil }
func (r *replayConn) LocalAddr() net.Addr              { return nil }
func (r *replayConn) RemoteAddr() net.Addr             { return nil }
func (r *replayConn) SetDeadline(time.Time) error      { return nil }
func (r *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (r *replayConn) SetWriteDeadline(time.Time) error { return nil }
