package router

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Compile compiles rc with default Options. Errors name the offending field,
// for example
// `router: virtual_hosts[0].routes[2].route.upgrade_configs[1]: duplicate upgrade type "WebSocket"`.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	return CompileWithOptions(rc, Options{})
}

// CompileWithOptions compiles rc. The proto must not be modified afterwards:
// the Table keeps references into it.
func CompileWithOptions(rc *routev3.RouteConfiguration, opts Options) (*Table, error) {
	if rc == nil {
		return nil, fmt.Errorf("router: nil RouteConfiguration")
	}
	if err := rc.ValidateAll(); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	if err := checkSupported(rc.ProtoReflect(), ""); err != nil {
		return nil, err
	}
	c := &compiler{
		rc:            rc,
		maxDirectBody: 4096,
	}
	if v := rc.GetMaxDirectResponseBodySizeBytes(); v != nil {
		c.maxDirectBody = int(v.GetValue())
	}
	var err error
	if c.globalRequest, err = compileMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		"request_headers_to_add", "request_headers_to_remove"); err != nil {
		return nil, err
	}
	if c.globalResponse, err = compileMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(),
		"response_headers_to_add", "response_headers_to_remove"); err != nil {
		return nil, err
	}
	t := &Table{
		name:       rc.GetName(),
		proto:      rc,
		ignorePort: opts.IgnorePortInHostMatching || rc.GetIgnorePortInHostMatching(),
		exact:      map[string]*VirtualHost{},
	}
	suffixes := map[int]map[string]*VirtualHost{}
	prefixes := map[int]map[string]*VirtualHost{}
	for i, vp := range rc.GetVirtualHosts() {
		vpath := fmt.Sprintf("virtual_hosts[%d]", i)
		vh, err := c.compileVirtualHost(vp, vpath)
		if err != nil {
			return nil, err
		}
		t.vhosts = append(t.vhosts, vh)
		for j, d := range vp.GetDomains() {
			domain := toLowerASCII(d)
			dup := false
			switch {
			case domain == "*":
				if t.defaultVH != nil {
					return nil, fmt.Errorf("router: %s.domains[%d]: only a single wildcard domain is permitted in route %q",
						vpath, j, rc.GetName())
				}
				t.defaultVH = vh
			case strings.HasPrefix(domain, "*"):
				dup = addWildcard(suffixes, domain[1:], vh)
			case strings.HasSuffix(domain, "*"):
				dup = addWildcard(prefixes, domain[:len(domain)-1], vh)
			default:
				if _, dup = t.exact[domain]; !dup {
					t.exact[domain] = vh
				}
			}
			if dup {
				return nil, fmt.Errorf("router: %s.domains[%d]: duplicate entry of domain %q in route %q: only unique values for domains are permitted",
					vpath, j, domain, rc.GetName())
			}
		}
	}
	t.suffixes = sortWildcards(suffixes)
	t.prefixes = sortWildcards(prefixes)
	t.onlyDefault = len(t.exact) == 0 && len(t.suffixes) == 0 && len(t.prefixes) == 0
	return t, nil
}

func addWildcard(sets map[int]map[string]*VirtualHost, fixed string, vh *VirtualHost) (dup bool) {
	m := sets[len(fixed)]
	if m == nil {
		m = map[string]*VirtualHost{}
		sets[len(fixed)] = m
	}
	if _, ok := m[fixed]; ok {
		return true
	}
	m[fixed] = vh
	return false
}

func sortWildcards(sets map[int]map[string]*VirtualHost) []wildcardSet {
	out := make([]wildcardSet, 0, len(sets))
	for n, m := range sets {
		out = append(out, wildcardSet{n: n, hosts: m})
	}
	// Longest first, so "*-bar.baz.com" wins over "*.baz.com".
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	return out
}

// compiler carries the route-configuration-wide state while compiling.
type compiler struct {
	rc             *routev3.RouteConfiguration
	maxDirectBody  int
	globalRequest  *headerMutation
	globalResponse *headerMutation
}

