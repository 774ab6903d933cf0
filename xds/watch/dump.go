package watch

import (
	"maps"
	"slices"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FillConfigDump adds the dynamic resources to the config dump messages,
// as Envoy's /config_dump shows them: per listener its active and warming
// versions and the error_state of its last rejected update; active and
// warming clusters; dynamic route configurations and endpoint
// configurations, each with version_info and last_updated.
func (w *Watcher) FillConfigDump(c *adminv3.ClustersConfigDump, l *adminv3.ListenersConfigDump, r *adminv3.RoutesConfigDump, e *adminv3.EndpointsConfigDump) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l.VersionInfo = w.lds.version
	for _, name := range sortedNames(w.lds.names(), w.lds.errs) {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name}
		if a := w.lds.active[name]; a != nil {
			dl.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: a.version, Listener: pack(a.msg), LastUpdated: ts(a.updated)}
		}
		if wm := w.lds.warming[name]; wm != nil {
			dl.WarmingState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: wm.version, Listener: pack(wm.msg), LastUpdated: ts(wm.updated)}
		}
		dl.ErrorState = failure(w.lds.errs[name])
		l.DynamicListeners = append(l.DynamicListeners, dl)
	}
	c.VersionInfo = w.cds.version
	for _, name := range slices.Sorted(maps.Keys(w.cds.active)) {
		a := w.cds.active[name]
		c.DynamicActiveClusters = append(c.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: a.version, Cluster: pack(a.msg), LastUpdated: ts(a.updated), ErrorState: failure(w.cds.errs[name]),
		})
	}
	for _, name := range slices.Sorted(maps.Keys(w.cds.warming)) {
		a := w.cds.warming[name]
		c.DynamicWarmingClusters = append(c.DynamicWarmingClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: a.version, Cluster: pack(a.msg), LastUpdated: ts(a.updated), ErrorState: failure(w.cds.errs[name]),
		})
	}
	for _, name := range sortedNames(w.rds.names(), w.rds.errs) {
		d := &adminv3.RoutesConfigDump_DynamicRouteConfig{ErrorState: failure(w.rds.errs[name])}
		if a := w.rds.active[name]; a != nil {
			d.VersionInfo, d.RouteConfig, d.LastUpdated = a.version, pack(a.msg), ts(a.updated)
		}
		r.DynamicRouteConfigs = append(r.DynamicRouteConfigs, d)
	}
	for _, name := range sortedNames(w.eds.names(), w.eds.errs) {
		d := &adminv3.EndpointsConfigDump_DynamicEndpointConfig{ErrorState: failure(w.eds.errs[name])}
		if a := w.eds.active[name]; a != nil {
			d.VersionInfo, d.EndpointConfig, d.LastUpdated = a.version, pack(a.msg), ts(a.updated)
		}
		e.DynamicEndpointConfigs = append(e.DynamicEndpointConfigs, d)
	}
}

func sortedNames[E any](have map[string]bool, errs map[string]E) []string {
	all := maps.Clone(have)
	for n := range errs {
		all[n] = true
	}
	return slices.Sorted(maps.Keys(all))
}

func failure(es *errState) *adminv3.UpdateFailureState {
	if es == nil {
		return nil
	}
	return &adminv3.UpdateFailureState{FailedConfiguration: es.failed, LastUpdateAttempt: ts(es.when), Details: es.details}
}

func pack(m proto.Message) *anypb.Any {
	a, _ := anypb.New(m)
	return a
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t.Truncate(time.Millisecond)) }
