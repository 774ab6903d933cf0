package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
)

// quicListener is the socket side of a QUIC listener (socket_address
// protocol UDP, udp_listener_config.quic_options): one UDP socket, the
// quic-go Transport on it and the QUIC listener that completes handshakes.
// The filter chain of a connection is chosen on its ClientHello (SNI,
// ALPN, addresses, transport protocol "quic"), which also picks the chain's
// certificate; the established connection goes to that chain's
// hcm.H3Server.
//
// An update of the listener keeps the socket and every connection: new
// handshakes use the new state, and a chain's server is kept or replaced
// as for TCP listeners. It implements net.Listener so that the Manager's
// bookkeeping (Close to stop accepting, Addr) treats it like a TCP
// listener; Accept is not used.
type quicListener struct {
	// Immutable after bindQUICLocked.
	udp  *net.UDPConn
	tr   *quic.Transport
	ln   *quic.Listener
	done chan struct{} // closed when the accept loop has ended

	// state is what handshakes read, lock-free; it is swapped under
	// Manager.mu by updates.
	state atomic.Pointer[quicState]

	closeOnce sync.Once
}

// quicState is one version of a QUIC listener: its config and, per chain,
// the server and the TLS config (ALPN h3) handshakes use.
type quicState struct {
	cfg     *snapshot.Listener
	servers map[*snapshot.FilterChain]*hcm.H3Server
	tls     map[*snapshot.FilterChain]*tls.Config
}

// chainPick carries the server chosen during a connection's handshake to
// the accept loop, in the connection's context.
type chainPick struct{ srv *hcm.H3Server }

type chainPickKey struct{}

// sameSocket reports whether a listener's new config can keep the socket
// of its old one: same address and same protocol (TCP or UDP/QUIC).
func sameSocket(a, b *snapshot.Listener) bool {
	return a.Address == b.Address && (a.QUIC == nil) == (b.QUIC == nil) && a.Internal == b.Internal
}

// bindQUICLocked binds a QUIC listener and starts accepting.
func (m *Manager) bindQUICLocked(l *snapshot.Listener) error {
	ua, err := net.ResolveUDPAddr("udp", l.Address)
	if err != nil {
		return fmt.Errorf("listener %q: bind udp %s: %w", l.Name, l.Address, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("listener %q: bind udp %s: %w", l.Name, l.Address, err)
	}
	sc := m.st.Tagged("listener", l.StatName, "envoy_listener_address")
	a := &active{
		cfg:      l,
		cxTotal:  sc.Counter("downstream_cx_total"),
		cxActive: sc.Gauge("downstream_cx_active"),
		noMatch:  sc.Counter("no_filter_chain_match"),
		cxDestr:  sc.Counter("downstream_cx_destroy"),
		servers:  map[*snapshot.FilterChain]*hcm.Server{},
	}
	q := &quicListener{udp: udp, done: make(chan struct{})}
	q.tr = &quic.Transport{
		Conn: udp,
		ConnContext: func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
			return context.WithValue(ctx, chainPickKey{}, &chainPick{}), nil
		},
	}
	tlsConf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { return q.pickChain(a, h) },
	}
	qc := l.QUIC.Config()
	qc.GetConfigForClient = func(*quic.ClientInfo) (*quic.Config, error) {
		return q.state.Load().cfg.QUIC.Config(), nil
	}
	q.state.Store(m.newQUICState(a, l, nil)) // before the first handshake
	q.ln, err = q.tr.Listen(tlsConf, qc)
	if err != nil {
		q.tr.Close()
		udp.Close()
		return fmt.Errorf("listener %q: quic listen on %s: %w", l.Name, l.Address, err)
	}
	a.ln, a.quic = q, q
	m.active[l.Name] = a
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.quicAcceptLoop(a, q)
	}()
	m.log.Info("listening", "listener", l.Name, "address", udp.LocalAddr().String(), "protocol", "quic")
	return nil
}

// pickChain matches the filter chain of a connection on its ClientHello
// and returns the chain's TLS config. No match fails the handshake.
func (q *quicListener) pickChain(a *active, h *tls.ClientHelloInfo) (*tls.Config, error) {
	st := q.state.Load()
	info := snapshot.ConnInfo{
		ServerName:        h.ServerName,
		TransportProtocol: "quic",
		ALPN:              h.SupportedProtos,
	}
	if h.Conn != nil {
		info.Dst, info.Src = udpAddrPort(h.Conn.LocalAddr()), udpAddrPort(h.Conn.RemoteAddr())
	}
	fc := st.cfg.Match(&info)
	if fc == nil {
		a.cxTotal.Inc()
		a.noMatch.Inc()
		a.cxDestr.Inc()
		return nil, errNoChain
	}
	if p, ok := h.Context().Value(chainPickKey{}).(*chainPick); ok {
		p.srv = st.servers[fc]
	}
	return st.tls[fc], nil
}

