// Package listener binds the sockets of compiled listeners, accepts
// connections, picks each connection's filter chain and hands the connection
// to that chain's server. A connection stays with the chain it was accepted
// on for its whole life.
package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
)

// listenerFiltersTimeout is Envoy's default listener_filters_timeout.
const listenerFiltersTimeout = 15 * time.Second

// Manager owns the listening sockets.
type Manager struct {
	log *slog.Logger
	st  *stats.Store
	env *hcm.Env

	mu     sync.Mutex // guards active
	active map[string]*active
	wg     sync.WaitGroup // accept loops
}

// New returns a Manager without listeners.
func New(log *slog.Logger, st *stats.Store, env *hcm.Env) *Manager {
	return &Manager{log: log, st: st, env: env, active: map[string]*active{}}
}

// active is one bound listener.
type active struct {
	ln       net.Listener
	cfg      *snapshot.Listener
	servers  map[*snapshot.FilterChain]*hcm.Server
	cxTotal  *stats.Counter
	cxActive *stats.Gauge
	noMatch  *stats.Counter
	cxDestr  *stats.Counter
}

// Reconcile makes the open listeners those of snap: new ones are bound,
// removed ones closed. Listeners are keyed by name. An error binding one
// listener leaves the others in place and is returned.
func (m *Manager) Reconcile(ls []*snapshot.Listener) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]*snapshot.Listener{}
	for _, l := range ls {
		want[l.Name] = l
	}
	for name, a := range m.active {
		if want[name] == nil || want[name].Address != a.cfg.Address {
			a.ln.Close()
			delete(m.active, name)
			go a.shutdownServers()
		}
	}
	var errs []error
	for _, l := range ls {
		if a, ok := m.active[l.Name]; ok {
			m.updateLocked(a, l)
			continue
		}
		if err := m.bindLocked(l); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) bindLocked(l *snapshot.Listener) error {
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return fmt.Errorf("listener %q: bind %s: %w", l.Name, l.Address, err)
	}
	sc := m.st.Tagged("listener", l.StatName, "envoy_listener_address")
	a := &active{
		ln:       ln,
		cfg:      l,
		servers:  m.newServers(l),
		cxTotal:  sc.Counter("downstream_cx_total"),
		cxActive: sc.Gauge("downstream_cx_active"),
		noMatch:  sc.Counter("no_filter_chain_match"),
		cxDestr:  sc.Counter("downstream_cx_destroy"),
	}
	m.active[l.Name] = a
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.acceptLoop(a)
	}()
	m.log.Info("listening", "listener", l.Name, "address", ln.Addr().String())
	return nil
}

func (m *Manager) newServers(l *snapshot.Listener) map[*snapshot.FilterChain]*hcm.Server {
	s := map[*snapshot.FilterChain]*hcm.Server{}
	for _, fc := range append(append([]*snapshot.FilterChain(nil), l.Chains...), l.Default) {
		if fc != nil {
			s[fc] = hcm.NewServer(hcm.NewManager(fc.HCM, m.env), m.log)
		}
	}
	return s
}

// updateLocked moves an open listener to a new config on the same socket:
// new connections use the new chains; connections already accepted keep
// theirs until they end.
func (m *Manager) updateLocked(a *active, l *snapshot.Listener) {
	if a.cfg == l {
		return
	}
	old := &active{servers: a.servers}
	a.servers = m.newServers(l)
	a.cfg = l
	go old.shutdownServers()
}

// shutdownServers lets the servers finish their requests; tunnels are not
// affected (they belong to the tracker).
func (a *active) shutdownServers() {
	for _, s := range a.servers {
		s.Shutdown(context.Background())
	}
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
		if cfg.SniffTLS {
			// Reading the ClientHello may take a while: not on this loop.
			go m.dispatch(a, cfg, servers, c.(*net.TCPConn))
		} else {
			m.dispatch(a, cfg, servers, c.(*net.TCPConn))
		}
	}
}

// dispatch picks the filter chain of one connection.
func (m *Manager) dispatch(a *active, cfg *snapshot.Listener, servers map[*snapshot.FilterChain]*hcm.Server, c *net.TCPConn) {
	release := func() { a.cxActive.Dec(); a.cxDestr.Inc() }
	info := snapshot.ConnInfo{
		Dst: addrPort(c.LocalAddr()),
		Src: addrPort(c.RemoteAddr()),
	}
	var conn net.Conn = c
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
// the requests in flight until ctx ends, then closes what is left.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	all := m.active
	m.active = map[string]*active{}
	m.mu.Unlock()
	for _, a := range all {
		a.ln.Close()
	}
	m.wg.Wait()
	var wg sync.WaitGroup
	for _, a := range all {
		for _, s := range a.servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Shutdown(ctx); err != nil {
					s.Close()
				}
			}()
		}
	}
	wg.Wait()
}
