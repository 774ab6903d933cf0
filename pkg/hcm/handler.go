package hcm

import (
	"crypto/rand"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/tunnel"
)

// Manager serves requests for one filter chain's HttpConnectionManager. It
// holds the current Config behind an atomic pointer: a request loads it once
// and uses that view to its end, so a new Config only reaches new requests.
type Manager struct {
	cfg atomic.Pointer[Config]
	env *Env
}

// NewManager returns a Manager serving cfg.
func NewManager(cfg *Config, env *Env) *Manager {
	m := &Manager{env: env}
	m.cfg.Store(cfg)
	return m
}

// Update swaps the configuration for new requests.
func (m *Manager) Update(cfg *Config) { m.cfg.Store(cfg) }

// Config returns the current configuration.
func (m *Manager) Config() *Config { return m.cfg.Load() }

// ServeHTTP implements http.Handler for HTTP/1.1 downstreams.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := m.cfg.Load()
	st := cfg.stats
	st.rqTotal.Inc()
	switch r.ProtoMajor {
	case 2:
		st.rqHTTP2Total.Inc()
	case 3:
		st.rqHTTP3Total.Inc()
	default:
		st.rqHTTP1Total.Inc()
	}
	st.rqActive.Inc()
	rw := &responseWriter{ResponseWriter: w}
	s := &stream{Stream: filter.Stream{Req: r, W: rw}, cfg: cfg, mgr: m, rw: rw}
	s.Env = s
	defer s.finish()

	keepPath := false
	if r.ProtoMajor >= 2 {
		// A CONNECT with :protocol carries a :path; `:protocol bytestream`
		// stays a CONNECT and its path still takes part in route matching
		// (envoy-semantics.md §2.3).
		keepPath = r.Method == http.MethodConnect && r.Header.Get(protocolHeader) != ""
		// An extended CONNECT becomes GET + Upgrade + Connection here, as
		// Envoy's HTTP/2 and HTTP/3 codecs hand it on.
		s.ExtendedConnect = tunnel.FromExtendedConnect(r)
	}
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 && !cfg.acceptHTTP10 {
		// Envoy refuses HTTP/1.0 unless accept_http_10 is set.
		rw.Header().Set("Connection", "close")
		s.Stream.LocalReply(http.StatusUpgradeRequired, "", "low_version")
		return
	}
	if r.Host == "" && cfg.defaultHost10 != "" && r.ProtoMinor == 0 {
		r.Host = cfg.defaultHost10
	}

	upgradeType := tunnel.Classify(r.Method, r.Header, cfg.ignoreUp)
	if upgradeType != "" && r.ProtoMajor == 1 {
		s.raw = newRawWriter(w)
		rw.ResponseWriter = s.raw
	}
	if r.ProtoMajor == 1 && r.Method == http.MethodConnect && !s.checkH1Connect(r) {
		return
	}
	s.mutateRequest(r, upgradeType != "")

	rreq := router.Request{Method: r.Method, Authority: r.Host, Path: r.URL.RequestURI(), Header: r.Header, IsConnect: r.Method == http.MethodConnect}
	if rreq.IsConnect && !keepPath {
		rreq.Path = "" // a plain CONNECT has no :path
	}
	s.VirtualHost, s.Route = cfg.routes.Match(&rreq)

	chain := cfg.chain
	if upgradeType != "" {
		ch, ok := cfg.upgradeChain(upgradeType, s.Route)
		if !ok && s.Route != nil {
			// Envoy: a matched route that does not allow this upgrade is
			// refused with 403, and the connection is closed afterwards
			// (rawWriter) so nothing the client sends next can be smuggled.
			st.wsOnNonWSRoute.Inc()
			if r.ProtoMajor == 2 {
				// The HTTP/2 server drains the connection (GOAWAY) when a
				// handler answers with Connection: close.
				rw.Header().Set("Connection", "close")
			}
			s.Stream.LocalReply(http.StatusForbidden, "", "upgrade_failed")
			return
		}
		if ok {
			st.upgradesTotal.Inc()
			st.upgradesActive.Inc()
			s.upgradeCounted = true
			s.UpgradeType = upgradeType
			if ch != nil {
				chain = ch
			}
		}
		// Not allowed and no route: the default chain answers 404.
	}
	chain.Serve(&s.Stream)
}

