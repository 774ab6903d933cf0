package resource

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ValidateListener checks a listener as described in the package doc. The
// error, a *FieldError, names a path relative to the listener.
func ValidateListener(l *listenerv3.Listener) error { return Validate(l) }

// ValidateCluster checks a cluster as described in the package doc. The
// error, a *FieldError, names a path relative to the cluster.
func ValidateCluster(c *clusterv3.Cluster) error { return Validate(c) }

// ValidateRouteConfiguration checks a route configuration as described in
// the package doc. The error, a *FieldError, names a path relative to it.
func ValidateRouteConfiguration(rc *routev3.RouteConfiguration) error { return Validate(rc) }

// Validate checks any message against the allowlist, the extension table
// and its protoc-gen-validate rules, in that order, and returns the first
// problem as a *FieldError with a path relative to m. xds/bootstrap uses it
// for the whole Bootstrap; the typed functions above are the per-resource
// entry points.
func Validate(m proto.Message) error {
	var w walker
	if err := w.message(m.ProtoReflect(), "", ""); err != nil {
		return err
	}
	if err := validateAll(m, ""); err != nil {
		return err
	}
	for _, p := range w.payloads {
		if err := validateAll(p.msg, p.path); err != nil {
			return err
		}
	}
	return nil
}

// FieldSupport reports how the allowlist treats a set field, named by its
// full name ("envoy.config.listener.v3.Listener.name"): allowed says
// whether hop accepts it, and checked whether the allowlist also governs
// the field's contents (false for fields accepted as opaque or ignored).
// xds/bootstrap uses it to explain decoding errors in the same terms as
// Validate.
func FieldSupport(name protoreflect.FullName) (allowed, checked bool) {
	rule, ok := allowlist[name]
	return ok, ok && rule.kind == honoured
}

// IsExtension reports whether hop implements the typed_config type named by
// url (only the part after the last '/' counts) in any category.
func IsExtension(url string) bool {
	name := typeName(url)
	for _, types := range supportedTypes {
		if types[name] {
			return true
		}
	}
	return false
}
