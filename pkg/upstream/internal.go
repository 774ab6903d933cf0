package upstream

import (
	"context"
	"errors"
	"net"
)

// InternalDialer connects to the internal listener named listenerName
// (Envoy's envoy.bootstrap.internal_listener) and returns the client end
// of an in-process connection that the listener serves exactly as an
// accepted TCP connection. The connection must support CloseWrite and
// CloseRead (a *net.UnixConn from a socket pair does). When no internal
// listener of that name is active the error wraps ErrNoInternalListener;
// when ctx ends first, ctx's error. pkg/dataplane wires it to the
// listener manager, which pkg/upstream cannot import.
type InternalDialer func(ctx context.Context, listenerName string) (net.Conn, error)

// ErrNoInternalListener is wrapped by an InternalDialer's error when no
// internal listener of the requested name is active. A connect to such an
// endpoint fails as Envoy's does: a *ConnectError with reset reason
// "remote connection failure" and transport failure reason "immediate
// connect error: Invalid argument|remote address:envoy://<name>/<id>".
var ErrNoInternalListener = errors.New("upstream: no such internal listener")

// internalURLHost stands in URL.Host for requests to internal hosts.
const internalURLHost = "envoy-internal"

// internalKey is Envoy's string form of an internal address.
func internalKey(listener, endpointID string) string {
	return "envoy://" + listener + "/" + endpointID
}

// socket is the connection below a pooled or Dial'ed connection: a
// *net.TCPConn, or the client end of an internal connection.
type socket interface {
	net.Conn
	CloseWrite() error
	CloseRead() error
}

// dialSocket opens the socket to h: TCP through the cluster's dialer, or
// an internal connection through internalDial. The error of an internal
// dial is returned as a *ConnectError already when no listener took it.
func (c *Cluster) dialSocket(ctx context.Context, h *host, addr string) (socket, error) {
	if h.internal == "" {
		raw, err := c.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return raw.(*net.TCPConn), nil
	}
	if c.internalDial == nil {
		return nil, errNoInternal(addr, ErrNoInternalListener)
	}
	raw, err := c.internalDial(ctx, h.internal)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, ErrNoInternalListener) {
			return nil, errNoInternal(addr, err)
		}
		return nil, err
	}
	s, ok := raw.(socket)
	if !ok {
		raw.Close()
		return nil, errors.New("upstream: internal connection cannot half-close")
	}
	return s, nil
}

// errNoInternal is the connect failure of an internal address nobody
// listens on, worded as Envoy's user-space socket reports it.
func errNoInternal(addr string, err error) *ConnectError {
	return &ConnectError{
		ResetReason: ResetRemoteConnectionFailure,
		Reason:      "immediate connect error: Invalid argument|remote address:" + addr,
		Host:        addr,
		Err:         err,
	}
}
