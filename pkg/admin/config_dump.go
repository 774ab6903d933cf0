package admin

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// StaticConfigDump builds the config dump Envoy shows for a bootstrap with
// static resources only, in Envoy's order: bootstrap, clusters, listeners,
// routes (endpoints, scoped routes and secrets are not produced). The route
// dump holds the inline route_config of every HttpConnectionManager in the
// listeners' filter chains. b is copied; a resource that cannot be packed
// (which a validated bootstrap never has) is left out.
func StaticConfigDump(b *bootstrapv3.Bootstrap, loaded time.Time) *adminv3.ConfigDump {
	return ConfigDump(b, loaded, nil)
}

// DynamicFiller adds dynamic resources (the xDS layer's) to the dump
// messages; endpoints is dumped only when there is a filler.
type DynamicFiller func(*adminv3.ClustersConfigDump, *adminv3.ListenersConfigDump, *adminv3.RoutesConfigDump, *adminv3.EndpointsConfigDump)

// ConfigDump is StaticConfigDump plus whatever fill adds: Envoy's order is
// bootstrap, clusters, endpoints, listeners, routes. Call it per request:
// the dynamic part changes.
func ConfigDump(b *bootstrapv3.Bootstrap, loaded time.Time, fill DynamicFiller) *adminv3.ConfigDump {
	ts := timestamppb.New(loaded.Truncate(time.Millisecond)) // Envoy's precision
	b = proto.Clone(b).(*bootstrapv3.Bootstrap)
	clusters := &adminv3.ClustersConfigDump{}
	listeners := &adminv3.ListenersConfigDump{}
	routes := &adminv3.RoutesConfigDump{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if a, err := anypb.New(c); err == nil {
			clusters.StaticClusters = append(clusters.StaticClusters,
				&adminv3.ClustersConfigDump_StaticCluster{Cluster: a, LastUpdated: ts})
		}
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		if a, err := anypb.New(l); err == nil {
			listeners.StaticListeners = append(listeners.StaticListeners,
				&adminv3.ListenersConfigDump_StaticListener{Listener: a, LastUpdated: ts})
		}
		for _, rc := range inlineRouteConfigs(l) {
			if a, err := anypb.New(rc); err == nil {
				routes.StaticRouteConfigs = append(routes.StaticRouteConfigs,
					&adminv3.RoutesConfigDump_StaticRouteConfig{RouteConfig: a, LastUpdated: ts})
			}
		}
	}
	dump := &adminv3.ConfigDump{}
	msgs := []proto.Message{&adminv3.BootstrapConfigDump{Bootstrap: b, LastUpdated: ts}, clusters, listeners, routes}
	if fill != nil {
		endpoints := &adminv3.EndpointsConfigDump{}
		fill(clusters, listeners, routes, endpoints)
		msgs = []proto.Message{msgs[0], clusters, endpoints, listeners, routes}
	}
	for _, m := range msgs {
		if a, err := anypb.New(m); err == nil {
			dump.Configs = append(dump.Configs, a)
		}
	}
	return dump
}

const hcmTypeURL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

// inlineRouteConfigs returns the route_config of every HCM in l's filter
// chains (the default chain last), in order.
func inlineRouteConfigs(l *listenerv3.Listener) []proto.Message {
	var out []proto.Message
	chains := l.GetFilterChains()
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(chains[:len(chains):len(chains)], d)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc.GetTypeUrl() != hcmTypeURL {
				continue
			}
			var hcm hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&hcm); err != nil {
				continue
			}
			if rc := hcm.GetRouteConfig(); rc != nil {
				out = append(out, rc)
			}
		}
	}
	return out
}

// handleConfigDump serves /config_dump like Envoy's ConfigDumpHandler:
// resource selects one repeated field of the dump messages and emits its
// elements; mask trims each dump message (or each selected element, looking
// inside its Any); name_regex keeps the resources whose name matches.
// Sensitive fields are redacted as Envoy's MessageUtil::redact does.
func (s *Server) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, ok := q["include_eds"]; ok {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("include_eds is unsupported by hop; the dump holds the endpoints hop knows\n"))
		return
	}
	var nameRe *regexp.Regexp
	if nr := q.Get("name_regex"); nr != "" {
		// Envoy's regex matchers match the whole name (RE2::FullMatch).
		re, err := regexp.Compile(`^(?:` + nr + `)$`)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, "Error while parsing name_regex from %s: %s", nr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return
		}
		nameRe = re
	}
	var src *adminv3.ConfigDump
	if s.opts.ConfigDump != nil {
		src = s.opts.ConfigDump()
	}
	out, code, msg := selectDump(src, q.Get("resource"), q.Get("mask"), nameRe)
	if code != http.StatusOK {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(msg))
		return
	}
	redact(out.ProtoReflect(), false)
	s.writeProtoJSON(w, out, false)
}

