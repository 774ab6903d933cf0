// Package admin is hop's version of Envoy's admin interface: the HTTP server
// bound to the bootstrap's admin.address.
//
// It answers the endpoints operators and tools script against Envoy with the
// same methods, status codes and output formats: /ready, /server_info,
// /stats (text, json, prometheus), /stats/prometheus, /config_dump (with
// resource, mask and name_regex), /listeners, /clusters, /quitquitquit, plus
// Go's pprof handlers under /debug/pprof/. As in Envoy, a path is matched
// exactly (the query string aside), an endpoint that changes server state
// must be called with POST (405 otherwise), and an unknown path gets 404 with
// the list of commands.
//
// The package owns no proxy state. Everything it reports comes through the
// callbacks in Options, which the composition root wires to the live
// snapshot, listener manager and cluster manager; each callback is called on
// the request's goroutine and must be safe for concurrent use.
package admin

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/hopproxy/hop/pkg/stats"
)

// Options wires the admin server to the rest of the process. Every field is
// optional; a nil callback makes its endpoint report an empty set.
type Options struct {
	// Stats is the process's stat store (/stats, /stats/prometheus).
	Stats *stats.Store
	// ConfigDump returns the current configuration (/config_dump). The
	// server never mutates the returned message, so it may be shared.
	ConfigDump func() *adminv3.ConfigDump
	// Listeners lists the active listeners (/listeners).
	Listeners func() []ListenerStatus
	// Clusters lists the active clusters and their hosts (/clusters).
	Clusters func() []ClusterStatus
	// Ready reports whether the server is LIVE (/ready, /server_info).
	Ready func() bool
	// State, when set, overrides Ready with a precise server state so that
	// /ready can report DRAINING or INITIALIZING as Envoy does.
	State func() adminv3.ServerInfo_State
	// Quit is called once, after the reply to the first POST /quitquitquit
	// has been flushed. It runs on the request's goroutine, so it must only
	// signal shutdown (cancel a context, close a channel) and never wait for
	// this server's Shutdown.
	Quit func()
	// Log receives the server's own log lines; nil discards them.
	Log *slog.Logger

	// Version is reported by /server_info (Envoy reports its build version).
	Version string
	// Node is the bootstrap's node, reported by /server_info.
	Node *corev3.Node
	// CommandLine is reported by /server_info as command_line_options.
	CommandLine *adminv3.CommandLineOptions
	// Start is the process start time used for uptime; zero means the time
	// New was called.
	Start time.Time

	// Extra adds endpoints owned by other packages (for example /tunnels).
	// A path already served by this package is ignored.
	Extra []Endpoint
}

// Endpoint is an additional admin command.
type Endpoint struct {
	Path    string // exact path, e.g. "/tunnels"
	Help    string // one line for the index and the 404 text
	Mutates bool   // true: POST is required, as Envoy requires for state changes
	Handler http.Handler
}

// ListenerStatus is one active listener.
type ListenerStatus struct {
	Name string
	// Address is the bound address, "0.0.0.0:10000" or "[::1]:80"; a path
	// (pipe or abstract socket) is reported as such.
	Address string
	// AdditionalAddresses are the listener's additional_addresses, bound.
	AdditionalAddresses []string
}

// ClusterStatus is one active cluster.
type ClusterStatus struct {
	Name string
	// ObservabilityName defaults to Name, as in Envoy.
	ObservabilityName string
	// EDSServiceName is reported when non-empty.
	EDSServiceName string
	// AddedViaAPI is true for clusters that came from CDS.
	AddedViaAPI bool
	// Default and High are the circuit-breaker thresholds of the two
	// priorities; nil means Envoy's defaults (1024, 1024, 1024, 3).
	Default, High *Thresholds
	Hosts         []HostStatus
}

// Thresholds are a priority's circuit-breaker limits.
type Thresholds struct {
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries uint64
}

