package watch

import (
	"maps"
	"slices"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// bundleLocked is what is served now: the static resources, then the
// active dynamic listeners and clusters by name, and every route
// configuration and cluster load assignment held.
func (w *Watcher) bundleLocked() Bundle {
	b := Bundle{
		Listeners: slices.Clone(w.static.listeners),
		Clusters:  slices.Clone(w.static.clusters),
		Routes:    make(map[string]*routev3.RouteConfiguration, len(w.rds.active)),
		Endpoints: make(map[string]*endpointv3.ClusterLoadAssignment, len(w.eds.active)),
	}
	if !w.cdsReady {
		// Until the first cluster response, dynamic listeners wait (Envoy's
		// init order: clusters first).
		return w.withNamed(b)
	}
	for _, n := range slices.Sorted(maps.Keys(w.lds.active)) {
		b.Listeners = append(b.Listeners, w.lds.active[n].msg)
	}
	return w.withNamed(b)
}

func (w *Watcher) withNamed(b Bundle) Bundle {
	for _, n := range slices.Sorted(maps.Keys(w.cds.active)) {
		b.Clusters = append(b.Clusters, w.cds.active[n].msg)
	}
	for n, e := range w.rds.active {
		b.Routes[n] = e.msg
	}
	for n, e := range w.eds.active {
		b.Endpoints[n] = e.msg
	}
	return b
}
