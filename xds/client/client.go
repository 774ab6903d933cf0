// Package client is hop's xDS protocol engine: it keeps the subscriptions of
// each resource type, talks SotW or delta xDS over ADS or per-type streams to
// one management server, decodes responses into Updates, and ACKs or NACKs
// them as the Handler decides. It knows nothing about what the resources
// mean; xds/watch builds the LDS→RDS and CDS→EDS logic on top of it.
//
// The engine follows Envoy's client behaviour (see
// docs/xds-protocol.md §1 for the checklist items, X-*):
//
//   - Per type it keeps the last accepted version, the subscribed names and,
//     for delta, the accepted per-resource versions; per stream it keeps the
//     latest nonce. Every SotW request carries the full name list, the latest
//     nonce and the last accepted version (X-ACK-1, X-ACK-2).
//   - A stream that fails is re-opened with jittered exponential backoff,
//     reset once a response was received; the new stream re-sends every
//     subscription with the last accepted version and no nonce, or delta's
//     initial_resource_versions (X-RECON-2, X-RECON-3, X-SUB-5).
//   - Repeated identical NACKs are slowed down and logged once, because
//     go-control-plane re-sends a rejected snapshot at once (X-ACK-8).
//
// The transport is an interface so that this package does not import gRPC;
// xds/client/grpctransport implements it.
package client

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/stats"
)

// Stream is one bidirectional stream to a management server. Send and Recv
// may be called concurrently with each other (one sender, one receiver).
type Stream interface {
	Send(proto.Message) error
	Recv(proto.Message) error
	CloseSend() error
}

// Transport opens bidirectional streams to one management server. The
// stream lives until its context is cancelled or it fails.
type Transport interface {
	NewStream(ctx context.Context, method string) (Stream, error)
	Close() error
}

