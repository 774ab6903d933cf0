package watch

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/resource"
)

// onUpdateLocked handles one response of any type; see the package doc.
func (w *Watcher) onUpdateLocked(u client.Update) error {
	switch u.TypeURL {
	case client.ListenerType:
		return handleUpdate(w, w.lds, u, true, w.checkListenerLocked, listenerDeps)
	case client.ClusterType:
		return handleUpdate(w, w.cds, u, true, w.checkClusterLocked, clusterDeps)
	case client.RouteType:
		return handleUpdate(w, w.rds, u, false, w.checkRouteLocked, nil)
	case client.EndpointType:
		return handleUpdate(w, w.eds, u, false, w.checkEndpointsLocked, nil)
	}
	return fmt.Errorf("hop does not handle %s", u.TypeURL)
}

// saved is the tables before an update, to go back to if it cannot be
// applied.
type saved struct {
	lds *table[*listenerv3.Listener]
	cds *table[*clusterv3.Cluster]
	rds *table[*routev3.RouteConfiguration]
	eds *table[*endpointv3.ClusterLoadAssignment]
}

func (w *Watcher) saveLocked() saved {
	return saved{w.lds.clone(), w.cds.clone(), w.rds.clone(), w.eds.clone()}
}

func (w *Watcher) restoreLocked(s saved) {
	*w.lds, *w.cds, *w.rds, *w.eds = *s.lds, *s.cds, *s.rds, *s.eds
}

// handleUpdate applies one response to t. warm says whether accepted
// versions go through warming (listeners, clusters). check validates one
// resource; depsOf finds what it refers to.
func handleUpdate[T proto.Message](w *Watcher, t *table[T], u client.Update, warm bool,
	check func(name string, m T) error, depsOf func(T) deps) error {
	ts := w.st.forType(u.TypeURL)
	ts.attempt.Inc()
	now := time.Now()
	full := u.FullState && warm // SotW listeners and clusters are complete
	save := w.saveLocked()

	var errs []string
	seen := map[string]bool{}
	changed := false
	for _, r := range u.Resources {
		if r.Name != "" {
			seen[r.Name] = true
		}
		if !warm && !t.wanted[r.Name] {
			continue // a route or endpoints hop did not ask for (or no longer wants)
		}
		w.countNamed(u.TypeURL, r.Name, func(c *namedStats) { c.attempt.Inc() })
		if r.Err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", describe(u.TypeURL, r.Name), r.Err))
			continue
		}
		m, ok := r.Message.(T)
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: unexpected message %T", describe(u.TypeURL, r.Name), r.Message))
			continue
		}
		if err := check(r.Name, m); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", describe(u.TypeURL, r.Name), err))
			t.setError(r.Name, m, err, now)
			w.countNamed(u.TypeURL, r.Name, func(c *namedStats) { c.rejected.Inc() })
			continue
		}
		delete(t.errs, r.Name)
		w.countNamed(u.TypeURL, r.Name, func(c *namedStats) { c.success.Inc() })
		if cur := t.latest(r.Name); cur != nil && proto.Equal(cur.msg, m) {
			continue // unchanged: keep the same pointer so nothing recompiles
		}
		version := u.Version
		if r.Version != "" {
			version = r.Version
		}
		e := &entry[T]{msg: m, version: version, updated: now}
		if depsOf != nil {
			e.deps = depsOf(m)
		}
		if warm {
			if t.active[r.Name] != nil {
				inc(ts.modified)
			} else {
				inc(ts.added)
			}
			t.warming[r.Name] = e
		} else {
			t.active[r.Name] = e
			w.countNamed(u.TypeURL, r.Name, func(c *namedStats) { c.reload.Inc() })
		}
		changed = true
	}
	var gone []string
	if full {
		for name := range t.names() {
			if !seen[name] {
				gone = append(gone, name)
			}
		}
	}
	gone = append(gone, u.Removed...)
	for _, name := range gone {
		if t.remove(name) {
			inc(ts.removed)
			changed = true
		}
	}
	if len(u.Resources) == 0 && len(u.Removed) == 0 {
		ts.empty.Inc()
	}
	w.markReadyLocked(u.TypeURL)
	promoted := w.promoteLocked()
	if changed || promoted {
		if err := w.applyLocked(u.TypeURL[strings.LastIndexByte(u.TypeURL, '.')+1:] + " " + u.Version); err != nil && !errApplied(err) {
			w.restoreLocked(save)
			errs = append(errs, err.Error())
		} else if err != nil {
			errs = append(errs, err.Error())
		}
	}
	w.resubscribeLocked()
	w.st.setGauges(w)
	if len(errs) > 0 {
		ts.rejected.Inc()
		return errors.New(strings.Join(errs, "; "))
	}
	ts.success.Inc()
	t.version = u.Version
	t.lastSeen = now
	ts.version.Set(versionHash(u.Version))
	return nil
}

