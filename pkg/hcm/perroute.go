package hcm

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/hopproxy/hop/pkg/filter"
)

const filterConfigTypeURL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"

// perRoute wraps one filter so that a route or virtual host can switch it
// off (typed_per_filter_config: {name: FilterConfig{disabled: true}}), or on
// when the HCM lists it as disabled, as Envoy does. self is the filter, next
// the rest of the chain.
func perRoute(name string, disabledByDefault bool, self, next filter.Handler) filter.Handler {
	return filter.HandlerFunc(func(s *filter.Stream) {
		disabled := disabledByDefault
		if d, ok := routeDisables(s, name); ok {
			disabled = d
		}
		if disabled && next != nil {
			next.Serve(s)
			return
		}
		self.Serve(s)
	})
}

// routeDisables reads a FilterConfig for name from the route, then the
// virtual host. ok is false when neither says anything.
func routeDisables(s *filter.Stream, name string) (disabled, ok bool) {
	if s.Route != nil {
		if a := s.Route.PerFilterConfig[name]; a != nil && a.GetTypeUrl() == filterConfigTypeURL {
			var fc routev3.FilterConfig
			if a.UnmarshalTo(&fc) == nil {
				return fc.GetDisabled(), true
			}
		}
	}
	return false, false
}
