// Package watch follows hop's dynamic configuration: it subscribes to
// listeners and clusters (wildcard) and to the routes and endpoints they
// name, keeps the last good version of every resource, decides when a new
// or changed listener or cluster has warmed, and hands one consistent
// Bundle to an Applier each time the served configuration changes.
//
// # Data flow
//
//	xds/client (ADS or one stream per type) ─┐
//	xds/filesource (path_config_source) ─────┴→ Watcher handlers (one per type)
//	    → decode, validate (xds/resource), Applier.Check per resource
//	    → tables: active / warming / error state per name
//	    → warming: a listener waits for its RDS routes, an EDS cluster for
//	      its endpoints, each until initial_fetch_timeout
//	    → Bundle → Applier.Apply → ACK; any bad resource → NACK naming it
//
// Every handler call and timer runs under one mutex, so the tables have a
// single writer at a time; the data plane is only ever given Bundles.
//
// # What is kept where
//
// Static resources from the bootstrap are part of every Bundle and cannot be
// replaced or removed over xDS (as in Envoy). A response's valid resources
// are applied even when others in it are rejected; a rejected resource keeps
// its last good version and is reported in the NACK and in the config
// dump's error_state. State-of-the-world listener and cluster responses are
// complete: a name missing from one is removed. Routes and endpoints are
// dropped (and unsubscribed) when no listener or cluster refers to them any
// more.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
)

