// Package dataplane is the composition root of hop's data plane. Apply takes
// one Bundle of validated resources and makes it live:
//
//	compile (snapshot.Compile, all CPU work, nothing changes on error)
//	→ start clusters that are new
//	→ publish the snapshot
//	→ reconcile listeners (bind new sockets, move kept ones, close removed)
//
// It owns the long-lived parts: the cluster manager, the tunnel tracker and
// the listener manager, and wires the one into the other for internal
// listeners: a cluster endpoint with an envoy_internal_address connects
// through listener.Manager.DialInternal (upstream.Options.InternalDial).
package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/filter/buffer"
	"github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/listener"
	routetable "github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// Tunnels must splice in the kernel: both ends of an HTTP/1.1 tunnel have to
// hand their *net.TCPConn to tunnel.Splice. A rename on either side breaks
// the build here instead of silently falling back to a user-space copy.
var _ tunnel.Unwrapper = (*upstream.Conn)(nil)

// Registry returns the HTTP filters hop implements, keyed by type URL.
func Registry() *filter.Registry {
	r := filter.NewRegistry()
	for _, b := range []filter.Builder{router.Builder{}, buffer.Builder{}} {
		if err := r.Register(b); err != nil {
			panic(err) // a duplicate here is a programming error caught by every test
		}
	}
	return r
}

// DataPlane is hop's running data plane.
type DataPlane struct {
	log *slog.Logger
	st  *stats.Store
	reg *filter.Registry

	Clusters  *upstream.Manager
	Tunnels   *tunnel.Tracker
	Listeners *listener.Manager
	Snapshot  snapshot.Store

	mu        sync.Mutex                                   // serialises Apply; guards endpoints
	endpoints map[string]*endpointv3.ClusterLoadAssignment // the CLA each EDS cluster was last given
	tables    snapshot.RouteTables                         // route tables compiled by Check, reused by Apply
}

// DefaultDrainTime is Envoy's default --drain-time-s.
const DefaultDrainTime = 600 * time.Second

// New returns a data plane with nothing configured. drain is how long a
// removed listener drains before its connections are closed
// (--drain-time-s).
func New(log *slog.Logger, st *stats.Store, drain time.Duration) *DataPlane {
	d := &DataPlane{log: log, st: st, reg: Registry(), Tunnels: &tunnel.Tracker{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
	// Clusters reach internal listeners through the listener manager,
	// which is created below (it needs the clusters itself); the closure
	// reads d.Listeners only when a connection is made.
	d.Clusters = upstream.NewManagerWithOptions(st, log.With("component", "upstream"), upstream.Options{
		InternalDial: func(ctx context.Context, name string) (net.Conn, error) {
			return d.Listeners.DialInternal(ctx, name)
		},
	})
	env := &hcm.Env{Clusters: d.Clusters, Tunnels: d.Tunnels, Log: log.With("component", "hcm")}
	d.Listeners = listener.New(log.With("component", "listener"), st, env, drain)
	return d
}

// Compile checks a bundle without starting anything (hop --mode validate).
func Compile(b snapshot.Bundle) error {
	_, err := snapshot.Compile(b, Registry(), stats.New(), nil, nil)
	return err
}

// Check compiles one resource on its own, as it would be compiled inside a
// Bundle, so that the xDS layer can reject a bad resource by name before
// it is ever part of one. A listener is compiled with its RDS routes
// absent (an empty table): routes are checked on their own.
func (d *DataPlane) Check(m proto.Message) error { return check(m, d.reg, &d.tables) }

// CheckResource is Check without a data plane (hop --mode validate).
func CheckResource(m proto.Message) error { return check(m, Registry(), nil) }

// check compiles m alone; a route configuration's table is kept in tables
// (when not nil) for the Apply that follows.
func check(m proto.Message, reg *filter.Registry, tables *snapshot.RouteTables) error {
	switch r := m.(type) {
	case *listenerv3.Listener:
		_, err := snapshot.CompileListener(r, reg, stats.New(), nil)
		return err
	case *clusterv3.Cluster:
		return upstream.Compile(r)
	case *routev3.RouteConfiguration:
		if tables != nil {
			_, err := tables.Compile(r)
			return err
		}
		_, err := routetable.Compile(r)
		return err
	case *endpointv3.ClusterLoadAssignment:
		return upstream.CompileEndpoints(r)
	}
	return fmt.Errorf("dataplane: cannot check a %T", m)
}

// Apply makes b the live configuration: compile (on error nothing
// changes), start new and changed clusters and set EDS endpoints, publish,
// reconcile listeners, then retire clusters b no longer has.
func (d *DataPlane) Apply(b snapshot.Bundle) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, err := snapshot.Compile(b, d.reg, d.st, d.Snapshot.Load(), &d.tables)
	d.tables.Keep(b.Routes)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, c := range snap.Clusters {
		keep[c.GetName()] = true
		prev := d.Clusters.Get(c.GetName())
		uc, err := d.Clusters.Add(c)
		if err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		cla := snap.Endpoints[c.GetName()]
		if got, ok := d.endpoints[c.GetName()]; ok && uc == prev && got == cla {
			continue // same cluster, same endpoints
		}
		if err := d.Clusters.SetEndpoints(c.GetName(), cla); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		d.endpoints[c.GetName()] = cla
	}
	d.Snapshot.Publish(snap)
	err = d.Listeners.Reconcile(snap.Listeners)
	for _, c := range d.Clusters.Clusters() {
		if !keep[c.Name()] {
			d.Clusters.Remove(c.Name())
			delete(d.endpoints, c.Name())
		}
	}
	if err != nil {
		return &ListenerError{err}
	}
	return nil
}

// ListenerError is an Apply error after which the new configuration is in
// place except for the listeners it names (a socket could not be bound).
type ListenerError struct{ Err error }

func (e *ListenerError) Error() string { return e.Err.Error() }
func (e *ListenerError) Unwrap() error { return e.Err }

// Applied is true: everything but the failed listeners was applied.
func (e *ListenerError) Applied() bool { return true }

// ListenerAddr returns where a listener is bound.
func (d *DataPlane) ListenerAddr(name string) net.Addr { return d.Listeners.Addr(name) }

// Shutdown stops accepting, lets requests finish and tunnels end by
// themselves until ctx ends, then closes everything. The clusters close
// between the two: once no request is in flight their idle pooled
// connections serve nobody, and one that ends in hop's own internal
// listener would otherwise hold a tunnel open there until ctx ends.
func (d *DataPlane) Shutdown(ctx context.Context) {
	d.Listeners.Shutdown(ctx)
	d.Clusters.Close()
	d.Tunnels.Shutdown(ctx)
}
