package watch

import (
	"hash/fnv"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
)

// typeStats are one subscription type's Envoy stats:
// listener_manager.lds.*, cluster_manager.cds.*, and hop's
// xds.rds.* and xds.eds.* for routes and endpoints as a whole (the
// per-route-config stats Envoy keeps are namedStats). added, modified and
// removed are Envoy's cluster_manager.cluster_* and exist for clusters
// only: listener_manager.listener_* are counted by pkg/listener.
type typeStats struct {
	attempt, success, rejected, failure, empty, initFetchTimeout *stats.Counter
	added, modified, removed                                     *stats.Counter // nil but for clusters
	version                                                      *stats.Gauge
}

func newTypeStats(sc stats.Scope) *typeStats {
	return &typeStats{
		attempt:          sc.Counter("update_attempt"),
		success:          sc.Counter("update_success"),
		rejected:         sc.Counter("update_rejected"),
		failure:          sc.Counter("update_failure"),
		empty:            sc.Counter("update_empty"),
		initFetchTimeout: sc.Counter("init_fetch_timeout"),
		version:          sc.Gauge("version"),
	}
}

// namedStats are Envoy's per-RDS-subscription stats,
// http.<stat_prefix>.rds.<route_config_name>.*.
type namedStats struct {
	attempt, success, rejected, failure, reload, initFetchTimeout *stats.Counter
}

type watchStats struct {
	st    *stats.Store
	types map[string]*typeStats
	named map[string]*namedStats // "prefix\x00name"

	// listener_manager.* and cluster_manager.* totals.
	lWarming, cWarming, cActive *stats.Gauge
}

func newWatchStats(st *stats.Store) *watchStats {
	root := st.Root()
	lm, cm := root.Sub("listener_manager"), root.Sub("cluster_manager")
	ws := &watchStats{
		st:       st,
		types:    map[string]*typeStats{},
		named:    map[string]*namedStats{},
		lWarming: lm.Gauge("total_listeners_warming"),
		cWarming: cm.Gauge("warming_clusters"),
		cActive:  cm.Gauge("active_clusters"),
	}
	lds, cds := newTypeStats(lm.Sub("lds")), newTypeStats(cm.Sub("cds"))
	cds.added, cds.modified, cds.removed = cm.Counter("cluster_added"), cm.Counter("cluster_modified"), cm.Counter("cluster_removed")
	ws.types[client.ListenerType] = lds
	ws.types[client.ClusterType] = cds
	for typeURL, name := range map[string]string{client.RouteType: "rds", client.EndpointType: "eds"} {
		ws.types[typeURL] = newTypeStats(root.Sub("xds").Sub(name))
	}
	return ws
}

func (s *watchStats) forType(typeURL string) *typeStats { return s.types[typeURL] }

func (s *watchStats) failure(typeURL string) *stats.Counter { return s.types[typeURL].failure }

func (s *watchStats) initFetchTimeout(typeURL string) *stats.Counter {
	return s.types[typeURL].initFetchTimeout
}

// rdsStats returns http.<prefix>.rds.<name>.*.
func (s *watchStats) rdsStats(prefix, name string) *namedStats {
	k := prefix + "\x00" + name
	if n := s.named[k]; n != nil {
		return n
	}
	sc := s.st.Tagged("http", prefix, "envoy_http_conn_manager_prefix").Sub("rds").Sub(name)
	n := &namedStats{
		attempt:          sc.Counter("update_attempt"),
		success:          sc.Counter("update_success"),
		rejected:         sc.Counter("update_rejected"),
		failure:          sc.Counter("update_failure"),
		reload:           sc.Counter("config_reload"),
		initFetchTimeout: sc.Counter("init_fetch_timeout"),
	}
	s.named[k] = n
	return n
}

// countNamed applies f to the stats of every connection manager that uses
// the route configuration name (nothing for other types).
func (w *Watcher) countNamed(typeURL, name string, f func(*namedStats)) {
	if typeURL != client.RouteType || name == "" {
		return
	}
	seen := map[string]bool{}
	for _, r := range w.allRouteRefsLocked() {
		if r.name == name && !seen[r.statPrefix] {
			seen[r.statPrefix] = true
			f(w.st.rdsStats(r.statPrefix, name))
		}
	}
}

// setGauges publishes the warming and active totals.
func (s *watchStats) setGauges(w *Watcher) {
	s.lWarming.Set(int64(len(w.lds.warming)))
	s.cWarming.Set(int64(len(w.cds.warming)))
	s.cActive.Set(int64(len(w.cds.active) + len(w.o.Bootstrap.GetStaticResources().GetClusters())))
}

// versionHash is the value of a version gauge: Envoy reports a 64-bit hash
// of version_info; hop uses FNV-1a, kept positive for the int64 gauge.
func versionHash(v string) int64 {
	h := fnv.New64a()
	h.Write([]byte(v))
	return int64(h.Sum64() >> 1)
}
