package hcm

import (
	"fmt"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/stats"
)

// Config is one compiled HttpConnectionManager. It is immutable: a new
// configuration compiles a new Config.
type Config struct {
	proto      *hcmv3.HttpConnectionManager
	statPrefix string
	routes     *router.Table
	rdsName    string                      // rds.route_config_name; "" with an inline route_config
	rdsProto   *routev3.RouteConfiguration // the RDS resource compiled into routes; nil when none has arrived
	chain      filter.Handler              // http_filters
	upgrades   map[string]upgradeEntry     // upgrade_configs, keyed by lower-cased type
	ignoreUp   func(token string) bool     // http_protocol_options.ignore_http_11_upgrade
	stats      *hcmStats

	streamIdle        time.Duration // stream_idle_timeout; 0 = off
	requestTimeout    time.Duration // request_timeout; 0 = off
	headersTimeout    time.Duration // request_headers_timeout; 0 = off
	connIdle          time.Duration // common_http_protocol_options.idle_timeout
	maxHeaderBytes    int           // max_request_headers_kb
	acceptHTTP10      bool
	defaultHost10     string
	useRemoteAddress  bool
	skipXFFAppend     bool
	generateRequestID bool
	preserveExtReqID  bool
	alwaysSetReqID    bool
	serverName        string
	serverHeader      hcmv3.HttpConnectionManager_ServerHeaderTransformation
	stripAnyPort      bool
	stripMatchingPort bool
	via               string // appended to Via on requests and responses

	// codec_type and http2_protocol_options (codec_options.go): fixed per
	// connection, compared by SameServer.
	codec hcmv3.HttpConnectionManager_CodecType
	h2    h2Options
	cs    *codecStats // http2.* codec stats and downstream_cx_protocol_error

	// http3_protocol_options (server_h3_options.go compileH3).
	allowExtendedConnect  bool // allow_extended_connect
	h3OverrideStreamError bool // override_stream_error_on_invalid_http_message, else stream_error_on_invalid_http_message
}

type upgradeEntry struct {
	enabled bool
	chain   filter.Handler // custom filters; nil = use http_filters
}

// Defaults Envoy applies when the fields are absent.
const (
	defaultStreamIdle   = 5 * time.Minute
	defaultConnIdle     = time.Hour
	defaultMaxHeadersKB = 60
	defaultServerName   = "envoy"
	routerFilterTypeURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
)

// RouteSource returns the RouteConfiguration that RDS delivered under name,
// or nil when none has (yet), and, when the caller already compiled it,
// its route table (nil: Compile compiles it). It is consulted only while
// compiling.
type RouteSource func(name string) (*routev3.RouteConfiguration, *router.Table)

