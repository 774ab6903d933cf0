package fieldcheck

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestUnsupported(t *testing.T) {
	c := &clusterv3.Cluster{
		Name:           "c",
		ConnectTimeout: durationpb.New(1),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
			{}, {Priority: 1},
		}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"b": {TypeUrl: "t"},
			"a": {TypeUrl: "t", Value: []byte{1}},
		},
	}
	whole := Tree{"name": nil, "connect_timeout": nil, "load_assignment": nil, "typed_extension_protocol_options": nil}
	for _, tc := range []struct {
		tree Tree
		want string
	}{
		{whole, ""},
		{Tree{"name": nil}, "cluster.connect_timeout"}, // field-number order: name 1, connect_timeout 4
		{Tree{"name": nil, "connect_timeout": nil, "typed_extension_protocol_options": nil,
			"load_assignment": {"cluster_name": nil, "endpoints": {"lb_endpoints": nil}}}, "cluster.load_assignment.endpoints[1].priority"},
		{Tree{"name": nil, "connect_timeout": nil, "load_assignment": nil,
			"typed_extension_protocol_options": {"type_url": nil}}, `cluster.typed_extension_protocol_options["a"].value`},
	} {
		if got := Unsupported(c.ProtoReflect(), tc.tree, "cluster"); got != tc.want {
			t.Errorf("Unsupported = %q, want %q", got, tc.want)
		}
	}
	if got := Unsupported(c.ProtoReflect(), Tree{}, ""); got != "name" {
		t.Errorf("at the root: %q, want name", got)
	}
}
