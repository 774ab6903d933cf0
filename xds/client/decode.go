package client

import (
	"fmt"

	// The resource packages register their messages in the global registry
	// that anypb.UnmarshalNew resolves type URLs with.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// resourceWrapperType is the type URL of envoy.service.discovery.v3.Resource,
// the wrapper a server uses in SotW for resources with a TTL (X-TTL-1).
const resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// decodeSotW decodes the resources of a SotW response of type url. It
// returns the resources in response order, with per-resource failures in
// Resource.Err; the number of TTL heartbeats (wrappers without a resource)
// it skipped; and an error that rejects the whole response (a duplicate
// name, X-ACK-6).
func decodeSotW(url string, anys []*anypb.Any) ([]Resource, int, error) {
	out := make([]Resource, 0, len(anys))
	heartbeats := 0
	seen := make(map[string]struct{}, len(anys))
	for i, a := range anys {
		hint := ""
		if a.GetTypeUrl() == resourceWrapperType {
			w := &discoveryv3.Resource{}
			if err := a.UnmarshalTo(w); err != nil {
				out = append(out, Resource{Err: errorf("resource #%d: decoding the Resource wrapper: %w", i, err)})
				continue
			}
			if w.GetResource() == nil {
				heartbeats++
				continue
			}
			hint, a = w.GetName(), w.GetResource()
		}
		r := decodeAny(url, i, hint, a)
		if err := checkDuplicate(seen, r.Name); err != nil {
			return nil, heartbeats, err
		}
		out = append(out, r)
	}
	return out, heartbeats, nil
}

// decodeDelta decodes the resources of a delta response of type url. held
// returns the accepted version of a resource, to recognise heartbeats
// (a resource without a body at the version already held). A name that
// appears twice among the resources and removed names rejects the response.
func decodeDelta(url string, in []*discoveryv3.Resource, removed []string, held func(string) (string, bool)) ([]Resource, error) {
	out := make([]Resource, 0, len(in))
	seen := make(map[string]struct{}, len(in)+len(removed))
	for i, dr := range in {
		if err := checkDuplicate(seen, dr.GetName()); err != nil {
			return nil, err
		}
		if dr.GetResource() == nil {
			if v, ok := held(dr.GetName()); ok && v == dr.GetVersion() {
				continue // heartbeat
			}
			if len(dr.GetAliases()) > 0 {
				continue // an unresolved alias (VHDS) carries no resource
			}
			out = append(out, Resource{Name: dr.GetName(), Version: dr.GetVersion(),
				Err: errorf("resource %s: no resource body", label(i, dr.GetName()))})
			continue
		}
		r := decodeAny(url, i, dr.GetName(), dr.GetResource())
		if dr.GetName() != "" {
			r.Name = dr.GetName()
		}
		r.Version = dr.GetVersion()
		out = append(out, r)
	}
	for _, n := range removed {
		if err := checkDuplicate(seen, n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeAny unmarshals the i-th resource of a response of type url. hint is
// the name the wrapper gave, used when the resource itself cannot be read.
func decodeAny(url string, i int, hint string, a *anypb.Any) Resource {
	if a.GetTypeUrl() != url {
		return Resource{Name: hint, Err: errorf("resource %s: type URL %q does not match the response type URL %q",
			label(i, hint), a.GetTypeUrl(), url)}
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return Resource{Name: hint, Err: errorf("resource %s: %w", label(i, hint), err)}
	}
	name := nameOf(m)
	if name == "" {
		name = hint
	}
	return Resource{Name: name, Message: m}
}

// nameOf is the name of a resource message: Listener, Cluster,
// RouteConfiguration (and most other types) have name; ClusterLoadAssignment
// has cluster_name.
func nameOf(m proto.Message) string {
	switch v := m.(type) {
	case interface{ GetClusterName() string }:
		return v.GetClusterName()
	case interface{ GetName() string }:
		return v.GetName()
	}
	return ""
}

func checkDuplicate(seen map[string]struct{}, name string) error {
	if name == "" {
		return nil
	}
	if _, dup := seen[name]; dup {
		return fmt.Errorf("%w %q in one response", errDuplicate, name)
	}
	seen[name] = struct{}{}
	return nil
}

// label names a resource in an error: its name when known, else its index.
func label(i int, name string) string {
	if name != "" {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("#%d", i)
}