// Compile builds a Config. Errors name the field relative to the
// HttpConnectionManager ("http_filters[1]: ..."). routes resolves
// rds.route_config_name; with nil routes, or when it has no resource under
// that name, the connection manager serves an empty route table (every
// request gets 404), as Envoy does once RDS's initial_fetch_timeout has
// passed. Whether a listener waits for its routes is the xDS layer's call.
func Compile(p *hcmv3.HttpConnectionManager, reg *filter.Registry, st *stats.Store, routes RouteSource) (*Config, error) {
	if err := p.ValidateAll(); err != nil {
		return nil, fmt.Errorf("hcm: %w", err)
	}
	c := &Config{
		proto:             p,
		codec:             p.GetCodecType(), // HTTP3 only on a QUIC listener (snapshot checks)
		statPrefix:        p.GetStatPrefix(),
		streamIdle:        durationOr(p.GetStreamIdleTimeout(), defaultStreamIdle),
		requestTimeout:    durationOr(p.GetRequestTimeout(), 0),
		headersTimeout:    durationOr(p.GetRequestHeadersTimeout(), 0),
		connIdle:          durationOr(p.GetCommonHttpProtocolOptions().GetIdleTimeout(), defaultConnIdle),
		maxHeaderBytes:    defaultMaxHeadersKB * 1024,
		useRemoteAddress:  p.GetUseRemoteAddress().GetValue(),
		skipXFFAppend:     p.GetSkipXffAppend(),
		generateRequestID: p.GetGenerateRequestId() == nil || p.GetGenerateRequestId().GetValue(),
		preserveExtReqID:  p.GetPreserveExternalRequestId(),
		alwaysSetReqID:    p.GetAlwaysSetRequestIdInResponse(),
		serverName:        p.GetServerName(),
		serverHeader:      p.GetServerHeaderTransformation(),
		stripAnyPort:      p.GetStripAnyHostPort(),
		stripMatchingPort: p.GetStripMatchingHostPort(),
	}
	if cp := p.GetCommonHttpProtocolOptions(); cp != nil {
		// Of the options shared with clusters, a connection manager honours
		// idle_timeout only.
		switch {
		case cp.GetMaxHeadersCount() != nil:
			return nil, fmt.Errorf("hcm: common_http_protocol_options.max_headers_count: unsupported field")
		case cp.GetMaxStreamDuration() != nil:
			return nil, fmt.Errorf("hcm: common_http_protocol_options.max_stream_duration: unsupported field")
		case cp.GetHeadersWithUnderscoresAction() != 0:
			return nil, fmt.Errorf("hcm: common_http_protocol_options.headers_with_underscores_action: unsupported field")
		case cp.GetMaxRequestsPerConnection() != nil:
			return nil, fmt.Errorf("hcm: common_http_protocol_options.max_requests_per_connection: unsupported field")
		case cp.GetMaxResponseHeadersKb() != nil:
			return nil, fmt.Errorf("hcm: common_http_protocol_options.max_response_headers_kb: unsupported field")
		}
	}
	c.via = p.GetVia()
	if c.serverName == "" {
		c.serverName = defaultServerName
	}
	if kb := p.GetMaxRequestHeadersKb(); kb != nil {
		c.maxHeaderBytes = int(kb.GetValue()) * 1024
	}
	if h1 := p.GetHttpProtocolOptions(); h1 != nil {
		c.acceptHTTP10 = h1.GetAcceptHttp_10()
		c.defaultHost10 = h1.GetDefaultHostForHttp_10()
		m, err := router.CompileStringMatchers(h1.GetIgnoreHttp_11Upgrade(), "http_protocol_options.ignore_http_11_upgrade")
		if err != nil {
			return nil, fmt.Errorf("hcm: %w", err)
		}
		c.ignoreUp = m
	}

	switch rs := p.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := router.Compile(rs.RouteConfig)
		if err != nil {
			return nil, fmt.Errorf("hcm: route_config: %w", err)
		}
		c.routes = t
	case *hcmv3.HttpConnectionManager_Rds:
		c.rdsName = rs.Rds.GetRouteConfigName()
		var rc *routev3.RouteConfiguration
		var t *router.Table
		if routes != nil {
			rc, t = routes(c.rdsName)
		}
		c.rdsProto = rc
		if rc == nil {
			rc = &routev3.RouteConfiguration{Name: c.rdsName}
		}
		if t == nil {
			var err error
			if t, err = router.Compile(rc); err != nil {
				return nil, fmt.Errorf("hcm: rds: route configuration %q: %w", c.rdsName, err)
			}
		}
		c.routes = t
	default:
		return nil, fmt.Errorf("hcm: route_specifier: only route_config is supported")
	}

	chain, err := compileChain(p.GetHttpFilters(), reg, "http_filters", "http filter chain")
	if err != nil {
		return nil, err
	}
	c.chain = chain

	c.upgrades = map[string]upgradeEntry{}
	for i, u := range p.GetUpgradeConfigs() {
		key := strings.ToLower(u.GetUpgradeType())
		if _, dup := c.upgrades[key]; dup {
			return nil, fmt.Errorf("hcm: upgrade_configs[%d]: Error: multiple upgrade configs with the same name: '%s'", i, key)
		}
		e := upgradeEntry{enabled: u.GetEnabled() == nil || u.GetEnabled().GetValue()}
		if len(u.GetFilters()) > 0 {
			ch, err := compileChain(u.GetFilters(), reg, fmt.Sprintf("upgrade_configs[%d].filters", i), "http upgrade filter chain")
			if err != nil {
				return nil, err
			}
			e.chain = ch
		}
		c.upgrades[key] = e
	}
	if err := compileH3(c, p); err != nil {
		return nil, err
	}
	if err := compileH2(c, p); err != nil {
		return nil, err
	}
	c.stats = newHCMStats(st, c.statPrefix)
	c.cs = newCodecStats(st, c.statPrefix)
	return c, nil
}