// selectDump builds the reply from src without changing it. On failure it
// returns the status code and Envoy's error text.
func selectDump(src *adminv3.ConfigDump, resource, mask string, nameRe *regexp.Regexp) (*adminv3.ConfigDump, int, string) {
	out := &adminv3.ConfigDump{}
	var paths []string
	if mask != "" {
		paths = strings.Split(mask, ",")
	}
	for _, cfg := range src.GetConfigs() {
		m, err := cfg.UnmarshalNew() // a private copy to filter and trim
		if err != nil {
			return nil, http.StatusInternalServerError, fmt.Sprintf("admin: config dump entry %s: %s\n", cfg.GetTypeUrl(), err)
		}
		pm := m.ProtoReflect()
		if nameRe != nil {
			keepNamed(pm, nameRe)
		}
		if resource == "" {
			if paths != nil {
				t, ok := parseMask(pm.Descriptor(), paths)
				if !ok {
					continue // as Envoy: a mask that fits no field of this dump skips it
				}
				t.trim(pm)
			}
			if err := appendAny(out, m); err != nil {
				return nil, http.StatusInternalServerError, err.Error() + "\n"
			}
			continue
		}
		fd := pm.Descriptor().Fields().ByName(protoreflect.Name(resource))
		if fd == nil {
			continue
		}
		if !fd.IsList() || fd.Message() == nil {
			return nil, http.StatusBadRequest,
				fmt.Sprintf("%s is not a repeated field. Use ?mask=%s to get only this field", fd.Name(), fd.Name())
		}
		list := pm.Get(fd).List()
		for i := 0; i < list.Len(); i++ {
			el := list.Get(i).Message()
			if paths != nil && !trimResource(el, paths) {
				return nil, http.StatusBadRequest, fmt.Sprintf("FieldMask %s could not be successfully used.", mask)
			}
			if err := appendAny(out, el.Interface()); err != nil {
				return nil, http.StatusInternalServerError, err.Error() + "\n"
			}
		}
		return out, http.StatusOK, ""
	}
	if resource != "" {
		return nil, http.StatusNotFound, fmt.Sprintf("%s not found in config dump", resource)
	}
	if paths != nil && len(out.Configs) == 0 {
		return nil, http.StatusBadRequest,
			fmt.Sprintf("FieldMask %s could not be successfully applied to any configs.", mask)
	}
	return out, http.StatusOK, ""
}

func appendAny(out *adminv3.ConfigDump, m proto.Message) error {
	a, err := anypb.New(m)
	if err != nil {
		return fmt.Errorf("admin: pack %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	out.Configs = append(out.Configs, a)
	return nil
}

// keepNamed drops, from every repeated message field of a dump message, the
// resources whose name does not match re. A resource without a name that
// can be found is kept.
func keepNamed(m protoreflect.Message, re *regexp.Regexp) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if !fd.IsList() || fd.Message() == nil {
			return true
		}
		list := m.Mutable(fd).List()
		kept := 0
		for i := 0; i < list.Len(); i++ {
			el := list.Get(i)
			if name, ok := resourceName(el.Message()); ok && !re.MatchString(name) {
				continue
			}
			list.Set(kept, el)
			kept++
		}
		list.Truncate(kept)
		return true
	})
}

// resourceName finds the name of a dump element: its own name field (as in
// DynamicListener), or the name of the resource in its Any field.
func resourceName(el protoreflect.Message) (string, bool) {
	if n, ok := nameField(el); ok {
		return n, true
	}
	fields := el.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsList() || fd.IsMap() || fd.Message() == nil || fd.Message().FullName() != anyFullName || !el.Has(fd) {
			continue
		}
		a, ok := el.Get(fd).Message().Interface().(*anypb.Any)
		if !ok {
			continue
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if n, ok := nameField(inner.ProtoReflect()); ok {
			return n, true
		}
	}
	return "", false
}

func nameField(m protoreflect.Message) (string, bool) {
	for _, n := range []protoreflect.Name{"name", "cluster_name"} {
		fd := m.Descriptor().Fields().ByName(n)
		if fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() && m.Has(fd) {
			return m.Get(fd).String(), true
		}
	}
	return "", false
}
