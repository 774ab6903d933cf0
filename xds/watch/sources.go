package watch

import (
	"errors"
	"fmt"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/filesource"
)

// source is where one ConfigSource's resources come from: a gRPC client
// (ADS or one api_config_source) or a file. Watch sets one type's
// subscription, as client.Client.Watch does.
type source interface {
	Watch(typeURL string, wildcard bool, names []string, h client.Handler)
}

// checkConfigSources checks the bootstrap's config sources and makes sure
// the gRPC ones can be dialled, so that a bad bootstrap fails at start
// with the field path.
func checkConfigSources(b *bootstrapv3.Bootstrap) error {
	dr := b.GetDynamicResources()
	if ads := dr.GetAdsConfig(); ads != nil {
		if err := checkAPISource(ads, "dynamic_resources.ads_config"); err != nil {
			return err
		}
	}
	for _, cs := range []struct {
		src  *corev3.ConfigSource
		path string
	}{{dr.GetLdsConfig(), "dynamic_resources.lds_config"}, {dr.GetCdsConfig(), "dynamic_resources.cds_config"}} {
		if cs.src == nil {
			continue
		}
		if err := checkSource(b, cs.src, cs.path); err != nil {
			return err
		}
	}
	return nil
}

// checkSource checks one ConfigSource against what hop supports.
func checkSource(b *bootstrapv3.Bootstrap, cs *corev3.ConfigSource, path string) error {
	switch s := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads:
		if b.GetDynamicResources().GetAdsConfig() == nil {
			return fmt.Errorf("%s.ads: the bootstrap has no dynamic_resources.ads_config", path)
		}
	case *corev3.ConfigSource_ApiConfigSource:
		return checkAPISource(s.ApiConfigSource, path+".api_config_source")
	case *corev3.ConfigSource_PathConfigSource:
		if s.PathConfigSource.GetPath() == "" {
			return fmt.Errorf("%s.path_config_source.path: must be set", path)
		}
	case *corev3.ConfigSource_Path:
		if s.Path == "" {
			return fmt.Errorf("%s.path: must be set", path)
		}
	case nil:
		return fmt.Errorf("%s: one of ads, api_config_source or path_config_source must be set", path)
	default:
		return fmt.Errorf("%s: %T is not supported", path, s)
	}
	return nil
}

func checkAPISource(api *corev3.ApiConfigSource, path string) error {
	switch api.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
	default:
		return fmt.Errorf("%s.api_type: %s is not supported (GRPC or DELTA_GRPC)", path, api.GetApiType())
	}
	if n := len(api.GetGrpcServices()); n != 1 {
		return fmt.Errorf("%s.grpc_services: exactly one gRPC service is required, got %d", path, n)
	}
	return nil
}

// grpcClusterNames lists the clusters the bootstrap's gRPC config sources
// name through envoy_grpc.
func grpcClusterNames(b *bootstrapv3.Bootstrap) map[string]bool {
	dr := b.GetDynamicResources()
	out := map[string]bool{}
	apis := []*corev3.ApiConfigSource{dr.GetAdsConfig(), dr.GetLdsConfig().GetApiConfigSource(), dr.GetCdsConfig().GetApiConfigSource()}
	for _, api := range apis {
		for _, g := range api.GetGrpcServices() {
			if n := g.GetEnvoyGrpc().GetClusterName(); n != "" {
				out[n] = true
			}
		}
	}
	return out
}

// sourceKey identifies a ConfigSource: every ads {} is the one ADS stream;
// equal api_config_sources share a client; a path is one file.
func sourceKey(cs *corev3.ConfigSource) string {
	switch s := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads:
		return "ads"
	case *corev3.ConfigSource_ApiConfigSource:
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s.ApiConfigSource)
		return "api:" + string(b)
	case *corev3.ConfigSource_PathConfigSource:
		return "path:" + s.PathConfigSource.GetPath() + "|" + s.PathConfigSource.GetWatchedDirectory().GetPath()
	case *corev3.ConfigSource_Path:
		return "path:" + s.Path + "|"
	}
	return ""
}

// sourceLocked returns the source of cs, starting it on first use.
func (w *Watcher) sourceLocked(cs *corev3.ConfigSource, path string) (source, error) {
	if err := checkSource(w.o.Bootstrap, cs, path); err != nil {
		return nil, err
	}
	key := sourceKey(cs)
	if s := w.sources[key]; s != nil {
		return s, nil
	}
	var s source
	switch sp := cs.GetConfigSourceSpecifier().(type) {
	case *corev3.ConfigSource_Ads:
		c, err := w.grpcSourceLocked(w.o.Bootstrap.GetDynamicResources().GetAdsConfig(), "dynamic_resources.ads_config", true)
		if err != nil {
			return nil, err
		}
		s = c
	case *corev3.ConfigSource_ApiConfigSource:
		c, err := w.grpcSourceLocked(sp.ApiConfigSource, path+".api_config_source", false)
		if err != nil {
			return nil, err
		}
		s = c
	case *corev3.ConfigSource_PathConfigSource:
		s = &fileSource{w: w, key: key, path: sp.PathConfigSource.GetPath(), dir: sp.PathConfigSource.GetWatchedDirectory().GetPath(), running: map[string]bool{}}
	case *corev3.ConfigSource_Path:
		s = &fileSource{w: w, key: key, path: sp.Path, running: map[string]bool{}}
	}
	w.sources[key] = s
	return s, nil
}

