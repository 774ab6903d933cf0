// Package listener binds the sockets of compiled listeners, accepts
// connections, picks each connection's filter chain and hands the connection
// to that chain's server. A connection stays with the chain it was accepted
// on for its whole life.
//
// Internal listeners (Envoy's envoy.bootstrap.internal_listener) have no
// socket: DialInternal makes a kernel socket pair and hands its server end
// to the listener's accept loop, which serves it like an accepted TCP
// connection. pkg/dataplane wires DialInternal into pkg/upstream, so that
// clusters whose endpoints carry an envoy_internal_address reach them.
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
)

// listenerFiltersTimeout is Envoy's default listener_filters_timeout.
const listenerFiltersTimeout = 15 * time.Second

// Manager owns the listening sockets.
type Manager struct {
	log   *slog.Logger
	st    *stats.Store
	env   *hcm.Env
	drain time.Duration // --drain-time-s: how long a removed listener drains
	ms    managerStats
	// quit ends every drain early (removed listeners, replaced servers):
	// Shutdown cancels it when its context ends.
	quit    context.Context
	stopAll context.CancelFunc

	mu       sync.Mutex // guards active and draining
	active   map[string]*active
	draining map[*active]struct{}
	wg       sync.WaitGroup // accept loops, drains and retired servers
}

// managerStats are Envoy's listener_manager.* stats that belong to sockets.
type managerStats struct {
	added, modified, removed, inPlace, createFailure *stats.Counter
	totalActive, totalDraining                       *stats.Gauge
}

// New returns a Manager without listeners. drain is how long a removed
// listener's connections may go on before they are closed (Envoy's
// --drain-time-s).
func New(log *slog.Logger, st *stats.Store, env *hcm.Env, drain time.Duration) *Manager {
	sc := st.Root().Sub("listener_manager")
	quit, stopAll := context.WithCancel(context.Background())
	return &Manager{
		log: log, st: st, env: env, drain: drain, quit: quit, stopAll: stopAll,
		active:   map[string]*active{},
		draining: map[*active]struct{}{},
		ms: managerStats{
			added:         sc.Counter("listener_added"),
			modified:      sc.Counter("listener_modified"),
			removed:       sc.Counter("listener_removed"),
			inPlace:       sc.Counter("listener_in_place_updated"),
			createFailure: sc.Counter("listener_create_failure"),
			totalActive:   sc.Gauge("total_listeners_active"),
			totalDraining: sc.Gauge("total_listeners_draining"),
		},
	}
}

// active is one bound listener. Its servers are keyed by chainKey, so that
// an update finds the server of the "same" chain again.
type active struct {
	ln       net.Listener
	cfg      *snapshot.Listener
	servers  map[*snapshot.FilterChain]*hcm.Server
	cxTotal  *stats.Counter
	cxActive *stats.Gauge
	noMatch  *stats.Counter
	cxDestr  *stats.Counter
	tls      tlsStats // TCP listeners (tls.go)
	// quic is set for a QUIC (UDP) listener, which is also ln; its
	// servers live in quic's state and servers stays empty (quic.go).
	quic *quicListener
}

// Reconcile makes the open listeners those of ls. Listeners are keyed by
// name:
//   - a new name is bound;
//   - a kept name on the same address keeps its socket and its
//     connections; chains whose server settings are unchanged keep their
//     server and get the new configuration for new requests (RDS updates
//     reach existing connections this way); other chains get new servers
//     and the old ones finish their requests and close;
//   - a removed name (or one whose address changed) stops accepting at
//     once and drains: requests in flight finish, idle connections close,
//     and whatever is still open after the drain time, tunnels included,
//     is closed.
//
// Tunnels on kept listeners are never touched. An error binding one
// listener leaves the others in place and is returned.
func (m *Manager) Reconcile(ls []*snapshot.Listener) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]*snapshot.Listener{}
	for _, l := range ls {
		want[l.Name] = l
	}
	for name, a := range m.active {
		if want[name] == nil || !sameSocket(a.cfg, want[name]) {
			a.ln.Close()
			delete(m.active, name)
			m.ms.removed.Inc()
			m.startDrainLocked(a)
		}
	}
	var errs []error
	for _, l := range ls {
		if a, ok := m.active[l.Name]; ok {
			m.updateLocked(a, l)
			continue
		}
		if err := m.bindLocked(l); err != nil {
			m.ms.createFailure.Inc()
			errs = append(errs, err)
			continue
		}
		m.ms.added.Inc()
	}
	m.ms.totalActive.Set(int64(len(m.active)))
	return errors.Join(errs...)
}

