package snapshot

import (
	"net/netip"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

func chainsFrom(t *testing.T, matches ...string) *Listener {
	t.Helper()
	l := &Listener{}
	for i, m := range matches {
		var fcm listenerv3.FilterChainMatch
		if m != "" {
			j, err := yaml.YAMLToJSON([]byte(m))
			if err != nil {
				t.Fatal(err)
			}
			if err := protojson.Unmarshal(j, &fcm); err != nil {
				t.Fatal(err)
			}
		}
		cm, err := compileMatch(&fcm)
		if err != nil {
			t.Fatal(err)
		}
		l.Chains = append(l.Chains, &FilterChain{Name: string(rune('a' + i)), match: cm})
	}
	return l
}

func TestFilterChainMatch(t *testing.T) {
	l := chainsFrom(t,
		"",                                // a: catch-all
		"destination_port: 8080",          // b
		"server_names: [www.example.com]", // c
		"server_names: ['*.example.com']", // d
		"server_names: ['*.com']",         // e
		"transport_protocol: tls",         // f
		"destination_port: 9090\nserver_names: [api.example.com]",                              // g
		"source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]",                    // h
		"application_protocols: [h2]\ntransport_protocol: tls\nserver_names: [h2.example.org]", // i
	)
	dst := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) }
	src := netip.MustParseAddrPort("192.168.1.1:5000")
	tests := []struct {
		name string
		info ConnInfo
		want string // chain name, "" = none
	}{
		{"plain", ConnInfo{Dst: dst(80), Src: src}, "a"},
		{"port", ConnInfo{Dst: dst(8080), Src: src}, "b"},
		{"exact sni beats wildcard", ConnInfo{Dst: dst(443), Src: src, ServerName: "www.example.com", TransportProtocol: "tls"}, "c"},
		{"longest wildcard", ConnInfo{Dst: dst(443), Src: src, ServerName: "foo.example.com", TransportProtocol: "tls"}, "d"},
		{"short wildcard", ConnInfo{Dst: dst(443), Src: src, ServerName: "foo.other.com", TransportProtocol: "tls"}, "e"},
		{"tls without sni match", ConnInfo{Dst: dst(443), Src: src, ServerName: "x.org", TransportProtocol: "tls"}, "f"},
		{"port branch has no backtracking", ConnInfo{Dst: dst(9090), Src: src, ServerName: "www.example.com"}, ""},
		{"port branch match", ConnInfo{Dst: dst(9090), Src: src, ServerName: "api.example.com"}, "g"},
		{"source prefix", ConnInfo{Dst: dst(80), Src: netip.MustParseAddrPort("10.1.2.3:1")}, "h"},
		{"alpn", ConnInfo{Dst: dst(443), Src: src, ServerName: "h2.example.org", TransportProtocol: "tls", ALPN: []string{"http/1.1", "h2"}}, "i"},
		{"alpn mismatch", ConnInfo{Dst: dst(443), Src: src, ServerName: "h2.example.org", TransportProtocol: "tls", ALPN: []string{"http/1.1"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := l.Match(&tc.info)
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tc.want {
				t.Errorf("chain %q, want %q", name, tc.want)
			}
		})
	}
	l.Default = &FilterChain{Name: "default"}
	if got := l.Match(&ConnInfo{Dst: dst(9090), Src: src}); got.Name != "default" {
		t.Errorf("default_filter_chain not used: %q", got.Name)
	}
}

func TestDuplicateMatchRejected(t *testing.T) {
	l := chainsFrom(t, "destination_port: 1", "destination_port: 1")
	if err := checkDuplicateMatches(l.Chains); err == nil {
		t.Fatal("duplicate filter_chain_match accepted")
	}
}