// describe names a resource for a NACK: "listener 'l1'".
func describe(typeURL, name string) string {
	kind := map[string]string{
		client.ListenerType: "listener", client.ClusterType: "cluster",
		client.RouteType: "route configuration", client.EndpointType: "cluster load assignment",
	}[typeURL]
	if name == "" {
		return kind + " (unnamed)"
	}
	return kind + " '" + name + "'"
}

// markReadyLocked notes the first listener or cluster response (Envoy's
// init targets are satisfied by the first response, accepted or not).
func (w *Watcher) markReadyLocked(typeURL string) {
	switch typeURL {
	case client.ListenerType:
		w.ldsReady = true
	case client.ClusterType:
		w.cdsReady = true
	}
}

func (w *Watcher) checkListenerLocked(name string, l *listenerv3.Listener) error {
	if w.static.lnames[name] {
		return errors.New("a static listener has this name; static listeners cannot be changed over LDS")
	}
	if err := resource.ValidateListener(l); err != nil {
		return err
	}
	if a := listenerAddress(l); a != "" {
		if other, ok := w.static.addrs[a]; ok {
			return fmt.Errorf("address %s is already used by static listener '%s'", a, other)
		}
		for n, e := range w.lds.active {
			if n != name && listenerAddress(e.msg) == a {
				return fmt.Errorf("address %s is already used by listener '%s'", a, n)
			}
		}
		for n, e := range w.lds.warming {
			if n != name && listenerAddress(e.msg) == a {
				return fmt.Errorf("address %s is already used by listener '%s'", a, n)
			}
		}
	}
	for _, r := range listenerDeps(l).routes {
		if err := checkSource(w.o.Bootstrap, r.source, r.path); err != nil {
			return err
		}
	}
	return w.o.Applier.Check(l)
}

func (w *Watcher) checkClusterLocked(name string, c *clusterv3.Cluster) error {
	if w.static.cnames[name] {
		return errors.New("a static cluster has this name; static clusters cannot be changed over CDS")
	}
	if err := resource.ValidateCluster(c); err != nil {
		return err
	}
	if d := clusterDeps(c).eds; d != nil {
		if d.source == nil {
			return errors.New("eds_cluster_config.eds_config: must be set")
		}
		if err := checkSource(w.o.Bootstrap, d.source, d.path); err != nil {
			return err
		}
	}
	return w.o.Applier.Check(c)
}

func (w *Watcher) checkRouteLocked(_ string, rc *routev3.RouteConfiguration) error {
	if err := resource.ValidateRouteConfiguration(rc); err != nil {
		return err
	}
	return w.o.Applier.Check(rc)
}

func (w *Watcher) checkEndpointsLocked(_ string, cla *endpointv3.ClusterLoadAssignment) error {
	if err := resource.Validate(cla); err != nil {
		return err
	}
	return w.o.Applier.Check(cla)
}

// promoteLocked moves warmed listeners and clusters to active and reports
// whether anything moved. A cluster is warm once its endpoints arrived (or
// timed out); a listener once every route configuration it names arrived
// (or timed out) and the first cluster response was handled.
func (w *Watcher) promoteLocked() bool {
	moved := false
	for name, e := range w.cds.warming {
		if d := e.deps.eds; d != nil && w.eds.active[d.service] == nil && !w.eds.timedOut[d.service] {
			continue
		}
		w.cds.active[name] = e
		delete(w.cds.warming, name)
		moved = true
	}
	if !w.cdsReady {
		return moved
	}
	for name, e := range w.lds.warming {
		ready := true
		for _, r := range e.deps.routes {
			if w.rds.active[r.name] == nil && !w.rds.timedOut[r.name] {
				ready = false
			}
		}
		if ready {
			w.lds.active[name] = e
			delete(w.lds.warming, name)
			moved = true
		}
	}
	return moved
}

