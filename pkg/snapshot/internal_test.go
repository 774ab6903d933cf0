package snapshot

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/stats"
)

func listenerFromYAML(t *testing.T, y string) *listenerv3.Listener {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	lp := &listenerv3.Listener{}
	if err := protojson.Unmarshal(j, lp); err != nil {
		t.Fatal(err)
	}
	return lp
}

const tcpChain = `filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: tp, cluster: c}}]}]`

// TestInternalListenerCompile: an internal listener has no address and
// Envoy's stat prefix; the mix-ups of address and internal_listener fail
// with Envoy's messages.
func TestInternalListenerCompile(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr, wantStat string
	}{
		{name: "internal", yaml: "name: inner\ninternal_listener: {}\n" + tcpChain, wantStat: "envoy_internal_inner"},
		{name: "stat prefix", yaml: "name: inner\nstat_prefix: mine\ninternal_listener: {}\n" + tcpChain, wantStat: "mine"},
		{
			name:    "with an address",
			yaml:    "name: inner\ninternal_listener: {}\naddress: {socket_address: {address: 127.0.0.1, port_value: 1}}\n" + tcpChain,
			wantErr: "address: error adding listener 'inner': address should not be used when an internal listener config is provided",
		},
		{
			name:    "internal address instead of internal_listener",
			yaml:    "name: inner\naddress: {envoy_internal_address: {server_listener_name: inner}}\n" + tcpChain,
			wantErr: "address: error adding listener named 'inner': use internal_listener field instead of address for internal listeners",
		},
		{
			name:    "unnamed",
			yaml:    "internal_listener: {}\n" + tcpChain,
			wantErr: "name: an internal listener needs a name: endpoints reach it by server_listener_name",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := CompileListener(listenerFromYAML(t, tc.yaml), filter.NewRegistry(), stats.New(), nil)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !l.Internal || l.Address != "" || l.Name != "inner" || l.StatName != tc.wantStat || l.Chains[0].TCP == nil {
				t.Errorf("compiled %+v", l)
			}
		})
	}
}

// TestInternalListenersHaveNoAddressClash: internal listeners have no
// address, so two of them do not clash; their names must still differ.
func TestInternalListenersHaveNoAddressClash(t *testing.T) {
	b := Bundle{Listeners: []*listenerv3.Listener{
		listenerFromYAML(t, "name: a\ninternal_listener: {}\n"+tcpChain),
		listenerFromYAML(t, "name: b\ninternal_listener: {}\n"+tcpChain),
	}}
	if _, err := Compile(b, filter.NewRegistry(), stats.New(), nil, nil); err != nil {
		t.Fatalf("Compile: %v", err)
	}
	b.Listeners = append(b.Listeners, listenerFromYAML(t, "name: a\ninternal_listener: {}\n"+tcpChain))
	if _, err := Compile(b, filter.NewRegistry(), stats.New(), nil, nil); err == nil || err.Error() != `listeners[2]: duplicate listener name "a"` {
		t.Fatalf("Compile error %v, want the duplicate name", err)
	}
}
