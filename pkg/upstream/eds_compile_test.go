package upstream

import (
	"errors"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestEDSErrors(t *testing.T) {
	good := func() *endpointv3.ClusterLoadAssignment {
		return assignment("c", ep("127.0.0.1:1001"), ep("127.0.0.1:1002"))
	}
	for _, tc := range []struct {
		name    string
		mutate  func(cla *endpointv3.ClusterLoadAssignment)
		want    string // the error after `upstream: cluster "c": `
		isUnsup bool
		setOnly bool // CompileEndpoints accepts it (it needs the cluster)
	}{
		{
			name: "hostname",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Endpoints[0].LbEndpoints[1] = lbEndpoint("x", 80)
			},
			want: "endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: malformed IP address: x",
		},
		{
			name:    "priority",
			mutate:  func(cla *endpointv3.ClusterLoadAssignment) { cla.Endpoints[0].Priority = 1 },
			want:    "endpoints[0].priority: unsupported field: only priority 0 is supported",
			isUnsup: true,
		},
		{
			name: "drop overloads",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{
					OverprovisioningFactor: wrapperspb.UInt32(140),
					DropOverloads:          []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{Category: "throttle"}},
				}
			},
			want:    "policy.drop_overloads: unsupported field",
			isUnsup: true,
		},
		{
			name: "endpoint stale after",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{EndpointStaleAfter: dur(5e9)}
			},
			want:    "policy.endpoint_stale_after: unsupported field",
			isUnsup: true,
		},
		{
			name: "named endpoints",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.NamedEndpoints = map[string]*endpointv3.Endpoint{"n": ep("127.0.0.1:1003").GetEndpoint()}
			},
			want:    "named_endpoints: unsupported field",
			isUnsup: true,
		},
		{
			name: "endpoint name",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Endpoints[0].LbEndpoints[1] = &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_EndpointName{EndpointName: "n"}}
			},
			want:    "endpoints[0].lb_endpoints[1].endpoint_name: unsupported field",
			isUnsup: true,
		},
		{
			name: "additional addresses",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Endpoints[0].LbEndpoints[0].GetEndpoint().AdditionalAddresses = []*endpointv3.Endpoint_AdditionalAddress{
					{Address: ep("127.0.0.2:1001").GetEndpoint().GetAddress()},
				}
			},
			want:    "endpoints[0].lb_endpoints[0].endpoint.additional_addresses: unsupported field",
			isUnsup: true,
		},
		{
			name: "pipe",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = &corev3.Address{
					Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/sock"}},
				}
			},
			want:    "endpoints[0].lb_endpoints[0].endpoint.address.pipe: unsupported field",
			isUnsup: true,
		},
		{
			name: "port zero",
			mutate: func(cla *endpointv3.ClusterLoadAssignment) {
				cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
					LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("127.0.0.1", 0)},
				})
			},
			want: "endpoints[1].lb_endpoints[0].endpoint.address.socket_address.port_value: must be between 1 and 65535, got 0",
		},
		{
			name:    "other cluster name",
			mutate:  func(cla *endpointv3.ClusterLoadAssignment) { cla.ClusterName = "other" },
			want:    `cluster_name: "other" is not the cluster's EDS service name "c"`,
			setOnly: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, st := newTestManager(t, nil)
			c := mustAdd(t, m, edsCluster("c"))
			mustSet(t, m, "c", good())
			before := c.set.Load()

			cla := good()
			tc.mutate(cla)
			err := m.SetEndpoints("c", cla)
			if want := `upstream: cluster "c": ` + tc.want; err == nil || err.Error() != want {
				t.Fatalf("SetEndpoints error:\n got %v\nwant %s", err, want)
			}
			if got := errors.Is(err, ErrUnsupported); got != tc.isUnsup {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", got, tc.isUnsup)
			}
			if c.set.Load() != before {
				t.Error("a failed SetEndpoints published a new host set")
			}
			wantStats(t, st, "c", map[string]int64{"membership_change": 1, "membership_total": 2})

			err = CompileEndpoints(cla)
			switch {
			case tc.setOnly && err != nil:
				t.Errorf("CompileEndpoints = %v, want nil", err)
			case !tc.setOnly && (err == nil || err.Error() != `upstream: load assignment "c": `+tc.want):
				t.Errorf("CompileEndpoints error:\n got %v\nwant upstream: load assignment \"c\": %s", err, tc.want)
			}
		})
	}
}