// resubscribeLocked subscribes each source to exactly the route and
// endpoint names that the listeners and clusters (active and warming) use,
// drops the resources no one uses any more, and starts the
// initial_fetch_timeout of names that are new.
func (w *Watcher) resubscribeLocked() {
	if !w.started {
		return
	}
	routes := map[string]*want{} // by source key
	eds := map[string]*want{}
	routeNames := map[string]bool{}
	for _, r := range w.allRouteRefsLocked() {
		src, err := w.sourceLocked(r.source, r.path)
		if err != nil {
			continue // the listener was checked; a static one is reported at start
		}
		k := sourceKey(r.source)
		if routes[k] == nil {
			routes[k] = &want{src: src, names: map[string]bool{}}
		}
		routes[k].names[r.name] = true
		if !w.rds.wanted[r.name] {
			w.startFetchTimerLocked(client.RouteType, r.name, initialFetchTimeout(r.source))
		}
		routeNames[r.name] = true
	}
	edsNames := map[string]bool{}
	for _, d := range w.allEDSRefsLocked() {
		src, err := w.sourceLocked(d.source, d.path)
		if err != nil {
			continue
		}
		k := sourceKey(d.source)
		if eds[k] == nil {
			eds[k] = &want{src: src, names: map[string]bool{}}
		}
		eds[k].names[d.service] = true
		if !w.eds.wanted[d.service] {
			w.startFetchTimerLocked(client.EndpointType, d.service, initialFetchTimeout(d.source))
		}
		edsNames[d.service] = true
	}
	// Garbage-collect what no one refers to any more.
	for n := range w.rds.wanted {
		if !routeNames[n] {
			delete(w.rds.active, n)
			delete(w.rds.errs, n)
			delete(w.rds.timedOut, n)
		}
	}
	for n := range w.eds.wanted {
		if !edsNames[n] {
			delete(w.eds.active, n)
			delete(w.eds.errs, n)
			delete(w.eds.timedOut, n)
		}
	}
	w.rds.wanted, w.eds.wanted = routeNames, edsNames
	w.setSubscriptionsLocked(client.RouteType, routes)
	w.setSubscriptionsLocked(client.EndpointType, eds)
}

// want is the names one source should send for one type.
type want struct {
	src   source
	names map[string]bool
}

// setSubscriptionsLocked sends each source its name set for typeURL when it
// changed since the last time; a source that no longer has any name gets
// an empty set once, to unsubscribe.
func (w *Watcher) setSubscriptionsLocked(typeURL string, m map[string]*want) {
	sent := w.subs[typeURL]
	if sent == nil {
		sent = map[string]string{}
		w.subs[typeURL] = sent
	}
	h := w.handlers[typeURL]
	for k, v := range m {
		names := slices.Sorted(maps.Keys(v.names))
		if key := strings.Join(names, "\x00"); sent[k] != key {
			v.src.Watch(typeURL, false, names, h)
			sent[k] = key
		}
	}
	for k := range sent {
		if m[k] == nil {
			w.sources[k].Watch(typeURL, false, nil, h)
			delete(sent, k)
		}
	}
}

// startFetchTimerLocked arms the initial_fetch_timeout of a route or
// endpoints name: if it has not arrived by then, whatever waits for it
// stops waiting (a listener serves an empty route table, a cluster has no
// hosts), as in Envoy. d 0 waits forever.
func (w *Watcher) startFetchTimerLocked(typeURL, name string, d time.Duration) {
	if d <= 0 {
		return
	}
	w.afterLocked(d, func() {
		t := w.namedTable(typeURL)
		if !t.wanted[name] || t.has(name) {
			return
		}
		w.log.Warn("initial fetch timed out", "type", typeURL, "name", name, "timeout", d)
		t.timedOut[name] = true
		w.countNamed(typeURL, name, func(c *namedStats) { c.initFetchTimeout.Inc() })
		w.reapplyLocked()
	})
}

// namedTable is the table of a named type (routes or endpoints), reduced
// to what timers need.
func (w *Watcher) namedTable(typeURL string) namedInfo {
	if typeURL == client.RouteType {
		return namedInfo{wanted: w.rds.wanted, timedOut: w.rds.timedOut, has: func(n string) bool { return w.rds.active[n] != nil }}
	}
	return namedInfo{wanted: w.eds.wanted, timedOut: w.eds.timedOut, has: func(n string) bool { return w.eds.active[n] != nil }}
}

type namedInfo struct {
	wanted, timedOut map[string]bool
	has              func(string) bool
}

func (w *Watcher) allRouteRefsLocked() []routeRef {
	out := w.static.routeRefs()
	for _, tbl := range []map[string]*entry[*listenerv3.Listener]{w.lds.active, w.lds.warming} {
		for _, n := range slices.Sorted(maps.Keys(tbl)) {
			out = append(out, tbl[n].deps.routes...)
		}
	}
	return out
}

func (w *Watcher) allEDSRefsLocked() []*edsRef {
	out := w.static.edsRefs()
	for _, tbl := range []map[string]*entry[*clusterv3.Cluster]{w.cds.active, w.cds.warming} {
		for _, n := range slices.Sorted(maps.Keys(tbl)) {
			if d := tbl[n].deps.eds; d != nil {
				out = append(out, d)
			}
		}
	}
	return out
}

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}
