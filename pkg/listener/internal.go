package listener

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/hopproxy/hop/pkg/upstream"
)

// InternalAddr is the address of an internal listener, or of the client
// end of an internal connection, in Envoy's form "envoy://<name>/".
type InternalAddr string

// Network implements net.Addr.
func (a InternalAddr) Network() string { return "envoy_internal" }

// String implements net.Addr.
func (a InternalAddr) String() string { return "envoy://" + string(a) + "/" }

// internalClientAddr is the remote address an internal listener sees, as
// Envoy's internal client connections have it.
const internalClientAddr = InternalAddr("internal_client_address")

// internalListener is the net.Listener of an internal listener (Envoy's
// envoy.bootstrap.internal_listener): its accept loop takes the server ends
// of the connections DialInternal makes, one at a time, and serves them
// exactly as accepted TCP connections. Nothing waits in the kernel, so a
// dial hands its connection over directly and fails once the listener is
// closed.
type internalListener struct {
	name  string
	conns chan net.Conn // unbuffered: a hand-over meets an Accept
	done  chan struct{} // closed by Close
	once  sync.Once
}

func newInternalListener(name string) *internalListener {
	return &internalListener{name: name, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (l *internalListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: accepting stops, and so do hand-overs.
func (l *internalListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *internalListener) Addr() net.Addr { return InternalAddr(l.name) }

// hand gives c to the accept loop. It fails when the listener is closed
// first (the error wraps upstream.ErrNoInternalListener) or ctx ends.
func (l *internalListener) hand(ctx context.Context, c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return fmt.Errorf("listener: internal listener %q closed: %w", l.name, upstream.ErrNoInternalListener)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// internalConn is the server end of an internal connection: a kernel
// socket pair's end, with Envoy's internal addresses.
type internalConn struct {
	*net.UnixConn
	local net.Addr
}

func (c *internalConn) LocalAddr() net.Addr  { return c.local }
func (c *internalConn) RemoteAddr() net.Addr { return internalClientAddr }

// DialInternal opens a connection to the internal listener name and
// returns its client end, for upstream.Options.InternalDial. The server
// end is served by the listener's filter chains like an accepted TCP
// connection: it counts in listener.<stat prefix>.downstream_cx_*, picks a
// chain, and goes to its connection manager or tcp_proxy. The connection
// is a kernel socket pair (AF_UNIX, SOCK_STREAM): buffered by the kernel,
// with half-close. When no internal listener of that name is active, or
// it closes before taking the connection, the error wraps
// upstream.ErrNoInternalListener.
func (m *Manager) DialInternal(ctx context.Context, name string) (net.Conn, error) {
	m.mu.Lock()
	a := m.active[name]
	m.mu.Unlock()
	var il *internalListener
	if a != nil {
		il, _ = a.ln.(*internalListener)
	}
	if il == nil {
		return nil, fmt.Errorf("listener: no internal listener %q: %w", name, upstream.ErrNoInternalListener)
	}
	client, server, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("listener: internal listener %q: %w", name, err)
	}
	if err := il.hand(ctx, &internalConn{UnixConn: server, local: InternalAddr(name)}); err != nil {
		client.Close()
		server.Close()
		return nil, err
	}
	return client, nil
}