// startDrainLocked drains a listener that was removed: its servers shut
// down gracefully; at the drain deadline every connection still open and
// every tunnel accepted on it is closed.
func (m *Manager) startDrainLocked(a *active) {
	m.draining[a] = struct{}{}
	m.ms.totalDraining.Set(int64(len(m.draining)))
	m.log.Info("draining listener", "listener", a.cfg.Name, "drain_time", m.drain)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.quit, m.drain)
		defer cancel()
		a.drainServers(ctx)
		if n := m.env.Tunnels.CloseGroup(a); n > 0 {
			m.log.Info("drain time over: closed tunnels", "listener", a.cfg.Name, "tunnels", n)
		}
		m.mu.Lock()
		delete(m.draining, a)
		m.ms.totalDraining.Set(int64(len(m.draining)))
		m.mu.Unlock()
	}()
}

// drainServers shuts the servers down gracefully and closes what is left
// when ctx ends. It then waits for the listener's tunnels until ctx ends.
func (a *active) drainServers(ctx context.Context) {
	shutdownServers(ctx, a.servers)
	a.shutdownQUIC(ctx)
	<-ctx.Done()
}

// shutdownServers shuts servers down gracefully, all at once, and closes
// what is still open when ctx ends.
func shutdownServers(ctx context.Context, servers map[*snapshot.FilterChain]*hcm.Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Shutdown(ctx); err != nil {
				s.Close()
			}
		}()
	}
	wg.Wait()
}

func (m *Manager) bindLocked(l *snapshot.Listener) error {
	if l.QUIC != nil {
		return m.bindQUICLocked(l)
	}
	var ln net.Listener
	if l.Internal {
		ln = newInternalListener(l.Name)
	} else {
		var err error
		if ln, err = net.Listen("tcp", l.Address); err != nil {
			return fmt.Errorf("listener %q: bind %s: %w", l.Name, l.Address, err)
		}
	}
	sc := m.st.Tagged("listener", l.StatName, "envoy_listener_address")
	a := &active{
		ln:       ln,
		cfg:      l,
		cxTotal:  sc.Counter("downstream_cx_total"),
		cxActive: sc.Gauge("downstream_cx_active"),
		noMatch:  sc.Counter("no_filter_chain_match"),
		cxDestr:  sc.Counter("downstream_cx_destroy"),
		tls:      newTLSStats(sc),
	}
	a.servers = m.newServers(a, l, nil)
	m.active[l.Name] = a
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.acceptLoop(a)
	}()
	m.log.Info("listening", "listener", l.Name, "address", ln.Addr().String())
	return nil
}

// newServers makes the servers of l's chains (tcp_proxy chains have none).
// old, when not nil, are the
// servers of the listener's previous config keyed by chain: a chain whose
// key and server settings match takes the old server over, with the new
// configuration swapped in (the old server is removed from old). The
// servers left in old are the caller's to shut down.
func (m *Manager) newServers(a *active, l *snapshot.Listener, old map[string]*hcm.Server) map[*snapshot.FilterChain]*hcm.Server {
	s := map[*snapshot.FilterChain]*hcm.Server{}
	for i, fc := range l.Chains {
		if fc.HCM != nil {
			s[fc] = m.serverFor(a, fc, chainKey(fc, i), old)
		}
	}
	if l.Default != nil && l.Default.HCM != nil {
		s[l.Default] = m.serverFor(a, l.Default, "default_filter_chain", old)
	}
	return s
}

func (m *Manager) serverFor(a *active, fc *snapshot.FilterChain, key string, old map[string]*hcm.Server) *hcm.Server {
	if srv := old[key]; srv != nil && hcm.SameServer(srv.Manager().Config(), fc.HCM) {
		delete(old, key)
		srv.Manager().Update(fc.HCM)
		return srv
	}
	return hcm.NewServer(hcm.NewManager(fc.HCM, m.env), m.log, a)
}

// chainKey identifies a filter chain across versions of its listener: its
// name, or its position when it has none.
func chainKey(fc *snapshot.FilterChain, i int) string {
	if fc.Name != "" {
		return "name:" + fc.Name
	}
	return "index:" + strconv.Itoa(i)
}

// serversByKey indexes a's servers by chainKey.
func (a *active) serversByKey() map[string]*hcm.Server {
	out := map[string]*hcm.Server{}
	for i, fc := range a.cfg.Chains {
		if srv := a.servers[fc]; srv != nil {
			out[chainKey(fc, i)] = srv
		}
	}
	if srv := a.servers[a.cfg.Default]; a.cfg.Default != nil && srv != nil {
		out["default_filter_chain"] = srv
	}
	return out
}