// RouteConfigName is rds.route_config_name, or "" when the routes are
// inline.
func (c *Config) RouteConfigName() string { return c.rdsName }

// RouteConfig is the RDS resource the route table was compiled from; nil
// with inline routes or when none had arrived.
func (c *Config) RouteConfig() *routev3.RouteConfiguration { return c.rdsProto }

// Proto is the HttpConnectionManager this Config was compiled from.
func (c *Config) Proto() *hcmv3.HttpConnectionManager { return c.proto }

// SameServer reports whether a connection served under a can go on under b:
// the settings fixed per server or per connection are equal (header size
// limit, header and idle timeouts, codec_type, the HTTP/2 settings and
// allow_connect, the HTTP/3 options). The listener manager then keeps the
// connections and swaps b in for new requests; otherwise it starts a new
// server.
func SameServer(a, b *Config) bool {
	return a.maxHeaderBytes == b.maxHeaderBytes && a.headersTimeout == b.headersTimeout && a.connIdle == b.connIdle &&
		a.codec == b.codec && a.h2 == b.h2 &&
		a.allowExtendedConnect == b.allowExtendedConnect && a.h3OverrideStreamError == b.h3OverrideStreamError
}

// compileChain turns a list of HttpFilter into one Handler. The terminal
// filter must be last, as Envoy requires.
func compileChain(fs []*hcmv3.HttpFilter, reg *filter.Registry, path, what string) (filter.Handler, error) {
	type compiled struct {
		name     string
		factory  filter.Factory
		disabled bool
	}
	var list []compiled
	for i, f := range fs {
		fp := fmt.Sprintf("%s[%d]", path, i)
		tc := f.GetTypedConfig()
		if tc == nil {
			if f.GetConfigDiscovery() != nil {
				return nil, fmt.Errorf("hcm: %s.config_discovery: not supported", fp)
			}
			return nil, fmt.Errorf("hcm: %s: filter %q has no typed_config", fp, f.GetName())
		}
		b := reg.Lookup(tc.GetTypeUrl())
		if b == nil {
			if f.GetIsOptional() {
				continue // Envoy skips optional filters it does not know
			}
			return nil, fmt.Errorf("hcm: %s.typed_config: unsupported HTTP filter type %q", fp, tc.GetTypeUrl())
		}
		if b.Terminal() && i != len(fs)-1 {
			return nil, fmt.Errorf("hcm: %s: Error: terminal filter named %s of type %s must be the last filter in a %s.", fp, f.GetName(), typeName(tc), what)
		}
		if !b.Terminal() && i == len(fs)-1 {
			return nil, fmt.Errorf("hcm: %s: Error: non-terminal filter named %s of type %s is the last filter in a %s.", fp, f.GetName(), typeName(tc), what)
		}
		msg, err := tc.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("hcm: %s.typed_config: %w", fp, err)
		}
		fac, err := b.Compile(msg)
		if err != nil {
			return nil, fmt.Errorf("hcm: %s.typed_config: %w", fp, err)
		}
		list = append(list, compiled{name: f.GetName(), factory: fac, disabled: f.GetDisabled()})
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("hcm: %s: a %s needs a terminal filter (envoy.filters.http.router)", path, what)
	}
	var h filter.Handler
	for i := len(list) - 1; i >= 0; i-- {
		h = perRoute(list[i].name, list[i].disabled, list[i].factory(h), h)
	}
	return h, nil
}

func typeName(a *anypb.Any) string {
	u := a.GetTypeUrl()
	return u[strings.LastIndexByte(u, '/')+1:]
}

func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}