// Default reconnect backoff, Envoy's SubscriptionFactory::RetryInitialDelayMs
// and RetryMaxDelayMs.
const (
	DefaultInitialBackoff = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Options configures a Client.
type Options struct {
	Transport Transport
	// Node is sent in every request, or only in the first request of each
	// stream when SetNodeOnFirstMessageOnly is set.
	Node                      *corev3.Node
	SetNodeOnFirstMessageOnly bool
	// Delta selects incremental xDS (DELTA_GRPC); otherwise SotW (GRPC).
	Delta bool
	// Aggregated selects ADS: one stream for every type. Otherwise each
	// watched type gets its own stream on the per-type service.
	Aggregated bool
	// RateLimit is ApiConfigSource.rate_limit_settings; nil disables
	// Envoy's request token bucket.
	RateLimit *corev3.RateLimitSettings
	// InitialBackoff and MaxBackoff bound the reconnect delay; zero means
	// DefaultInitialBackoff and DefaultMaxBackoff.
	InitialBackoff, MaxBackoff time.Duration
	// ExplicitWildcard subscribes wildcard types with the explicit "*"
	// instead of the legacy empty name list Envoy sends. Needed for servers
	// that deactivated legacy wildcard (go-control-plane's
	// DeactivateLegacyWildcard). go-control-plane's snapshot cache (v0.14)
	// honours "*" only in delta: in SotW it filters by the literal names.
	ExplicitWildcard bool
	// Stats receives control_plane.connected_state, .pending_requests and
	// .rate_limit_enforced; may be nil.
	Stats *stats.Store
	// Log may be nil (no logging).
	Log *slog.Logger
}

// Client is an xDS client for one management server. Create it with New,
// set subscriptions with Watch (before or after Run), and call Run once.
type Client struct {
	// Immutable after New.
	o       Options
	log     *slog.Logger
	m       metrics
	adsWake chan struct{} // ADS: wakes the stream's sender after a Watch (cap 1)
	newType chan struct{} // per-type mode: tells Run a type was added (cap 1)

	mu    sync.Mutex // guards types, order and the fields of every typeState
	types map[string]*typeState
	order []string // type URLs in the order they were first watched

	loops     atomic.Int32 // stream loops running
	streamsUp atomic.Int32 // streams currently open
	gaugeMu   sync.Mutex   // serialises computing and setting connected_state
}

// typeState is the subscription and accepted state of one type, shared by
// every stream the type is carried on. Its fields are guarded by Client.mu
// except wake, which is immutable.
type typeState struct {
	url      string
	handler  Handler
	wildcard bool
	// names is the subscribed name set and sorted the same names; both
	// are replaced, never modified, by Watch, so readers may keep them.
	names  map[string]struct{}
	sorted []string
	// version is the version_info (SotW) or system_version_info (delta) of
	// the last accepted response.
	version string
	// resVers are the delta per-resource versions accepted and not removed,
	// sent as initial_resource_versions on a new stream.
	resVers map[string]string
	wake    chan struct{} // wakes the sender of the stream carrying the type
}

// New returns a client. It does nothing until Run.
func New(o Options) *Client {
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = DefaultInitialBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.InitialBackoff {
		o.MaxBackoff = o.InitialBackoff
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		o:       o,
		log:     log.With("component", "xds"),
		m:       newMetrics(o.Stats),
		adsWake: make(chan struct{}, 1),
		newType: make(chan struct{}, 1),
		types:   map[string]*typeState{},
	}
}

// Watch sets the subscription of one type: wildcard (LDS/CDS), exactly
// names (RDS/EDS), or both. Calling it again for the same type replaces the
// name set; the change is sent on the type's stream at once (SotW: the full
// list with the latest nonce and last accepted version; delta: a
// subscribe/unsubscribe diff), or when the stream is next opened. h must be
// the same handler each time for a type. Watch may be called from any
// goroutine, including from inside Handler.OnUpdate.
func (c *Client) Watch(typeURL string, wildcard bool, names []string, h Handler) {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	c.mu.Lock()
	ts, ok := c.types[typeURL]
	if !ok {
		ts = &typeState{url: typeURL, resVers: map[string]string{}, wake: c.adsWake}
		if !c.o.Aggregated {
			ts.wake = make(chan struct{}, 1)
		}
		c.types[typeURL] = ts
		c.order = append(c.order, typeURL)
	}
	ts.handler = h
	ts.wildcard = wildcard
	ts.names = set
	ts.sorted = slices.Sorted(maps.Keys(set))
	if !wildcard {
		// Versions of resources we lost interest in must not be claimed
		// on the next stream.
		for n := range ts.resVers {
			if _, keep := set[n]; !keep {
				delete(ts.resVers, n)
			}
		}
	}
	wake := ts.wake
	c.mu.Unlock()
	signal(wake)
	if !ok && !c.o.Aggregated {
		signal(c.newType)
	}
}

// Connected reports whether the client's streams are open: the ADS stream,
// or every per-type stream (and at least one).
func (c *Client) Connected() bool {
	up := c.streamsUp.Load()
	if c.o.Aggregated {
		return up > 0
	}
	return up > 0 && up == c.loops.Load()
}

// Run connects and keeps the streams open until ctx ends, reconnecting with
// jittered exponential backoff. It returns when every goroutine it started
// has exited. Call it once.
func (c *Client) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if c.o.Aggregated {
		wg.Go(func() { c.runLoop(ctx, "") })
		return
	}
	started := map[string]bool{}
	for {
		c.mu.Lock()
		urls := append([]string(nil), c.order...)
		c.mu.Unlock()
		for _, u := range urls {
			if !started[u] {
				started[u] = true
				wg.Go(func() { c.runLoop(ctx, u) })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.newType:
		}
	}
}

// runLoop keeps one stream open: the ADS stream (only == "") or the stream
// of type only. State that outlives a stream (backoff, rate limiters, NACK
// log) lives here and is owned by this goroutine and, one stream at a time,
// by that stream's goroutines.
func (c *Client) runLoop(ctx context.Context, only string) {
	c.loops.Add(1)
	c.updateConnected()
	defer func() {
		c.loops.Add(-1)
		c.updateConnected()
	}()
	method, ok := methodFor(only, c.o.Delta)
	if !ok {
		err := errorf("no discovery service for type %q; use ADS", only)
		c.log.Error("cannot subscribe", "type", only, "error", err)
		c.notifyStreamError(only, err)
		return
	}
	l := &loop{
		c:       c,
		only:    only,
		method:  method,
		limiter: rateLimitBucket(c.o.RateLimit, time.Now()),
		nacks:   map[string]*nackGate{},
		nackLog: map[string]*nackLog{},
	}
	bo := backoff{initial: c.o.InitialBackoff, max: c.o.MaxBackoff}
	for {
		received, err := l.runStream(ctx)
		if ctx.Err() != nil {
			return
		}
		if received {
			bo.reset()
		}
		d := bo.next()
		c.log.Warn("xds stream closed", "method", method, "error", err, "retry_in", d)
		c.notifyStreamError(only, err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// notifyStreamError tells the StreamErrorHandlers of the types carried by a
// failed stream (all types for ADS).
func (c *Client) notifyStreamError(only string, err error) {
	c.mu.Lock()
	var hs []StreamErrorHandler
	for _, u := range c.order {
		if only != "" && u != only {
			continue
		}
		if h, ok := c.types[u].handler.(StreamErrorHandler); ok {
			hs = append(hs, h)
		}
	}
	c.mu.Unlock()
	for _, h := range hs {
		h.OnStreamError(err)
	}
}

func (c *Client) streamOpened() {
	c.streamsUp.Add(1)
	c.updateConnected()
}

func (c *Client) streamClosed() {
	c.streamsUp.Add(-1)
	c.updateConnected()
}

// updateConnected sets control_plane.connected_state from Connected.
func (c *Client) updateConnected() {
	c.gaugeMu.Lock()
	defer c.gaugeMu.Unlock()
	c.m.setConnected(c.Connected())
}

// signal wakes the owner of ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Method names of the discovery services.
const (
	adsSotW   = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	adsDelta  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
	ldsPrefix = "/envoy.service.listener.v3.ListenerDiscoveryService/"
	cdsPrefix = "/envoy.service.cluster.v3.ClusterDiscoveryService/"
	rdsPrefix = "/envoy.service.route.v3.RouteDiscoveryService/"
	edsPrefix = "/envoy.service.endpoint.v3.EndpointDiscoveryService/"
)

// methodFor is the gRPC method of the stream for type only ("" = ADS).
func methodFor(only string, delta bool) (string, bool) {
	pick := func(prefix, sotw, dlt string) (string, bool) {
		if delta {
			return prefix + dlt, true
		}
		return prefix + sotw, true
	}
	switch only {
	case "":
		if delta {
			return adsDelta, true
		}
		return adsSotW, true
	case ListenerType:
		return pick(ldsPrefix, "StreamListeners", "DeltaListeners")
	case ClusterType:
		return pick(cdsPrefix, "StreamClusters", "DeltaClusters")
	case RouteType:
		return pick(rdsPrefix, "StreamRoutes", "DeltaRoutes")
	case EndpointType:
		return pick(edsPrefix, "StreamEndpoints", "DeltaEndpoints")
	}
	return "", false
}

// metrics are the control_plane.* stats; every field is nil without a store.
type metrics struct {
	connected   *stats.Gauge
	pending     *stats.Gauge
	rateLimited *stats.Counter
}

func newMetrics(st *stats.Store) metrics {
	if st == nil {
		return metrics{}
	}
	sc := st.Root().Sub("control_plane")
	return metrics{
		connected:   sc.Gauge("connected_state"),
		pending:     sc.Gauge("pending_requests"),
		rateLimited: sc.Counter("rate_limit_enforced"),
	}
}

func (m metrics) setConnected(up bool) {
	if m.connected == nil {
		return
	}
	if up {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m metrics) addPending(n int64) {
	if m.pending != nil && n != 0 {
		m.pending.Add(n)
	}
}

func (m metrics) incRateLimited() {
	if m.rateLimited != nil {
		m.rateLimited.Inc()
	}
}