// mutationOrder lists the non-nil mutations in evaluation order: most
// specific first by default, so the route configuration's is applied last
// and wins; reversed by most_specific_header_mutations_wins.
func (c *compiler) mutationOrder(route, vhost, global *headerMutation) []*headerMutation {
	order := []*headerMutation{route, vhost, global}
	if c.rc.GetMostSpecificHeaderMutationsWins() {
		order = []*headerMutation{global, vhost, route}
	}
	out := make([]*headerMutation, 0, 3)
	for _, m := range order {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// defaultRouteTimeout is Envoy's DEFAULT_ROUTE_TIMEOUT_MS.
const defaultRouteTimeout = 15 * time.Second

func (c *compiler) compileVirtualHost(vp *routev3.VirtualHost, path string) (*VirtualHost, error) {
	vh := &VirtualHost{
		Name:            vp.GetName(),
		Proto:           vp,
		PerFilterConfig: vp.GetTypedPerFilterConfig(),
	}
	var err error
	if vh.requestHeaders, err = compileMutation(vp.GetRequestHeadersToAdd(), vp.GetRequestHeadersToRemove(),
		path+".request_headers_to_add", path+".request_headers_to_remove"); err != nil {
		return nil, err
	}
	if vh.responseHeaders, err = compileMutation(vp.GetResponseHeadersToAdd(), vp.GetResponseHeadersToRemove(),
		path+".response_headers_to_add", path+".response_headers_to_remove"); err != nil {
		return nil, err
	}
	for i, rp := range vp.GetRoutes() {
		r, err := c.compileRoute(vh, rp, fmt.Sprintf("%s.routes[%d]", path, i))
		if err != nil {
			return nil, err
		}
		vh.routes = append(vh.routes, r)
	}
	return vh, nil
}

func (c *compiler) compileRoute(vh *VirtualHost, rp *routev3.Route, path string) (*Route, error) {
	r := &Route{
		Name:                  rp.GetName(),
		Proto:                 rp,
		VirtualHost:           vh,
		PerFilterConfig:       rp.GetTypedPerFilterConfig(),
		ClusterNotFoundStatus: http.StatusServiceUnavailable,
		Timeout:               defaultRouteTimeout,
		IdleTimeout:           -1,
	}
	var err error
	if r.match, err = compileRouteMatch(rp.GetMatch(), path+".match"); err != nil {
		return nil, err
	}
	switch a := rp.GetAction().(type) {
	case *routev3.Route_Route:
		err = r.compileRouteAction(a.Route, path+".route")
	case *routev3.Route_Redirect:
		r.Action = ActionRedirect
		r.redirect, err = compileRedirect(a.Redirect, path+".redirect")
	case *routev3.Route_DirectResponse:
		r.Action = ActionDirectResponse
		err = r.compileDirectResponse(a.DirectResponse, path+".direct_response", c.maxDirectBody)
	default:
		// checkSupported has already rejected the other oneof members.
		err = fmt.Errorf("router: %s: route has no action", path)
	}
	if err != nil {
		return nil, err
	}
	reqMut, err := compileMutation(rp.GetRequestHeadersToAdd(), rp.GetRequestHeadersToRemove(),
		path+".request_headers_to_add", path+".request_headers_to_remove")
	if err != nil {
		return nil, err
	}
	respMut, err := compileMutation(rp.GetResponseHeadersToAdd(), rp.GetResponseHeadersToRemove(),
		path+".response_headers_to_add", path+".response_headers_to_remove")
	if err != nil {
		return nil, err
	}
	r.requestMutations = c.mutationOrder(reqMut, vh.requestHeaders, c.globalRequest)
	r.responseMutations = c.mutationOrder(respMut, vh.responseHeaders, c.globalResponse)
	return r, nil
}

func (r *Route) compileRouteAction(ra *routev3.RouteAction, path string) error {
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		r.Action = ActionCluster
		r.Cluster = cs.Cluster
	case *routev3.RouteAction_WeightedClusters:
		r.Action = ActionWeightedClusters
		wpath := path + ".weighted_clusters"
		for i, cw := range cs.WeightedClusters.GetClusters() {
			if cw.GetName() == "" {
				return fmt.Errorf("router: %s.clusters[%d]: at least one of name or cluster_header needs to be specified", wpath, i)
			}
			w := cw.GetWeight().GetValue()
			r.Weighted = append(r.Weighted, WeightedCluster{Name: cw.GetName(), Weight: w})
			r.totalWeight += uint64(w)
			if r.totalWeight > math.MaxUint32 {
				return fmt.Errorf("router: %s: the sum of weights of all weighted clusters of route %q exceeds %d",
					wpath, r.Name, uint32(math.MaxUint32))
			}
		}
		if r.totalWeight == 0 {
			return fmt.Errorf("router: %s: sum of weights in the weighted_cluster must be greater than 0", wpath)
		}
	default:
		return fmt.Errorf("router: %s: no cluster specifier", path)
	}

	switch ra.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		r.ClusterNotFoundStatus = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		r.ClusterNotFoundStatus = http.StatusInternalServerError
	default:
		r.ClusterNotFoundStatus = http.StatusServiceUnavailable
	}
	if ra.GetTimeout() != nil {
		r.Timeout = ra.GetTimeout().AsDuration()
	}
	if ra.GetIdleTimeout() != nil {
		r.IdleTimeout = ra.GetIdleTimeout().AsDuration()
	}
	r.prefixRewrite = ra.GetPrefixRewrite()
	r.HostRewriteLiteral = ra.GetHostRewriteLiteral()

	for i, uc := range ra.GetUpgradeConfigs() {
		upath := fmt.Sprintf("%s.upgrade_configs[%d]", path, i)
		typ := uc.GetUpgradeType()
		key := toLowerASCII(typ)
		if _, dup := r.Upgrades[key]; dup {
			return fmt.Errorf("router: %s: duplicate upgrade type %q", upath, typ)
		}
		cfg := UpgradeConfig{Enabled: uc.GetEnabled() == nil || uc.GetEnabled().GetValue()}
		if uc.GetConnectConfig() != nil {
			if !strings.EqualFold(typ, "CONNECT") && !strings.EqualFold(typ, "CONNECT-UDP") {
				return fmt.Errorf("router: %s: non-CONNECT upgrade type %q has connect_config", upath, typ)
			}
			cfg.Connect = uc.GetConnectConfig()
		}
		if r.Upgrades == nil {
			r.Upgrades = map[string]UpgradeConfig{}
		}
		r.Upgrades[key] = cfg
	}
	return nil
}

func (r *Route) compileDirectResponse(dr *routev3.DirectResponseAction, path string, maxBody int) error {
	r.DirectStatus = dr.GetStatus()
	body := dr.GetBody()
	if body == nil {
		return nil
	}
	switch s := body.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		r.DirectBody = s.InlineString
	case *corev3.DataSource_InlineBytes:
		r.DirectBody = string(s.InlineBytes)
	}
	if len(r.DirectBody) > maxBody {
		return fmt.Errorf("router: %s.body: response body size is %d bytes; maximum is %d",
			path, len(r.DirectBody), maxBody)
	}
	return nil
}
