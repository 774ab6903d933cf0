package upstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/hopproxy/hop/pkg/stats"
)

// internalEndpoint is an lb_endpoint with an envoy_internal_address.
func internalEndpoint(listener, id string) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
			AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: listener},
			EndpointId:           id,
		}}},
	}}}
}

// internalNet stands in for pkg/listener's internal listeners: named
// net.Listeners whose connections are kernel socket pairs.
type internalNet struct {
	t  *testing.T
	mu sync.Mutex
	ls map[string]*pairListener
}

func newInternalNet(t *testing.T) *internalNet {
	return &internalNet{t: t, ls: map[string]*pairListener{}}
}

// listen registers an internal listener called name.
func (n *internalNet) listen(name string) *pairListener {
	l := &pairListener{name: name, conns: make(chan net.Conn), done: make(chan struct{})}
	n.mu.Lock()
	n.ls[name] = l
	n.mu.Unlock()
	n.t.Cleanup(func() { l.Close() })
	return l
}

// dial is the InternalDialer.
func (n *internalNet) dial(ctx context.Context, name string) (net.Conn, error) {
	n.mu.Lock()
	l := n.ls[name]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("test: %q: %w", name, ErrNoInternalListener)
	}
	client, server, err := testSocketPair()
	if err != nil {
		return nil, err
	}
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		client.Close()
		server.Close()
		return nil, fmt.Errorf("test: %q closed: %w", name, ErrNoInternalListener)
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
}

type pairListener struct {
	name  string
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pairListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pairListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pairListener) Addr() net.Addr { return &net.UnixAddr{Name: l.name, Net: "unix"} }

func testSocketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var out [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		out[i] = c.(*net.UnixConn)
	}
	return out[0], out[1], nil
}

// serveEcho echoes each connection of l until the client half-closes,
// then half-closes back.
func serveEcho(t *testing.T, l net.Listener) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.UnixConn).CloseWrite()
				io.Copy(io.Discard, c) // until the client closes
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

// serveHTTP serves h (HTTP/1.1 and h2c) on l.
func serveHTTP(t *testing.T, l net.Listener, h http.Handler) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	s := &http.Server{Handler: h, Protocols: p}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() { s.Close(); <-done })
}

func newInternalManager(t *testing.T, n *internalNet) (*Manager, *stats.Store) {
	t.Helper()
	st := stats.New()
	var dial InternalDialer
	if n != nil {
		dial = n.dial
	}
	m := NewManagerWithOptions(st, nil, Options{InternalDial: dial})
	t.Cleanup(m.Close)
	return m, st
}

func TestInternalDialBulkAndHalfClose(t *testing.T) {
	ctx := testCtx(t)
	n := newInternalNet(t)
	serveEcho(t, n.listen("inner"))
	m, st := newInternalManager(t, n)
	c := mustAdd(t, m, cluster("to_inner", clusterv3.Cluster_STATIC, internalEndpoint("inner", "e1")))

	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	if conn.HostAddress() != "envoy://inner/e1" || conn.TCP() != nil {
		t.Errorf("HostAddress() = %q, TCP() = %v; want envoy://inner/e1 and no TCP socket", conn.HostAddress(), conn.TCP())
	}
	if hs := c.Hosts(); len(hs) != 1 || hs[0].Address != "envoy://inner/e1" || hs[0].CxActive != 1 {
		t.Errorf("Hosts() = %+v", hs)
	}

	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, bytes.NewReader(payload))
		if err == nil {
			err = conn.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(conn) // ends with the echo's half-close
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, not the 1 MiB sent", len(got))
	}
	wantStats(t, st, "to_inner", map[string]int64{"upstream_cx_total": 1, "upstream_cx_active": 1})
}

func TestInternalRoundTripHTTP1AndHTTP2(t *testing.T) {
	n := newInternalNet(t)
	serveHTTP(t, n.listen("web"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.Host)
	}))
	for _, tc := range []struct {
		name, want string
		h2         bool
	}{
		{name: "http1", want: "HTTP/1.1 app.example"},
		{name: "http2", want: "HTTP/2.0 app.example", h2: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m, st := newInternalManager(t, n)
			pb := cluster("web_"+tc.name, clusterv3.Cluster_STATIC, internalEndpoint("web", ""))
			if tc.h2 {
				pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
			}
			c := mustAdd(t, m, pb)
			for i := 0; i < 2; i++ {
				if got := getVia(t, ctx, c, "app.example"); got != tc.want {
					t.Fatalf("response %q, want %q", got, tc.want)
				}
			}
			wantStats(t, st, "web_"+tc.name, map[string]int64{"upstream_rq_total": 2, "upstream_cx_total": 1})
		})
	}
}

func TestInternalListenerMissing(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    *internalNet
	}{
		{name: "unknown name", n: newInternalNet(t)},
		{name: "no internal listeners at all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m, st := newInternalManager(t, tc.n)
			c := mustAdd(t, m, cluster("gone", clusterv3.Cluster_STATIC, internalEndpoint("nope", "")))
			_, err := c.Dial(ctx)
			var ce *ConnectError
			if !errors.As(err, &ce) || !errors.Is(err, ErrNoInternalListener) {
				t.Fatalf("Dial error = %v, want a *ConnectError wrapping ErrNoInternalListener", err)
			}
			if ce.StatusCode() != http.StatusServiceUnavailable || ce.ResetReason != ResetRemoteConnectionFailure ||
				ce.Reason != "immediate connect error: Invalid argument|remote address:envoy://nope/" {
				t.Errorf("ConnectError = %+v", ce)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://placeholder/", nil)
			if _, err := c.RoundTrip(req); !errors.As(err, &ce) {
				t.Errorf("RoundTrip error = %v, want a *ConnectError", err)
			}
			wantStats(t, st, "gone", map[string]int64{"upstream_cx_connect_fail": 2, "upstream_cx_active": 0, "upstream_cx_destroy": 2})
		})
	}
}

func TestInternalEndpointsFromEDS(t *testing.T) {
	ctx := testCtx(t)
	n := newInternalNet(t)
	serveHTTP(t, n.listen("a"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	m, _ := newInternalManager(t, n)
	mustAdd(t, m, edsCluster("eds"))
	// The repeated internal address keeps its first lb_endpoint.
	mustSet(t, m, "eds", assignment("eds", internalEndpoint("a", "1"), internalEndpoint("a", "1")))
	c := m.Get("eds")
	if got := getVia(t, ctx, c, "x"); got != "a" {
		t.Errorf("response %q, want a", got)
	}
	if hs := c.Hosts(); len(hs) != 1 || hs[0].Address != "envoy://a/1" {
		t.Errorf("Hosts() = %+v, want the one internal address", hs)
	}
}
