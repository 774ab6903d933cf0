package client_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/client/grpctransport"
	"github.com/hopproxy/hop/xds/xdstest"
)

// TestMain fails the package if goroutines of the client, the transport or
// the test server outlive the tests.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "hop/xds/", "google.golang.org/grpc", "go-control-plane/pkg/")
}

const (
	nodeID             = "test-node"
	defaultTestTimeout = 10 * time.Second
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// mode is one of the four xDS transport variants.
type mode struct {
	name       string
	delta, ads bool
}

var modes = []mode{
	{"sotw-ads", false, true},
	{"delta-ads", true, true},
	{"sotw-per-type", false, false},
	{"delta-per-type", true, false},
}

// startServer starts an xdstest server stopped at the end of the test.
func startServer(t *testing.T, o xdstest.Options) *xdstest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := xdstest.StartWithOptions(ctx, "127.0.0.1:0", o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Stop()
		cancel()
	})
	return srv
}

// runClient builds a client for srv (with o's Delta, Aggregated, ... and
// fast backoff), runs it and stops it at the end of the test, checking
// that Run returns.
func runClient(t *testing.T, srv *xdstest.Server, o client.Options, setup func(*client.Client)) *client.Client {
	t.Helper()
	tr, err := grpctransport.Dial(srv.Addr(), nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Transport = tr
	if o.Node == nil {
		o.Node = &corev3.Node{Id: nodeID, Cluster: "test-cluster"}
	}
	if o.InitialBackoff == 0 {
		o.InitialBackoff = 10 * time.Millisecond
		o.MaxBackoff = 100 * time.Millisecond
	}
	c := client.New(o)
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		tr.Close()
	})
	return c
}

// handler records updates and answers them with reject (nil: ACK).
type handler struct {
	mu         sync.Mutex
	updates    []client.Update
	streamErrs int
	changed    chan struct{} // closed and replaced on every call
	reject     func(client.Update) error
	onUpdate   func(client.Update) // called before returning, outside mu
}

func newHandler() *handler { return &handler{changed: make(chan struct{})} }

func (h *handler) OnUpdate(u client.Update) error {
	h.mu.Lock()
	h.updates = append(h.updates, u)
	close(h.changed)
	h.changed = make(chan struct{})
	reject, on := h.reject, h.onUpdate
	h.mu.Unlock()
	if on != nil {
		on(u)
	}
	if reject != nil {
		return reject(u)
	}
	return nil
}

func (h *handler) OnStreamError(error) {
	h.mu.Lock()
	h.streamErrs++
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *handler) setReject(f func(client.Update) error) {
	h.mu.Lock()
	h.reject = f
	h.mu.Unlock()
}

func (h *handler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.updates)
}

func (h *handler) all() []client.Update {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]client.Update(nil), h.updates...)
}

// wait blocks until the handler's state satisfies cond.
func (h *handler) wait(t *testing.T, ctx context.Context, what string, cond func(updates []client.Update, streamErrs int) bool) {
	t.Helper()
	for {
		h.mu.Lock()
		ok := cond(h.updates, h.streamErrs)
		ch := h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-ch:
		}
	}
}

// waitUpdate waits for an update matching pred and returns it.
func (h *handler) waitUpdate(t *testing.T, ctx context.Context, what string, pred func(client.Update) bool) client.Update {
	t.Helper()
	var got client.Update
	h.wait(t, ctx, what, func(us []client.Update, _ int) bool {
		for _, u := range us {
			if pred(u) {
				got = u
				return true
			}
		}
		return false
	})
	return got
}

func names(u client.Update) []string {
	var out []string
	for _, r := range u.Resources {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// waitACK waits for the ACK of the response of typeURL with version
// (system_version_info in delta) and returns it.
func waitACK(t *testing.T, ctx context.Context, srv *xdstest.Server, typeURL, version string) xdstest.Request {
	t.Helper()
	r, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
		if r.TypeURL != typeURL || r.Nonce == "" || r.Error != "" {
			return false
		}
		if !r.Delta && r.Version != version {
			return false
		}
		return responseVersion(srv, r) == version
	})
	if err != nil {
		t.Fatalf("waiting for the ACK of %s %s: %v", typeURL, version, err)
	}
	return r
}

// waitNACK waits for a NACK of the response of typeURL with version.
func waitNACK(t *testing.T, ctx context.Context, srv *xdstest.Server, typeURL, version string) xdstest.Request {
	t.Helper()
	r, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
		return r.TypeURL == typeURL && r.Error != "" && responseVersion(srv, r) == version
	})
	if err != nil {
		t.Fatalf("waiting for the NACK of %s %s: %v", typeURL, version, err)
	}
	return r
}

// responseVersion is the version of the response that request r answers.
func responseVersion(srv *xdstest.Server, r xdstest.Request) string {
	for _, resp := range srv.Responses() {
		if resp.Stream == r.Stream && resp.Nonce == r.Nonce && resp.TypeURL == r.TypeURL {
			return resp.Version
		}
	}
	return "\x00none"
}

// eventually polls cond until it holds (for state that has no event to
// wait on, such as a gauge).
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

func gauge(st *stats.Store, name string) int64 {
	v, _ := st.Get(name)
	return v
}

// Resources.

func listener(name string) types.Resource { return &listenerv3.Listener{Name: name} }
func cluster(name string) types.Resource  { return &clusterv3.Cluster{Name: name} }
func route(name string) types.Resource    { return &routev3.RouteConfiguration{Name: name} }
func endpoints(name string) types.Resource {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name}
}
func res(rs ...types.Resource) []types.Resource { return rs }

// logCounter is a slog handler counting records by message.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newLogCounter() *logCounter { return &logCounter{counts: map[string]int{}} }

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.counts[r.Message]++
	l.mu.Unlock()
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[msg]
}
