package listener

import (
	"crypto/tls"
	"net"

	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/tcpproxy"
)

// serveTCPProxy hands a connection of a tcp_proxy chain (after its TLS
// handshake, if any) to the chain's proxy. sni is what a tls_inspector read
// from the ClientHello, if anything; a chain that terminates TLS has it from
// its handshake. Connecting upstream may take up to the cluster's
// connect_timeout per attempt, so it never runs on the accept loop: onLoop
// says dispatch was called there. release runs once the connection is
// gone; its tunnel is tagged with the listener, so that the end of a drain
// cuts it.
func (m *Manager) serveTCPProxy(a *active, fc *snapshot.FilterChain, conn net.Conn, sni string, release func(), onLoop bool) {
	env := tcpproxy.Env{Clusters: m.env.Clusters, Tunnels: m.env.Tunnels, Log: m.log}
	info := tcpproxy.Downstream{ServerName: sni}
	if tc, ok := conn.(*tls.Conn); ok {
		info.ServerName = tc.ConnectionState().ServerName
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