func TestEDSSetEndpointsErrors(t *testing.T) {
	m, _ := newTestManager(t, nil)
	mustAdd(t, m, staticCluster(t, "static", "127.0.0.1:1001"))
	if err := m.SetEndpoints("missing", nil); err == nil || err.Error() != `upstream: cluster "missing": no such cluster` {
		t.Errorf("SetEndpoints on an unknown cluster = %v", err)
	}
	err := m.SetEndpoints("static", assignment("static", ep("127.0.0.1:1002")))
	if err == nil || err.Error() != `upstream: cluster "static": endpoints can only be set on an EDS cluster, this one is STATIC` {
		t.Errorf("SetEndpoints on a STATIC cluster = %v", err)
	}
	if got := hostAddrs(m.Get("static")); !slices.Equal(got, []string{"127.0.0.1:1001"}) {
		t.Errorf("STATIC hosts after a refused SetEndpoints = %v", got)
	}
	// A ClusterLoadAssignment that fails its proto validation.
	cla := assignment("c", weighted(ep("127.0.0.1:1001"), 0))
	if err := CompileEndpoints(cla); err == nil || !strings.HasPrefix(err.Error(), `upstream: load assignment "c": `) ||
		!strings.Contains(err.Error(), "LoadBalancingWeight") {
		t.Errorf("CompileEndpoints with weight 0 = %v, want a validation error naming LoadBalancingWeight", err)
	}
	if err := CompileEndpoints(nil); err != nil {
		t.Errorf("CompileEndpoints(nil) = %v", err)
	}
	if err := CompileEndpoints(assignment("c", ep("[2001:db8::1]:80"), weighted(ep("10.0.0.1:80"), 3))); err != nil {
		t.Errorf("CompileEndpoints of a valid assignment = %v", err)
	}
}

func TestEDSCompile(t *testing.T) {
	noConfig := cluster("c", clusterv3.Cluster_EDS)
	if err := Compile(noConfig); err == nil || err.Error() != `upstream: cluster "c": eds_cluster_config: cannot create an EDS cluster without an EDS config` {
		t.Errorf("Compile of EDS without eds_cluster_config = %v", err)
	}
	// Inline endpoints of an EDS cluster are ignored, as in Envoy.
	inline := edsCluster("c")
	inline.LoadAssignment = assignment("c", lbEndpoint("not-an-ip", 80))
	s, err := compile(inline)
	if err != nil {
		t.Fatalf("compile of EDS with inline endpoints: %v", err)
	}
	if s.kind != kindEDS || len(s.endpoints) != 0 || s.edsServiceName != "c" {
		t.Errorf("settings = %+v, want EDS without endpoints, service name c", s)
	}
	// The field checks still apply to them.
	inline.LoadAssignment.NamedEndpoints = map[string]*endpointv3.Endpoint{"n": {}}
	if err := Compile(inline); err == nil || err.Error() != `upstream: cluster "c": load_assignment.named_endpoints: unsupported field` {
		t.Errorf("Compile with load_assignment.named_endpoints = %v", err)
	}
	// eds_cluster_config on another type is accepted (and ignored).
	static := staticCluster(t, "s", "127.0.0.1:1")
	static.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: "x"}
	if err := Compile(static); err != nil {
		t.Errorf("Compile of STATIC with eds_cluster_config = %v", err)
	}
	// The ClusterLoadAssignment allowlist applies to inline load_assignment too.
	withDrop := staticCluster(t, "s", "127.0.0.1:1")
	withDrop.LoadAssignment.Policy = &endpointv3.ClusterLoadAssignment_Policy{
		DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{Category: "c"}},
	}
	if err := Compile(withDrop); err == nil || err.Error() != `upstream: cluster "s": load_assignment.policy.drop_overloads: unsupported field` {
		t.Errorf("Compile with load_assignment.policy.drop_overloads = %v", err)
	}
}
