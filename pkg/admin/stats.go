package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/hopproxy/hop/pkg/stats"
)

// promContentType is the Prometheus text exposition format's media type.
const promContentType = "text/plain; version=0.0.4"

// statsQuery is the parsed query of /stats and /stats/prometheus.
type statsQuery struct {
	filter *regexp.Regexp
	format string // "text", "json" or "prometheus"
	kinds  string // "All", "Counters", "Gauges", "Histograms", "TextReadouts"
	pretty bool
}

// parseStatsQuery reads the parameters Envoy's StatsParams reads. On a bad
// parameter it returns the 400 body, in Envoy's words where Envoy has them.
// usedonly and hidden are accepted and have no effect: hop creates a stat
// only when something uses it.
func parseStatsQuery(q url.Values) (sq statsQuery, badRequest string) {
	sq = statsQuery{format: "text", kinds: "All"}
	_, sq.pretty = q["pretty"]
	if f, ok := q["filter"]; ok && len(f) > 0 && f[0] != "" {
		re, err := regexp.Compile(f[0])
		if err != nil {
			return sq, "Invalid re2 regex: " + err.Error()
		}
		sq.filter = re
	}
	switch hb := q.Get("histogram_buckets"); hb {
	case "", "cumulative", "disjoint", "detailed", "none":
	default:
		return sq, "usage: /stats?histogram_buckets=(cumulative|disjoint|none)\n"
	}
	if t, ok := q["type"]; ok && len(t) > 0 {
		switch t[0] {
		case "All", "Counters", "Gauges", "Histograms", "TextReadouts":
			sq.kinds = t[0]
		default:
			return sq, "invalid &type= param"
		}
	}
	switch f := q.Get("format"); f {
	case "":
	case "text", "json", "prometheus":
		sq.format = f
	case "html", "active-html":
		return sq, "HTML output is not supported by hop"
	default:
		return sq, "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n"
	}
	return sq, ""
}

func (sq statsQuery) keep(k stats.Kind) bool {
	switch sq.kinds {
	case "All":
		return true
	case "Counters":
		return k == stats.KindCounter
	case "Gauges":
		return k == stats.KindGauge
	}
	return false // hop has no histograms or text readouts yet
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	sq, bad := parseStatsQuery(r.URL.Query())
	if bad != "" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(bad))
		return
	}
	if sq.format == "prometheus" {
		s.writePrometheus(w, sq)
		return
	}
	var samples []stats.Sample
	if s.opts.Stats != nil {
		samples = s.opts.Stats.Snapshot(sq.filter)
	}
	var buf bytes.Buffer
	if sq.format == "json" {
		type jsonStat struct {
			Name  string `json:"name"`
			Value int64  `json:"value"`
		}
		out := struct {
			Stats []jsonStat `json:"stats"`
		}{Stats: make([]jsonStat, 0, len(samples))}
		for _, smp := range samples {
			if sq.keep(smp.Kind) {
				out.Stats = append(out.Stats, jsonStat{smp.Name, smp.Value})
			}
		}
		var (
			b   []byte
			err error
		)
		if sq.pretty {
			b, err = json.MarshalIndent(out, "", "  ")
		} else {
			b, err = json.Marshal(out)
		}
		if err != nil {
			s.internalError(w, fmt.Errorf("admin: stats json: %w", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		buf.Write(b)
	} else {
		for _, smp := range samples {
			if sq.keep(smp.Kind) {
				fmt.Fprintf(&buf, "%s: %d\n", smp.Name, smp.Value)
			}
		}
	}
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	sq, bad := parseStatsQuery(r.URL.Query())
	if bad != "" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(bad))
		return
	}
	s.writePrometheus(w, sq)
}

func (s *Server) writePrometheus(w http.ResponseWriter, sq statsQuery) {
	var buf bytes.Buffer
	if s.opts.Stats != nil {
		if err := s.opts.Stats.WritePrometheus(&buf, sq.filter); err != nil {
			s.internalError(w, fmt.Errorf("admin: prometheus: %w", err))
			return
		}
	}
	w.Header().Set("Content-Type", promContentType)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("admin request failed", "error", err)
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(err.Error() + "\n"))
}

// Server state values of Envoy's server.state gauge.
const (
	stateLive            = 0
	statePreInitializing = 2
)

// RegisterServerStats creates Envoy's server.live, server.state and
// server.uptime gauges in st and keeps them current: they are set at once,
// then once a second by a goroutine that stop ends (stop waits for it and
// may be called more than once). Envoy refreshes them on its stats flush;
// a one-second tick keeps uptime exact to the second for any reader of the
// store, not only for /stats.
func RegisterServerStats(st *stats.Store, start time.Time, ready func() bool) (stop func()) {
	t := time.NewTicker(time.Second)
	stopFn := registerServerStats(st, start, ready, t.C, time.Now)
	return func() {
		t.Stop()
		stopFn()
	}
}

// registerServerStats is RegisterServerStats with the clock injected.
func registerServerStats(st *stats.Store, start time.Time, ready func() bool,
	tick <-chan time.Time, now func() time.Time) (stop func()) {
	root := st.Root()
	u := serverStatsUpdater{
		live:   root.Gauge("server.live"),
		state:  root.Gauge("server.state"),
		uptime: root.Gauge("server.uptime"),
		start:  start,
		ready:  ready,
	}
	u.update(now())
	done := make(chan struct{})
	exited := make(chan struct{})
	go u.run(tick, now, done, exited)
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-exited
	}
}

// serverStatsUpdater owns the server.* gauges; only its goroutine (and
// registration, before the goroutine starts) writes them.
type serverStatsUpdater struct {
	live, state, uptime *stats.Gauge
	start               time.Time
	ready               func() bool
}

func (u *serverStatsUpdater) run(tick <-chan time.Time, now func() time.Time, done <-chan struct{}, exited chan<- struct{}) {
	defer close(exited)
	for {
		select {
		case <-done:
			return
		case <-tick:
			u.update(now())
		}
	}
}

func (u *serverStatsUpdater) update(t time.Time) {
	if u.ready != nil && u.ready() {
		u.live.Set(1)
		u.state.Set(stateLive)
	} else {
		u.live.Set(0)
		u.state.Set(statePreInitializing)
	}
	up := int64(t.Sub(u.start) / time.Second)
	if up < 0 {
		up = 0
	}
	u.uptime.Set(up)
}