// grpcSourceLocked dials api and runs a client on it until the watcher
// stops.
func (w *Watcher) grpcSourceLocked(api *corev3.ApiConfigSource, path string, aggregated bool) (*client.Client, error) {
	if w.o.Dial == nil {
		return nil, fmt.Errorf("%s: gRPC config sources are not available", path)
	}
	tr, err := w.o.Dial(api, path)
	if err != nil {
		return nil, err
	}
	c := client.New(client.Options{
		Transport:                 tr,
		Node:                      w.o.Node,
		SetNodeOnFirstMessageOnly: api.GetSetNodeOnFirstMessageOnly(),
		Delta:                     api.GetApiType() == corev3.ApiConfigSource_DELTA_GRPC,
		Aggregated:                aggregated,
		RateLimit:                 api.GetRateLimitSettings(),
		InitialBackoff:            w.o.InitialBackoff,
		MaxBackoff:                w.o.MaxBackoff,
		Stats:                     w.o.Stats,
		Log:                       w.o.Log,
	})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		c.Run(w.ctx)
		tr.Close()
	}()
	return c, nil
}

// fileSource runs one filesource per type for a path_config_source.
type fileSource struct {
	w         *Watcher
	key       string // sourceKey of its ConfigSource
	path, dir string
	running   map[string]bool // guarded by w.mu
}

func (f *fileSource) Watch(typeURL string, _ bool, _ []string, h client.Handler) {
	if f.running[typeURL] {
		return
	}
	f.running[typeURL] = true
	w := f.w
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		err := filesource.Run(w.ctx, filesource.Options{
			Path:             f.path,
			WatchedDirectory: f.dir,
			TypeURL:          typeURL,
			Handler:          h,
			Interval:         w.o.FilePollInterval,
			Log:              w.log,
			OnError: func(err error) {
				if errors.Is(err, filesource.ErrRejected) {
					return // the handler counted update_rejected already
				}
				w.mu.Lock()
				defer w.mu.Unlock()
				w.st.failure(typeURL).Inc()
				if typeURL == client.RouteType {
					seen := map[string]bool{}
					for _, r := range w.allRouteRefsLocked() {
						if sourceKey(r.source) == f.key && !seen[r.name] {
							seen[r.name] = true
							w.countNamed(typeURL, r.name, func(c *namedStats) { c.failure.Inc() })
						}
					}
				}
			},
		})
		if err != nil && w.ctx.Err() == nil {
			w.log.Error("path_config_source stopped", "path", f.path, "error", err)
		}
	}()
}

// Node returns the node hop presents to management servers: the
// bootstrap's, with user_agent_name "hop", the build version and the
// client features hop implements.
func Node(b *bootstrapv3.Bootstrap, version string) *corev3.Node {
	n := &corev3.Node{}
	if b.GetNode() != nil {
		n = cloneNode(b.GetNode())
	}
	n.UserAgentName = "hop"
	n.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: buildVersion(version)}
	n.ClientFeatures = appendMissing(n.ClientFeatures,
		// Resources wrapped in envoy.service.discovery.v3.Resource are
		// unwrapped in state-of-the-world responses too.
		"xds.config.resource-in-sotw",
		// There is a single priority; overprovisioning_factor is not used.
		"envoy.lb.does_not_support_overprovisioning",
	)
	return n
}

func appendMissing(list []string, add ...string) []string {
	for _, a := range add {
		found := false
		for _, l := range list {
			found = found || l == a
		}
		if !found {
			list = append(list, a)
		}
	}
	return list
}

// buildVersion parses "1.2.3" (a leading v and a -suffix allowed) into
// Envoy's BuildVersion; anything else is version 0.0.0 with the text in
// metadata.
func buildVersion(v string) *corev3.BuildVersion {
	bv := &corev3.BuildVersion{Version: &typev3.SemanticVersion{}}
	var maj, min, patch uint32
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	if _, err := fmt.Sscanf(core, "%d.%d.%d", &maj, &min, &patch); err == nil {
		bv.Version.MajorNumber, bv.Version.MinorNumber, bv.Version.Patch = maj, min, patch
	}
	bv.Metadata = versionMetadata(v)
	return bv
}

func cloneNode(n *corev3.Node) *corev3.Node { return proto.Clone(n).(*corev3.Node) }

// versionMetadata is Envoy's well-known build metadata, as far as hop has
// it: the version text and the build type.
func versionMetadata(v string) *structpb.Struct {
	m, _ := structpb.NewStruct(map[string]any{"revision.status": v, "build.type": "RELEASE"})
	return m
}
