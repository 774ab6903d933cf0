// Package stats holds hop's counters and gauges under Envoy's stat names.
//
// A stat has two names: the flat Envoy name used by /stats
// ("http.ingress.downstream_rq_total") and a Prometheus name with the
// tag Envoy's default tag extractors would pull out of it
// (envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress"}).
// Callers get both by creating stats through a Scope, which carries the
// prefix and its tag.
//
// Stats are created once, when configuration is compiled, and the hot path
// holds the returned *Counter or *Gauge: incrementing is one atomic add and
// never allocates or takes a lock. Stats are never deleted, as in Envoy: a
// counter keeps its value across config reloads that recreate its owner.
package stats

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Counter is a monotonically increasing value.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value reads the counter.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is a value that goes up and down.
type Gauge struct{ v atomic.Int64 }

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Add adds n (which may be negative).
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Set replaces the value.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Value reads the gauge.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Kind tells a counter from a gauge.
type Kind int

const (
	KindCounter Kind = iota
	KindGauge
)

type entry struct {
	name     string // flat Envoy name
	promName string // envoy_<...> without labels
	labels   string // `k="v"` or ""
	kind     Kind
	counter  *Counter
	gauge    *Gauge
}

// Store owns every stat of the process. The zero value is not usable; call New.
type Store struct {
	mu      sync.Mutex // guards entries; only taken when a stat is created or listed
	entries map[string]*entry
}

// New returns an empty store.
func New() *Store { return &Store{entries: map[string]*entry{}} }

// Scope is a place in the stat namespace: "http.ingress." with the tag
// envoy_http_conn_manager_prefix="ingress", or the root scope.
type Scope struct {
	store      *Store
	prefix     string // flat prefix, ends in "." unless empty
	promPrefix string // "envoy_http_", "envoy_" ...
	labels     string
}

// Root is the scope without a prefix ("server.live" is created as
// Root().Counter or Gauge("server.live")).
func (s *Store) Root() Scope { return Scope{store: s, promPrefix: "envoy_"} }

// Tagged returns the scope "<family>.<value>." whose Prometheus form is
// envoy_<family>_<stat>{<tag>="<value>"}: for example
// Tagged("http", "ingress", "envoy_http_conn_manager_prefix").
func (s *Store) Tagged(family, value, tag string) Scope {
	return Scope{
		store:      s,
		prefix:     family + "." + value + ".",
		promPrefix: "envoy_" + promSanitize(family) + "_",
		labels:     tag + "=" + strconv.Quote(value),
	}
}

// Sub returns a child scope with an extra flat segment that stays part of the
// stat name in both forms ("http.ingress." → "http.ingress.rds.local_route.").
func (sc Scope) Sub(segment string) Scope {
	return Scope{
		store:      sc.store,
		prefix:     sc.prefix + segment + ".",
		promPrefix: sc.promPrefix + promSanitize(segment) + "_",
		labels:     sc.labels,
	}
}

// Prefix is the flat prefix of the scope, e.g. "http.ingress.".
func (sc Scope) Prefix() string { return sc.prefix }

// Counter returns the counter named prefix+name, creating it at zero.
func (sc Scope) Counter(name string) *Counter {
	return sc.store.get(sc, name, KindCounter).counter
}

// Gauge returns the gauge named prefix+name, creating it at zero.
func (sc Scope) Gauge(name string) *Gauge {
	return sc.store.get(sc, name, KindGauge).gauge
}

func (s *Store) get(sc Scope, name string, kind Kind) *entry {
	full := sc.prefix + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[full]; ok {
		if e.kind != kind {
			panic(fmt.Sprintf("stats: %q used as both counter and gauge", full))
		}
		return e
	}
	e := &entry{name: full, promName: sc.promPrefix + promSanitize(name), labels: sc.labels, kind: kind}
	if kind == KindCounter {
		e.counter = &Counter{}
	} else {
		e.gauge = &Gauge{}
	}
	s.entries[full] = e
	return e
}

// Sample is one stat's value at the time of a listing.
type Sample struct {
	Name  string
	Kind  Kind
	Value int64
}

// Snapshot lists every stat whose flat name matches filter (nil: all),
// sorted by name.
func (s *Store) Snapshot(filter *regexp.Regexp) []Sample {
	s.mu.Lock()
	out := make([]Sample, 0, len(s.entries))
	for _, e := range s.entries {
		if filter != nil && !filter.MatchString(e.name) {
			continue
		}
		out = append(out, Sample{Name: e.name, Kind: e.kind, Value: e.value()})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the current value of the named stat and whether it exists.
func (s *Store) Get(name string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[name]
	if !ok {
		return 0, false
	}
	return e.value(), true
}

func (e *entry) value() int64 {
	if e.kind == KindCounter {
		return int64(e.counter.Value())
	}
	return e.gauge.Value()
}

// WriteText writes "name: value" lines as Envoy's /stats does.
func (s *Store) WriteText(w io.Writer, filter *regexp.Regexp) error {
	for _, smp := range s.Snapshot(filter) {
		if _, err := fmt.Fprintf(w, "%s: %d\n", smp.Name, smp.Value); err != nil {
			return err
		}
	}
	return nil
}

// WritePrometheus writes the Prometheus text exposition format, grouping
// series of the same metric under one TYPE line as /stats/prometheus does.
func (s *Store) WritePrometheus(w io.Writer, filter *regexp.Regexp) error {
	s.mu.Lock()
	es := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		if filter == nil || filter.MatchString(e.name) {
			es = append(es, e)
		}
	}
	s.mu.Unlock()
	sort.Slice(es, func(i, j int) bool {
		if es[i].promName != es[j].promName {
			return es[i].promName < es[j].promName
		}
		return es[i].labels < es[j].labels
	})
	last := ""
	for _, e := range es {
		if e.promName != last {
			typ := "counter"
			if e.kind == KindGauge {
				typ = "gauge"
			}
			if _, err := fmt.Fprintf(w, "# TYPE %s %s\n", e.promName, typ); err != nil {
				return err
			}
			last = e.promName
		}
		var err error
		if e.labels != "" {
			_, err = fmt.Fprintf(w, "%s{%s} %d\n", e.promName, e.labels, e.value())
		} else {
			_, err = fmt.Fprintf(w, "%s %d\n", e.promName, e.value())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// promSanitize maps a stat name segment to Prometheus' alphabet as Envoy does
// (every character outside [a-zA-Z0-9_] becomes '_').
func promSanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

// ListenerStatName is the segment Envoy uses for a listener's stats:
// "0.0.0.0_10000" for 0.0.0.0:10000, "[::1]_80" style IPv6 written as "::1_80".
func ListenerStatName(host string, port uint32) string {
	return host + "_" + strconv.FormatUint(uint64(port), 10)
}
