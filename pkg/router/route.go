package router

import (
	"fmt"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// ActionKind says what a matched route does.
type ActionKind uint8

// Route actions, one per Route.action oneof member that hop implements.
const (
	ActionCluster ActionKind = iota + 1
	ActionWeightedClusters
	ActionRedirect
	ActionDirectResponse
)

func (k ActionKind) String() string {
	switch k {
	case ActionCluster:
		return "cluster"
	case ActionWeightedClusters:
		return "weighted_clusters"
	case ActionRedirect:
		return "redirect"
	case ActionDirectResponse:
		return "direct_response"
	}
	return fmt.Sprintf("ActionKind(%d)", uint8(k))
}

// WeightedCluster is one entry of RouteAction.weighted_clusters.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// UpgradeConfig is one route-level RouteAction.upgrade_configs entry.
type UpgradeConfig struct {
	// Enabled is the entry's enabled value (default true).
	Enabled bool
	// Connect is connect_config when present: CONNECT (or CONNECT-UDP) is
	// then terminated by hop instead of proxied. Read-only.
	Connect *routev3.RouteAction_UpgradeConfig_ConnectConfig
}

// Route is a compiled envoy.config.route.v3.Route. All fields are
// read-only after Compile.
type Route struct {
	Name string
	// Proto is the source proto; read-only.
	Proto       *routev3.Route
	VirtualHost *VirtualHost
	Action      ActionKind

	// Cluster is the upstream cluster for ActionCluster.
	Cluster string
	// Weighted lists the clusters for ActionWeightedClusters; see
	// PickCluster.
	Weighted []WeightedCluster
	// ClusterNotFoundStatus is the status to answer when the cluster does
	// not exist (cluster_not_found_response_code; 503 by default).
	ClusterNotFoundStatus int
	// Timeout is route.timeout: 15s when unset, 0 means disabled.
	Timeout time.Duration
	// IdleTimeout is route.idle_timeout: -1 when unset (the connection
	// manager's stream_idle_timeout applies), 0 means disabled.
	IdleTimeout time.Duration
	// HostRewriteLiteral replaces the upstream authority when non-empty.
	HostRewriteLiteral string
	// Upgrades holds RouteAction.upgrade_configs keyed by lower-cased
	// upgrade type; use UpgradeFor for a case-insensitive lookup.
	Upgrades map[string]UpgradeConfig

	// DirectStatus and DirectBody describe an ActionDirectResponse.
	DirectStatus uint32
	DirectBody   string

	// PerFilterConfig is typed_per_filter_config as received; read-only.
	PerFilterConfig map[string]*anypb.Any

	match         routeMatch
	prefixRewrite string
	redirect      *redirectConfig
	totalWeight   uint64
	// requestMutations and responseMutations are the route's, virtual
	// host's and route configuration's header mutations in evaluation
	// order (the later one wins).
	requestMutations  []*headerMutation
	responseMutations []*headerMutation
}

// UpgradeFor returns the route-level upgrade config for upgradeType,
// compared case-insensitively.
func (r *Route) UpgradeFor(upgradeType string) (cfg UpgradeConfig, ok bool) {
	if len(r.Upgrades) == 0 {
		return UpgradeConfig{}, false
	}
	if cfg, ok = r.Upgrades[upgradeType]; ok {
		return cfg, true
	}
	for k, v := range r.Upgrades {
		if strings.EqualFold(k, upgradeType) {
			return v, true
		}
	}
	return UpgradeConfig{}, false
}

// PickCluster chooses a cluster by weight from the random number rnd, the
// way Envoy does: rnd modulo the total weight selects a point on the
// concatenated weight intervals. For ActionCluster it returns Cluster; for
// other actions "".
func (r *Route) PickCluster(rnd uint64) string {
	switch r.Action {
	case ActionCluster:
		return r.Cluster
	case ActionWeightedClusters:
	default:
		return ""
	}
	if r.totalWeight == 0 {
		return ""
	}
	sel := rnd % r.totalWeight
	var end uint64
	for _, wc := range r.Weighted {
		end += uint64(wc.Weight)
		if sel < end {
			return wc.Name
		}
	}
	return r.Weighted[len(r.Weighted)-1].Name
}

// ConnectConfig returns the connect_config of the route's CONNECT
// upgrade_configs entry, or nil when the route does not terminate CONNECT
// (no such entry, or one without connect_config). As in Envoy, the entry's
// enabled flag does not matter here: the connection manager has already
// decided whether a CONNECT is accepted, and a POST terminated under
// allow_post is not an upgrade at all.
func (r *Route) ConnectConfig() *routev3.RouteAction_UpgradeConfig_ConnectConfig {
	cfg, ok := r.UpgradeFor("CONNECT")
	if !ok {
		return nil
	}
	return cfg.Connect
}