// HostStatus is one upstream host of a cluster.
type HostStatus struct {
	Address string // "ip:port"
	// Envoy's per-host stats.
	CxActive, CxConnectFail, CxTotal, RqActive, RqTotal int64
	RqError, RqSuccess, RqTimeout                       int64
	Healthy                                             bool
	// HealthFlags overrides the flags derived from Healthy ("healthy" or
	// "/failed_active_hc") with Envoy's exact flag string, e.g.
	// "/failed_eds_health" or "/failed_active_hc/failed_outlier_check".
	HealthFlags string
	Hostname    string
	Weight      uint32 // 0 is reported as 1, Envoy's default
	Priority    uint32
	Region      string
	Zone        string
	SubZone     string
}

// route is one admin command.
type route struct {
	path    string
	help    string
	params  []param
	mutates bool
	handler http.Handler
}

type param struct {
	name, help string
}

// Server is the admin HTTP server.
type Server struct {
	// Immutable after New.
	opts     Options
	log      *slog.Logger
	start    time.Time
	routes   map[string]*route
	sorted   []*route // by path, for the index and help
	pprofMux *http.ServeMux
	handler  http.Handler
	srv      *http.Server

	// quitOnce makes Quit run at most once.
	quitOnce sync.Once
}

// New builds the server. It does not listen; call Serve.
func New(o Options) *Server {
	s := &Server{opts: o, log: o.Log, start: o.Start}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "admin")
	if s.start.IsZero() {
		s.start = time.Now()
	}
	s.pprofMux = http.NewServeMux()
	s.pprofMux.HandleFunc("/debug/pprof/", pprof.Index)
	s.pprofMux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.pprofMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.pprofMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.pprofMux.HandleFunc("/debug/pprof/trace", pprof.Trace)

	fmtParam := param{"format", "output format; one of (text, json)"}
	builtin := []*route{
		{path: "/", help: "admin home page", handler: http.HandlerFunc(s.handleHome)},
		{path: "/clusters", help: "upstream cluster status", params: []param{fmtParam},
			handler: http.HandlerFunc(s.handleClusters)},
		{path: "/config_dump", help: "dump the current configuration", params: []param{
			{"resource", "dump only this repeated field of the dump messages, e.g. static_listeners"},
			{"mask", "FieldMask applied to each dump message, or to each resource when resource is set"},
			{"name_regex", "dump only the resources whose names match this regular expression"},
		}, handler: http.HandlerFunc(s.handleConfigDump)},
		{path: "/debug/pprof/", help: "Go runtime profiles (net/http/pprof)", handler: s.pprofMux},
		{path: "/help", help: "print the list of admin commands", handler: http.HandlerFunc(s.handleHelp)},
		{path: "/listeners", help: "listener names and bound addresses", params: []param{fmtParam},
			handler: http.HandlerFunc(s.handleListeners)},
		{path: "/quitquitquit", help: "exit the server", mutates: true,
			handler: http.HandlerFunc(s.handleQuit)},
		{path: "/ready", help: "print the server state; 200 when LIVE, 503 otherwise",
			handler: http.HandlerFunc(s.handleReady)},
		{path: "/server_info", help: "server version and state", handler: http.HandlerFunc(s.handleServerInfo)},
		{path: "/stats", help: "server stats", params: []param{
			{"usedonly", "accepted; every stat hop creates is reported"},
			{"filter", "regular expression (RE2 syntax) that stat names must match"},
			{"format", "output format; one of (text, json, prometheus)"},
			{"type", "stat types to show; one of (All, Counters, Gauges, Histograms, TextReadouts)"},
		}, handler: http.HandlerFunc(s.handleStats)},
		{path: "/stats/prometheus", help: "server stats in Prometheus text format", params: []param{
			{"usedonly", "accepted; every stat hop creates is reported"},
			{"filter", "regular expression (RE2 syntax) that stat names must match"},
		}, handler: http.HandlerFunc(s.handlePrometheus)},
	}
	s.routes = make(map[string]*route, len(builtin)+len(o.Extra))
	for _, r := range builtin {
		s.routes[r.path] = r
	}
	for _, e := range o.Extra {
		if _, dup := s.routes[e.Path]; dup || e.Handler == nil || !strings.HasPrefix(e.Path, "/") {
			s.log.Warn("ignoring extra admin endpoint", "path", e.Path)
			continue
		}
		s.routes[e.Path] = &route{path: e.Path, help: e.Help, mutates: e.Mutates, handler: e.Handler}
	}
	for _, r := range s.routes {
		s.sorted = append(s.sorted, r)
	}
	sort.Slice(s.sorted, func(i, j int) bool { return s.sorted[i].path < s.sorted[j].path })

	s.handler = http.HandlerFunc(s.serveHTTP)
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// Handler returns the admin handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts admin connections on l until Shutdown. It returns nil after
// Shutdown and the accept error otherwise.
func (s *Server) Serve(l net.Listener) error {
	s.log.Info("admin address", "address", l.Addr().String())
	if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting, lets in-flight requests finish until ctx is done,
// then closes whatever connections remain.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// serveHTTP dispatches like Envoy's admin: exact path match, POST for
// commands that change state, 404 with the help text otherwise.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Envoy's fallback headers on every admin response; handlers override
	// Content-Type when they emit something else.
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Cache-Control", "no-cache, max-age=0")
	h.Set("X-Content-Type-Options", "nosniff")

	rt, ok := s.routes[r.URL.Path]
	if !ok && strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
		rt, ok = s.routes["/debug/pprof/"], true
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		var b strings.Builder
		b.WriteString("invalid path. ")
		s.writeHelp(&b)
		_, _ = w.Write([]byte(b.String()))
		return
	}
	if rt.mutates && r.Method != http.MethodPost {
		s.log.Warn("admin path mutates state and needs POST", "path", rt.path, "method", r.Method)
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = fmt.Fprintf(w, "Method %s not allowed, POST required.", r.Method)
		return
	}
	rt.handler.ServeHTTP(w, r)
}