// checkH1Connect applies the HTTP/1.1 codec's CONNECT rules
// (envoy-semantics.md §3.6) and answers the request when it breaks one: the
// request-target must be authority-form (else 400), a Transfer-Encoding is
// 501, a Content-Length other than 0 is 400; "Content-Length: 0" is
// removed. The Host header plays no part: net/http already put the
// request-target in r.Host, which is what the virtual hosts match. The
// connection closes after a refusal (rawWriter), as Envoy treats these as
// codec errors.
func (s *stream) checkH1Connect(r *http.Request) bool {
	switch {
	case r.RequestURI == "" || strings.ContainsAny(r.RequestURI, "/?#@"):
		s.Stream.LocalReply(http.StatusBadRequest, "", "http1.invalid_url")
		return false
	case len(r.TransferEncoding) > 0 || r.Header.Get("Transfer-Encoding") != "":
		s.Stream.LocalReply(http.StatusNotImplemented, "", "http1.invalid_transfer_encoding")
		return false
	case r.ContentLength != 0:
		s.Stream.LocalReply(http.StatusBadRequest, "", "http1.body_disallowed")
		return false
	}
	r.Header.Del("Content-Length")
	return true
}

// upgradeChain applies Envoy's truth table (envoy-semantics.md §2.2): a
// route entry for the type decides when present; otherwise the HCM entry
// does. The chain is the HCM's custom one for the type, or nil for the
// default http_filters.
func (c *Config) upgradeChain(upgradeType string, rt *router.Route) (filter.Handler, bool) {
	key := strings.ToLower(upgradeType)
	hcmEntry, hcmHas := c.upgrades[key]
	allowed := hcmHas && hcmEntry.enabled
	if rt != nil {
		if ru, ok := rt.UpgradeFor(upgradeType); ok {
			allowed = ru.Enabled
		}
	}
	if !allowed {
		return nil, false
	}
	return hcmEntry.chain, true
}

// mutateRequest applies Envoy's connection-manager request header rules.
func (s *stream) mutateRequest(r *http.Request, upgrade bool) {
	cfg := s.cfg
	h := r.Header
	h.Del("Keep-Alive")
	h.Del("Proxy-Connection")
	if !upgrade {
		if te := h.Get("Te"); te != "" && !strings.EqualFold(strings.TrimSpace(te), "trailers") {
			h.Del("Te")
		}
	}
	if cfg.via != "" {
		appendHeader(h, "Via", cfg.via, ", ")
	}
	if cfg.stripAnyPort || cfg.stripMatchingPort {
		if _, port, err := net.SplitHostPort(r.Host); err == nil {
			if cfg.stripAnyPort || port == s.localPort() {
				r.Host = r.Host[:len(r.Host)-len(port)-1] // an IPv6 literal keeps its brackets
				if r.Method == http.MethodConnect || s.ExtendedConnect {
					// Envoy's envoy.router.original_connect_port: the
					// router puts the port back before the request goes
					// upstream (OriginalConnectPort).
					s.connectPort = port
				}
			}
		}
	}
	remoteIP := ""
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		remoteIP = host
	}
	if cfg.useRemoteAddress {
		if !cfg.skipXFFAppend && remoteIP != "" {
			appendHeader(h, "X-Forwarded-For", remoteIP, ",")
		}
		h.Set("X-Forwarded-Proto", s.scheme())
	} else if h.Get("X-Forwarded-Proto") == "" {
		h.Set("X-Forwarded-Proto", s.scheme())
	}
	if cfg.generateRequestID {
		external := cfg.useRemoteAddress && !isInternal(remoteIP)
		if h.Get("X-Request-Id") == "" || (external && !cfg.preserveExtReqID) {
			h.Set("X-Request-Id", newUUID())
		}
	}
}

// appendHeader appends v to header name, joined with sep the way Envoy
// appends (x-forwarded-for with ",", via with ", ").
func appendHeader(h http.Header, name, v, sep string) {
	if prior := h.Values(name); len(prior) > 0 {
		h.Set(name, strings.Join(prior, sep)+sep+v)
		return
	}
	h.Set(name, v)
}

func (s *stream) scheme() string {
	if s.Req.TLS != nil {
		return "https"
	}
	return "http"
}

func (s *stream) localPort() string {
	_, p, _ := net.SplitHostPort(s.Stream.DownstreamLocalAddress())
	return p
}

// isInternal is Envoy's notion of an internal address: RFC 1918, loopback
// and unique-local IPv6.
func isInternal(ip string) bool {
	a := net.ParseIP(ip)
	return a != nil && (a.IsPrivate() || a.IsLoopback())
}

// newUUID returns a random (version 4) UUID, as Envoy's x-request-id.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexd[c>>4], hexd[c&0xf]
		j += 2
	}
	return string(out[:])
}
