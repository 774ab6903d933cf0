// Package dataplane is the composition root of hop's data plane. Apply takes
// one Bundle of validated resources and makes it live:
//
//	compile (snapshot.Compile, all CPU work, nothing changes on error)
//	→ start clusters that are new
//	→ publish the snapshot
//	→ reconcile listeners (bind new sockets, move kept ones, close removed)
//
// It owns the long-lived parts: the cluster manager, the tunnel tracker and
// the listener manager.
package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/filter/buffer"
	"github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/listener"
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

	mu sync.Mutex // serialises Apply
}

// New returns a data plane with nothing configured.
func New(log *slog.Logger, st *stats.Store) *DataPlane {
	d := &DataPlane{log: log, st: st, reg: Registry(), Tunnels: &tunnel.Tracker{}}
	d.Clusters = upstream.NewManager(st, log.With("component", "upstream"))
	env := &hcm.Env{Clusters: d.Clusters, Tunnels: d.Tunnels, Log: log.With("component", "hcm")}
	d.Listeners = listener.New(log.With("component", "listener"), st, env)
	return d
}

// Compile checks a bundle without starting anything (hop --mode validate).
func Compile(b snapshot.Bundle) error {
	_, err := snapshot.Compile(b, Registry(), stats.New())
	return err
}

// Apply makes b the live configuration.
func (d *DataPlane) Apply(b snapshot.Bundle) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, err := snapshot.Compile(b, d.reg, d.st)
	if err != nil {
		return err
	}
	for _, c := range snap.Clusters {
		if d.Clusters.Get(c.GetName()) != nil {
			continue
		}
		if _, err := d.Clusters.Add(c); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
	}
	d.Snapshot.Publish(snap)
	return d.Listeners.Reconcile(snap.Listeners)
}

// ListenerAddr returns where a listener is bound.
func (d *DataPlane) ListenerAddr(name string) net.Addr { return d.Listeners.Addr(name) }

// Shutdown stops accepting, lets requests finish and tunnels end by
// themselves until ctx ends, then closes everything.
func (d *DataPlane) Shutdown(ctx context.Context) {
	d.Listeners.Shutdown(ctx)
	d.Tunnels.Shutdown(ctx)
	d.Clusters.Close()
}