// updateLocked moves an open listener to a new config on the same socket:
// new connections use the new chains; connections already accepted stay
// on their server, which either serves the new chain's configuration from
// the next request on or, when the server settings changed, finishes its
// requests and closes.
func (m *Manager) updateLocked(a *active, l *snapshot.Listener) {
	if a.cfg == l {
		return
	}
	var old map[string]*hcm.Server
	if a.quic != nil {
		m.updateQUICLocked(a, l) // same UDP socket, H3 servers kept or retired
	} else {
		old = a.serversByKey()
		a.servers = m.newServers(a, l, old)
	}
	prev := a.cfg.Proto
	a.cfg = l
	if prev != l.Proto && !proto.Equal(prev, l.Proto) {
		// Only a change of the Listener resource counts: a listener
		// compiled again for new RDS routes, or sent again unchanged, is
		// no update to Envoy.
		m.ms.modified.Inc()
		if filterChainOnlyChange(prev, l.Proto) {
			m.ms.inPlace.Inc()
		}
	}
	for _, srv := range old {
		m.retireLocked(srv)
	}
}

// retireLocked shuts down a server that a chain no longer uses: its
// requests in flight have the drain time to finish, then their
// connections are closed, as Envoy drains a replaced filter chain.
func (m *Manager) retireLocked(srv *hcm.Server) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(m.quit, m.drain)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}()
}

// filterChainOnlyChange reports whether a and b differ in their filter
// chains alone: Envoy's in-place filter chain update, counted as
// listener_in_place_updated.
func filterChainOnlyChange(a, b *listenerv3.Listener) bool {
	strip := func(l *listenerv3.Listener) *listenerv3.Listener {
		c := proto.Clone(l).(*listenerv3.Listener)
		c.FilterChains, c.DefaultFilterChain = nil, nil
		return c
	}
	return proto.Equal(strip(a), strip(b))
}

func (m *Manager) acceptLoop(a *active) {
	var delay time.Duration
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("accept failed", "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		a.cxTotal.Inc()
		a.cxActive.Inc()
		m.mu.Lock()
		cfg, servers := a.cfg, a.servers
		m.mu.Unlock()
		sc := c.(socketConn) // *net.TCPConn, or an internal connection
		if cfg.SniffTLS || cfg.HasTLS {
			// Reading the ClientHello and the TLS handshake may take a
			// while: not on this loop.
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.dispatch(a, cfg, servers, sc)
			}()
		} else {
			m.dispatch(a, cfg, servers, sc)
		}
	}
}

// socketConn is an accepted connection: a *net.TCPConn, or the server end
// of an internal connection.
type socketConn interface {
	net.Conn
	CloseWrite() error
}

// dispatch picks the filter chain of one connection.
func (m *Manager) dispatch(a *active, cfg *snapshot.Listener, servers map[*snapshot.FilterChain]*hcm.Server, c socketConn) {
	release := func() { a.cxActive.Dec(); a.cxDestr.Inc() }
	info := snapshot.ConnInfo{
		Dst: addrPort(c.LocalAddr()),
		Src: addrPort(c.RemoteAddr()),
	}
	var conn net.Conn = c
	if cfg.SniffTLS || cfg.HasTLS {
		// On its own goroutine: Shutdown's end cuts the wait short.
		stop := context.AfterFunc(m.quit, func() { c.SetDeadline(time.Now()) })
		defer stop()
	}
	if cfg.SniffTLS {
		conn, info.TransportProtocol, info.ServerName, info.ALPN = sniffTLS(c, listenerFiltersTimeout)
	}
	fc := cfg.Match(&info)
	if fc == nil {
		a.noMatch.Inc()
		c.Close()
		release()
		return
	}
	if fc.TLS != nil {
		tc, ok := m.handshake(a, fc, conn)
		if !ok {
			c.Close()
			release()
			return
		}
		conn = tc
	}
	if fc.TCP != nil {
		m.serveTCPProxy(a, fc, conn, info.ServerName, release, !cfg.SniffTLS && !cfg.HasTLS)
		return
	}
	srv := servers[fc]
	srv.ServeConn(conn, release)
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// Addr returns the bound address of a listener by name (useful with port 0).
func (m *Manager) Addr(name string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.active[name]; a != nil {
		return a.ln.Addr()
	}
	return nil
}

// Names lists the open listeners with their bound addresses.
func (m *Manager) Names() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for n, a := range m.active {
		out[n] = a.ln.Addr().String()
	}
	return out
}

// Shutdown closes every listening socket, then lets the HTTP servers finish
// the requests in flight until ctx ends, then closes what is left. Drains
// of removed listeners and replaced servers end by ctx too.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	all := m.active
	m.active = map[string]*active{}
	m.mu.Unlock()
	for _, a := range all {
		a.ln.Close()
	}
	stop := context.AfterFunc(ctx, m.stopAll)
	defer stop()
	var wg sync.WaitGroup
	for _, a := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shutdownServers(ctx, a.servers)
			a.shutdownQUIC(ctx)
		}()
	}
	wg.Wait()
	// Accept loops ended with their sockets; drains and retired servers
	// end by their drain time, or when ctx ends.
	m.wg.Wait()
}