func (s *Server) writeHelp(b *strings.Builder) {
	b.WriteString("admin commands are:\n")
	for _, r := range s.sorted {
		post := ""
		if r.mutates {
			post = " (POST)"
		}
		fmt.Fprintf(b, "  %s%s: %s\n", r.path, post, r.help)
		for _, p := range r.params {
			fmt.Fprintf(b, "      %s: %s\n", p.name, p.help)
		}
	}
}

func (s *Server) handleHelp(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	s.writeHelp(&b)
	_, _ = w.Write([]byte(b.String()))
}

// handleHome is a small HTML index: a link per read-only command and a POST
// form per command that changes state.
func (s *Server) handleHome(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><title>hop admin</title></head><body>\n")
	b.WriteString("<h1>hop admin</h1>\n<table>\n")
	for _, r := range s.sorted {
		if r.path == "/" {
			continue
		}
		p := html.EscapeString(r.path)
		if r.mutates {
			fmt.Fprintf(&b, "<tr><td><form action=%q method=\"post\"><button type=\"submit\">%s</button></form></td>",
				p, p)
		} else {
			fmt.Fprintf(&b, "<tr><td><a href=%q>%s</a></td>", p, p)
		}
		fmt.Fprintf(&b, "<td>%s</td></tr>\n", html.EscapeString(r.help))
	}
	b.WriteString("</table>\n</body></html>\n")
	w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	_, _ = w.Write([]byte(b.String()))
}

// state is the server state reported by /ready and /server_info.
func (s *Server) state() adminv3.ServerInfo_State {
	if s.opts.State != nil {
		return s.opts.State()
	}
	if s.opts.Ready != nil && s.opts.Ready() {
		return adminv3.ServerInfo_LIVE
	}
	return adminv3.ServerInfo_PRE_INITIALIZING
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	st := s.state()
	if st != adminv3.ServerInfo_LIVE {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(st.String() + "\n"))
}

func (s *Server) handleQuit(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("OK\n"))
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.quitOnce.Do(func() {
		s.log.Info("quitquitquit: shutting down")
		if s.opts.Quit != nil {
			s.opts.Quit()
		}
	})
}