var errNoChain = errors.New("listener: no filter chain matches the connection")

// quicAcceptLoop hands established connections to their chain's server
// until the listener is closed.
func (m *Manager) quicAcceptLoop(a *active, q *quicListener) {
	defer close(q.done)
	for {
		c, err := q.ln.Accept(context.Background())
		if err != nil {
			return // closed: quic.ErrServerClosed, or the transport is gone
		}
		p, _ := c.Context().Value(chainPickKey{}).(*chainPick)
		if p == nil || p.srv == nil {
			c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
			continue
		}
		a.cxTotal.Inc()
		a.cxActive.Inc()
		p.srv.ServeQUICConn(c, func() { a.cxActive.Dec(); a.cxDestr.Inc() })
	}
}

// newQUICState makes the servers and TLS configs of l's chains. old, when
// not nil, are the servers of the listener's previous state keyed by
// chainKey: a chain whose key and server settings match takes its server
// over with the new configuration swapped in (and it is removed from old).
// The servers left in old are the caller's to retire.
func (m *Manager) newQUICState(a *active, l *snapshot.Listener, old map[string]*hcm.H3Server) *quicState {
	st := &quicState{cfg: l, servers: map[*snapshot.FilterChain]*hcm.H3Server{}, tls: map[*snapshot.FilterChain]*tls.Config{}}
	add := func(fc *snapshot.FilterChain, key string) {
		st.tls[fc] = http3.ConfigureTLSConfig(fc.TLS)
		if srv := old[key]; srv != nil && hcm.SameServer(srv.Manager().Config(), fc.HCM) {
			delete(old, key)
			srv.Manager().Update(fc.HCM)
			st.servers[fc] = srv
			return
		}
		st.servers[fc] = hcm.NewH3Server(hcm.NewManager(fc.HCM, m.env), m.log, a, m.st)
	}
	for i, fc := range l.Chains {
		add(fc, chainKey(fc, i))
	}
	if l.Default != nil {
		add(l.Default, "default_filter_chain")
	}
	return st
}

// serversByKey indexes the servers of a state by chainKey.
func (s *quicState) serversByKey() map[string]*hcm.H3Server {
	out := map[string]*hcm.H3Server{}
	for i, fc := range s.cfg.Chains {
		out[chainKey(fc, i)] = s.servers[fc]
	}
	if s.cfg.Default != nil {
		out["default_filter_chain"] = s.servers[s.cfg.Default]
	}
	return out
}

// updateQUICLocked moves a QUIC listener to l on the same socket (see
// updateLocked): connections stay on their server; servers of chains
// whose settings changed finish their requests and close.
func (m *Manager) updateQUICLocked(a *active, l *snapshot.Listener) {
	q := a.quic
	old := q.state.Load().serversByKey()
	q.state.Store(m.newQUICState(a, l, old))
	for _, srv := range old {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			ctx, cancel := context.WithTimeout(m.quit, m.drain)
			defer cancel()
			srv.Shutdown(ctx)
		}()
	}
}

// shutdownQUIC shuts the servers of a QUIC listener down: each connection
// gets a GOAWAY, is closed (H3_NO_ERROR) once nothing runs on it, and what
// is left is closed when ctx ends. Then the socket is closed. No-op for a
// TCP listener.
func (a *active) shutdownQUIC(ctx context.Context) {
	q := a.quic
	if q == nil {
		return
	}
	q.Close()
	var wg sync.WaitGroup
	for _, s := range q.state.Load().servers {
		wg.Go(func() { s.Shutdown(ctx) })
	}
	wg.Wait()
	q.tr.Close()
	q.udp.Close()
	<-q.done
}

// Accept is not used: connections of a QUIC listener are accepted by
// quicAcceptLoop.
func (q *quicListener) Accept() (net.Conn, error) {
	return nil, errors.New("listener: a QUIC listener has no net.Conn to accept")
}

// Close stops accepting connections. The socket stays open for the
// connections already established until shutdownQUIC.
func (q *quicListener) Close() error {
	q.closeOnce.Do(func() { q.ln.Close() })
	return nil
}

// Addr is the bound UDP address.
func (q *quicListener) Addr() net.Addr { return q.udp.LocalAddr() }

func udpAddrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
