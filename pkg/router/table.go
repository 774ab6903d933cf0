package router

import (
	"net/http"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Options adjusts compilation beyond what the proto says.
type Options struct {
	// IgnorePortInHostMatching removes any ":port" from the authority before
	// virtual-host matching. The route configuration's own
	// ignore_port_in_host_matching is honoured too; either one enables it.
	IgnorePortInHostMatching bool
}

// Request is what matching reads. The connection manager fills it from the
// downstream request; Match neither keeps nor modifies it.
type Request struct {
	// Method is the request method (":method"); empty means absent.
	Method string
	// Authority is the Host / :authority value as received, port included.
	// For an HTTP/1.1 CONNECT it is the request-target. Empty means absent.
	Authority string
	// Path is the request-target path including the query ("/a/b?x=1"). It
	// is empty for an HTTP/1.1 CONNECT, which then matches only
	// connect_matcher routes.
	Path string
	// Scheme is ":scheme" ("http", "https"); empty means absent. Only header
	// matchers on ":scheme" read it.
	Scheme string
	// Header holds the other request headers in net/http's canonical form.
	Header http.Header
	// IsConnect is true for a CONNECT request (including CONNECT-UDP); only
	// such requests match connect_matcher routes.
	IsConnect bool
}

// Table is a compiled RouteConfiguration. It is immutable after Compile and
// safe for concurrent use.
type Table struct {
	name       string
	proto      *routev3.RouteConfiguration
	ignorePort bool
	vhosts     []*VirtualHost

	exact       map[string]*VirtualHost
	suffixes    []wildcardSet // longest first
	prefixes    []wildcardSet // longest first
	defaultVH   *VirtualHost
	onlyDefault bool // no exact or wildcard domains: every request gets defaultVH
}

// wildcardSet holds the wildcard domains whose fixed part has length n.
type wildcardSet struct {
	n     int
	hosts map[string]*VirtualHost
}

// VirtualHost is a compiled envoy.config.route.v3.VirtualHost. It is
// immutable; its header mutations are applied through Route's Mutate
// methods.
type VirtualHost struct {
	Name string
	// Proto is the source proto; read-only.
	Proto *routev3.VirtualHost
	// PerFilterConfig is typed_per_filter_config as received; read-only.
	PerFilterConfig map[string]*anypb.Any

	routes          []*Route
	requestHeaders  *headerMutation // nil when the virtual host sets none
	responseHeaders *headerMutation
}

// Routes returns the virtual host's routes in match order. The slice is
// shared: callers must not modify it.
func (vh *VirtualHost) Routes() []*Route { return vh.routes }

// Name is the route configuration's name.
func (t *Table) Name() string { return t.name }

// Proto returns the source proto; read-only.
func (t *Table) Proto() *routev3.RouteConfiguration { return t.proto }

// VirtualHosts returns the virtual hosts in configuration order. The slice
// is shared: callers must not modify it.
func (t *Table) VirtualHosts() []*VirtualHost { return t.vhosts }

// Match finds the virtual host for req.Authority and the first of its
// routes that matches req. It returns (nil, nil) when no virtual host
// matches and (vh, nil) when the virtual host has no matching route. It does
// not allocate for an authority of up to 256 bytes and a route without
// multi-valued header matches.
func (t *Table) Match(req *Request) (*VirtualHost, *Route) {
	vh := t.findVirtualHost(req.Authority)
	if vh == nil {
		return nil, nil
	}
	path := pathOnly(req.Path)
	for _, r := range vh.routes {
		if r.match.matches(req, path) {
			return vh, r
		}
	}
	return vh, nil
}

// FindVirtualHost returns the virtual host that Match would use for
// authority, or nil.
func (t *Table) FindVirtualHost(authority string) *VirtualHost {
	return t.findVirtualHost(authority)
}

func (t *Table) findVirtualHost(authority string) *VirtualHost {
	if t.onlyDefault {
		return t.defaultVH
	}
	if authority == "" {
		// Envoy: no authority, no virtual host (unless only "*" exists).
		return nil
	}
	host := authority
	if t.ignorePort {
		if i := portStart(host); i >= 0 {
			host = host[:i]
		}
	}
	// Lower-case into a stack buffer; map lookups keyed by string(b) do
	// not allocate.
	var buf [256]byte
	var b []byte
	if len(host) <= len(buf) {
		b = buf[:len(host)]
		for i := 0; i < len(host); i++ {
			b[i] = lowerASCII(host[i])
		}
	} else {
		b = []byte(toLowerASCII(host))
	}
	if vh, ok := t.exact[string(b)]; ok {
		return vh
	}
	for _, s := range t.suffixes {
		// >= because "*.foo.com" must not match ".foo.com".
		if s.n >= len(b) {
			continue
		}
		if vh, ok := s.hosts[string(b[len(b)-s.n:])]; ok {
			return vh
		}
	}
	for _, s := range t.prefixes {
		if s.n >= len(b) {
			continue
		}
		if vh, ok := s.hosts[string(b[:s.n])]; ok {
			return vh
		}
	}
	return t.defaultVH
}

// portStart returns the index of the ':' that starts the port in host, or
// -1. It follows Envoy's HeaderUtility::getPortStart: the last ':' counts
// unless a ']' comes after it (an IPv6 literal without a port).
func portStart(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return -1
	}
	if j := strings.LastIndexByte(host, ']'); j > i {
		return -1
	}
	return i
}

// toLowerASCII lower-cases ASCII letters only, leaving other bytes alone,
// like Envoy's LowerCaseString and absl::AsciiStrToLower.
func toLowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				b[j] = lowerASCII(b[j])
			}
			return string(b)
		}
	}
	return s
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// pathOnly strips the query string and fragment, as Envoy's
// PathUtil::removeQueryAndFragment does before path matching.
func pathOnly(p string) string {
	for i := 0; i < len(p); i++ {
		if p[i] == '?' || p[i] == '#' {
			return p[:i]
		}
	}
	return p
}
