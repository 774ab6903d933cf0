package listener

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// TestFilterChainOnlyChange: listener_in_place_updated counts a change of
// filter chains alone, as Envoy's in-place filter chain update does; any
// other field makes it a full listener update.
func TestFilterChainOnlyChange(t *testing.T) {
	const base = `"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 80}}`
	parse := func(extra string) *listenerv3.Listener {
		t.Helper()
		l := &listenerv3.Listener{}
		if err := protojson.Unmarshal([]byte(`{`+base+extra+`}`), l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	for _, tc := range []struct {
		name string
		a, b string
		want bool
	}{
		{"equal", ``, ``, true},
		{"filter chain added", ``, `, "filter_chains": [{"name": "a"}]`, true},
		{"filter chain changed", `, "filter_chains": [{"name": "a"}]`, `, "filter_chains": [{"name": "b"}]`, true},
		{"default chain changed", ``, `, "default_filter_chain": {"name": "d"}`, true},
		{"listener filter added", ``, `, "listener_filters": [{"name": "x"}]`, false},
		{"stat prefix changed", ``, `, "stat_prefix": "p"`, false},
		{"chains and a listener field", ``, `, "filter_chains": [{"name": "a"}], "stat_prefix": "p"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := parse(tc.a), parse(tc.b)
			if got := filterChainOnlyChange(a, b); got != tc.want {
				t.Errorf("filterChainOnlyChange = %v, want %v", got, tc.want)
			}
			if len(a.GetFilterChains()) != len(parse(tc.a).GetFilterChains()) {
				t.Error("the listener was modified")
			}
		})
	}
}

// TestChainKey: a chain is found again by name, or by position when it
// has none.
func TestChainKey(t *testing.T) {
	if got := chainKey(&snapshot.FilterChain{Name: "x"}, 3); got != "name:x" {
		t.Errorf("named: %q", got)
	}
	if got := chainKey(&snapshot.FilterChain{}, 3); got != "index:3" {
		t.Errorf("unnamed: %q", got)
	}
}