// Bundle is one consistent set of resources for the data plane. Its protos
// are shared, never modified: an unchanged resource is the same pointer in
// the next Bundle.
type Bundle struct {
	Version   string
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Routes    map[string]*routev3.RouteConfiguration
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// Applier is the data plane as the watcher sees it.
type Applier interface {
	// Check compiles one resource on its own; an error rejects it.
	Check(m proto.Message) error
	// Apply makes b the served configuration. An error means nothing
	// changed, unless it has a method Applied() bool that returns true
	// (some listener could not be bound, the rest was applied).
	Apply(b Bundle) error
}

// DialFunc opens the transport of a gRPC ApiConfigSource. path is the
// field path of src in the bootstrap, for error messages.
type DialFunc func(src *corev3.ApiConfigSource, path string) (client.Transport, error)

// Options configure a Watcher.
type Options struct {
	Bootstrap *bootstrapv3.Bootstrap
	Applier   Applier
	// Dial opens gRPC transports (cmd/hop passes grpctransport's).
	Dial DialFunc
	// Node is sent to management servers; see Node.
	Node  *corev3.Node
	Stats *stats.Store
	Log   *slog.Logger
	// InitialBackoff and MaxBackoff tune reconnects (0: the client's
	// defaults, Envoy's 500ms and 30s).
	InitialBackoff, MaxBackoff time.Duration
	// FilePollInterval is how often path_config_source files are checked
	// (0: filesource's default).
	FilePollInterval time.Duration
}

// Watcher follows the dynamic resources of one bootstrap.
type Watcher struct {
	o   Options
	log *slog.Logger
	st  *watchStats

	ctx    context.Context // set by Run; sources started later use it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	handlers map[string]*handler // one per type URL, immutable after New

	mu      sync.Mutex // guards everything below, and serialises Apply
	sources map[string]source
	subs    map[string]map[string]string // type URL → source key → names last sent
	static  staticSet
	lds     *table[*listenerv3.Listener]
	cds     *table[*clusterv3.Cluster]
	rds     *table[*routev3.RouteConfiguration]
	eds     *table[*endpointv3.ClusterLoadAssignment]
	// cdsReady is true once the first CDS response was handled or its
	// initial_fetch_timeout passed (or there is no cds_config): until then
	// dynamic listeners wait, as Envoy's init manager makes them.
	cdsReady bool
	ldsReady bool
	applied  int  // number of Bundles applied, for Bundle.Version
	started  bool // Run has begun: subscriptions may be sent
}

// New checks the bootstrap's dynamic_resources (errors name the field
// path, e.g. "dynamic_resources.ads_config.api_type: ...") and returns a
// Watcher. Nothing is connected until Run.
func New(o Options) (*Watcher, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Stats == nil {
		o.Stats = stats.New()
	}
	w := &Watcher{
		o:       o,
		log:     o.Log.With("component", "xds"),
		st:      newWatchStats(o.Stats),
		sources: map[string]source{},
		subs:    map[string]map[string]string{},
		lds:     newTable[*listenerv3.Listener](client.ListenerType),
		cds:     newTable[*clusterv3.Cluster](client.ClusterType),
		rds:     newTable[*routev3.RouteConfiguration](client.RouteType),
		eds:     newTable[*endpointv3.ClusterLoadAssignment](client.EndpointType),
	}
	w.handlers = map[string]*handler{}
	for _, t := range []string{client.ListenerType, client.ClusterType, client.RouteType, client.EndpointType} {
		w.handlers[t] = &handler{w: w, typeURL: t}
	}
	w.static = newStaticSet(o.Bootstrap)
	w.static.clusters = w.dataPlaneClusters()
	dr := o.Bootstrap.GetDynamicResources()
	if err := checkConfigSources(o.Bootstrap); err != nil {
		return nil, err
	}
	if err := w.checkDial(); err != nil {
		return nil, err
	}
	w.cdsReady = dr.GetCdsConfig() == nil
	w.ldsReady = dr.GetLdsConfig() == nil
	return w, nil
}

// StaticBundle is the static part of every Bundle (hop --mode validate
// compiles it).
func (w *Watcher) StaticBundle() Bundle {
	return Bundle{Version: "static", Listeners: w.static.listeners, Clusters: w.static.clusters}
}

// checkDial makes the transports of the bootstrap's gRPC config sources
// once, so that a bad one (an unknown cluster, an unreadable CA file) fails
// at start with its field path. The transports connect lazily and are
// closed at once.
func (w *Watcher) checkDial() error {
	if w.o.Dial == nil {
		return nil
	}
	dr := w.o.Bootstrap.GetDynamicResources()
	for _, s := range []struct {
		api  *corev3.ApiConfigSource
		path string
	}{
		{dr.GetAdsConfig(), "dynamic_resources.ads_config"},
		{dr.GetLdsConfig().GetApiConfigSource(), "dynamic_resources.lds_config.api_config_source"},
		{dr.GetCdsConfig().GetApiConfigSource(), "dynamic_resources.cds_config.api_config_source"},
	} {
		if s.api == nil {
			continue
		}
		tr, err := w.o.Dial(s.api, s.path)
		if err != nil {
			return err
		}
		tr.Close()
	}
	return nil
}

// dataPlaneClusters is the static clusters the data plane gets. A cluster
// that a gRPC config source names (the xDS cluster) is left out when the
// data plane refuses it (a field pkg/upstream does not support, which the
// gRPC transport does not need): it then serves only as the transport to
// the management server. With HTTP/2 and TLS upstreams in the data plane,
// the usual xDS cluster is an ordinary cluster too, as in Envoy.
func (w *Watcher) dataPlaneClusters() []*clusterv3.Cluster {
	grpc := grpcClusterNames(w.o.Bootstrap)
	var out []*clusterv3.Cluster
	for _, c := range w.static.clusters {
		if grpc[c.GetName()] && w.o.Applier != nil {
			if err := w.o.Applier.Check(c); err != nil {
				w.log.Info("cluster serves only as the transport of a gRPC config source", "cluster", c.GetName(), "reason", err)
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// Run subscribes and follows updates until ctx ends. The static resources
// are applied first; the returned error is that first Apply's, and Run
// returns at once when it fails.
func (w *Watcher) Run(ctx context.Context, started func(error)) {
	w.mu.Lock()
	w.ctx, w.cancel = context.WithCancel(ctx)
	w.started = true
	err := w.applyLocked("static")
	if err == nil {
		w.subscribeLocked()
	}
	w.mu.Unlock()
	if started != nil {
		started(err)
	}
	if err != nil {
		w.cancel()
		return
	}
	<-w.ctx.Done()
	w.wg.Wait()
}

// Initialized reports whether the first listener and cluster updates (or
// their initial_fetch_timeout) have passed: Envoy's server is LIVE then.
func (w *Watcher) Initialized() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cdsReady && w.ldsReady
}

// subscribeLocked sets every subscription: wildcard listeners and clusters
// where configured, and the routes and endpoints the current resources
// name.
func (w *Watcher) subscribeLocked() {
	dr := w.o.Bootstrap.GetDynamicResources()
	if cs := dr.GetCdsConfig(); cs != nil {
		w.watchWildcard(cs, "dynamic_resources.cds_config", client.ClusterType, &w.cdsReady)
	}
	if cs := dr.GetLdsConfig(); cs != nil {
		w.watchWildcard(cs, "dynamic_resources.lds_config", client.ListenerType, &w.ldsReady)
	}
	w.resubscribeLocked()
}

func (w *Watcher) watchWildcard(cs *corev3.ConfigSource, path, typeURL string, ready *bool) {
	src, err := w.sourceLocked(cs, path)
	if err != nil {
		w.log.Error("cannot subscribe", "type", typeURL, "error", err)
		return
	}
	if d := initialFetchTimeout(cs); d > 0 {
		w.afterLocked(d, func() {
			if !*ready {
				w.log.Warn("initial fetch timed out", "type", typeURL, "timeout", d)
				*ready = true
				w.st.initFetchTimeout(typeURL).Inc()
				w.reapplyLocked()
			}
		})
	}
	src.Watch(typeURL, true, nil, w.handlers[typeURL])
}

// afterLocked runs f under the lock after d, unless the watcher stopped.
func (w *Watcher) afterLocked(d time.Duration, f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			w.mu.Lock()
			f()
			w.mu.Unlock()
		case <-w.ctx.Done():
		}
	}()
}

// initialFetchTimeout is the ConfigSource's initial_fetch_timeout (Envoy's
// default 15s; 0 means wait forever).
func initialFetchTimeout(cs *corev3.ConfigSource) time.Duration {
	if t := cs.GetInitialFetchTimeout(); t != nil {
		return t.AsDuration()
	}
	return 15 * time.Second
}

// handler receives one type's updates from any source.
type handler struct {
	w       *Watcher
	typeURL string
}

func (h *handler) OnUpdate(u client.Update) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	if h.w.ctx.Err() != nil {
		return errors.New("hop is shutting down")
	}
	return h.w.onUpdateLocked(u)
}

// OnStreamError counts Envoy's update_failure for the type.
func (h *handler) OnStreamError(err error) {
	h.w.st.failure(h.typeURL).Inc()
	h.w.log.Debug("xds stream failed", "type", h.typeURL, "error", err)
}

// errApplied reports whether an Apply error left the new configuration in
// place (see Applier).
func errApplied(err error) bool {
	var a interface{ Applied() bool }
	return errors.As(err, &a) && a.Applied()
}

// applyLocked builds the Bundle of the current tables and applies it.
func (w *Watcher) applyLocked(reason string) error {
	b := w.bundleLocked()
	w.applied++
	b.Version = fmt.Sprintf("%d (%s)", w.applied, reason)
	err := w.o.Applier.Apply(b)
	if err != nil {
		w.log.Error("applying configuration failed", "version", b.Version, "error", err)
	}
	return err
}

// reapplyLocked re-evaluates warming after a timer and applies when the
// served set changed.
func (w *Watcher) reapplyLocked() {
	if !w.promoteLocked() {
		return
	}
	w.applyLocked("warming") // an error is logged; the next update retries
	w.resubscribeLocked()
}
