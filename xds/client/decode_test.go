package client

import (
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecodeSotW(t *testing.T) {
	l1 := mustAny(t, &listenerv3.Listener{Name: "l1"})
	wrapped := mustAny(t, &discoveryv3.Resource{Name: "l2", Resource: mustAny(t, &listenerv3.Listener{Name: "l2"})})
	heartbeat := mustAny(t, &discoveryv3.Resource{Name: "l1"})
	wrongType := mustAny(t, &discoveryv3.Resource{Name: "w", Resource: mustAny(t, &clusterv3.Cluster{Name: "w"})})
	garbage := &anypb.Any{TypeUrl: ListenerType, Value: []byte{0xff, 0xff}}
	badWrapper := &anypb.Any{TypeUrl: resourceWrapperType, Value: []byte{0xff}}

	type want struct {
		name    string
		errPart string // "" = no error
	}
	tests := []struct {
		name       string
		url        string
		in         []*anypb.Any
		want       []want
		heartbeats int
		wantErr    string
	}{
		{name: "plain", url: ListenerType, in: []*anypb.Any{l1}, want: []want{{name: "l1"}}},
		{name: "cla named by cluster_name", url: EndpointType,
			in: []*anypb.Any{mustAny(t, &endpointv3.ClusterLoadAssignment{ClusterName: "c1"})}, want: []want{{name: "c1"}}},
		{name: "wrapper unwrapped", url: ListenerType, in: []*anypb.Any{wrapped, l1}, want: []want{{name: "l2"}, {name: "l1"}}},
		{name: "heartbeat skipped", url: ListenerType, in: []*anypb.Any{heartbeat, l1}, want: []want{{name: "l1"}}, heartbeats: 1},
		{name: "inner type differs", url: ListenerType, in: []*anypb.Any{wrongType},
			want: []want{{name: "w", errPart: `resource "w": type URL "type.googleapis.com/envoy.config.cluster.v3.Cluster" does not match`}}},
		{name: "type differs", url: ClusterType, in: []*anypb.Any{l1}, want: []want{{errPart: "resource #0: type URL"}}},
		{name: "bad bytes", url: ListenerType, in: []*anypb.Any{l1, garbage}, want: []want{{name: "l1"}, {errPart: "resource #1"}}},
		{name: "bad wrapper", url: ListenerType, in: []*anypb.Any{badWrapper}, want: []want{{errPart: "Resource wrapper"}}},
		{name: "duplicate", url: ListenerType, in: []*anypb.Any{l1, wrapped, l1}, wantErr: `duplicate resource name "l1"`},
		{name: "duplicate through wrapper", url: ListenerType,
			in: []*anypb.Any{mustAny(t, &listenerv3.Listener{Name: "l2"}), wrapped}, wantErr: `duplicate resource name "l2"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, hb, err := decodeSotW(tc.url, tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errDuplicate) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hb != tc.heartbeats {
				t.Errorf("heartbeats = %d, want %d", hb, tc.heartbeats)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d resources, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				r := got[i]
				if r.Name != w.name {
					t.Errorf("[%d] name = %q, want %q", i, r.Name, w.name)
				}
				switch {
				case w.errPart == "" && (r.Err != nil || r.Message == nil):
					t.Errorf("[%d] err %v message %v, want a message", i, r.Err, r.Message)
				case w.errPart != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), w.errPart) || r.Message != nil):
					t.Errorf("[%d] err = %v, want one containing %q", i, r.Err, w.errPart)
				}
			}
		})
	}
}

func TestDecodeDelta(t *testing.T) {
	held := func(name string) (string, bool) {
		if name == "l1" {
			return "h1", true
		}
		return "", false
	}
	l := func(name string) *anypb.Any { return mustAny(t, &listenerv3.Listener{Name: name}) }
	tests := []struct {
		name      string
		in        []*discoveryv3.Resource
		removed   []string
		wantNames []string
		wantErrs  []bool
		wantErr   string
	}{
		{name: "resources", in: []*discoveryv3.Resource{{Name: "l1", Version: "2", Resource: l("l1")}, {Name: "l2", Version: "1", Resource: l("l2")}},
			wantNames: []string{"l1", "l2"}, wantErrs: []bool{false, false}},
		{name: "delta name wins", in: []*discoveryv3.Resource{{Name: "alias", Version: "1", Resource: l("l1")}},
			wantNames: []string{"alias"}, wantErrs: []bool{false}},
		{name: "heartbeat at the held version", in: []*discoveryv3.Resource{{Name: "l1", Version: "h1"}}},
		{name: "no body, not held", in: []*discoveryv3.Resource{{Name: "l1", Version: "other"}},
			wantNames: []string{"l1"}, wantErrs: []bool{true}},
		{name: "duplicate resource", in: []*discoveryv3.Resource{{Name: "l2", Resource: l("l2")}, {Name: "l2", Resource: l("l2")}},
			wantErr: `duplicate resource name "l2"`},
		{name: "resource also removed", in: []*discoveryv3.Resource{{Name: "l2", Resource: l("l2")}}, removed: []string{"l2"},
			wantErr: `duplicate resource name "l2"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeDelta(ListenerType, tc.in, tc.removed, held)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.wantNames) {
				t.Fatalf("got %d resources, want %d", len(got), len(tc.wantNames))
			}
			for i, r := range got {
				if r.Name != tc.wantNames[i] || (r.Err != nil) != tc.wantErrs[i] {
					t.Errorf("[%d] = %q err %v; want %q err %v", i, r.Name, r.Err, tc.wantNames[i], tc.wantErrs[i])
				}
				if r.Err == nil && r.Version != tc.in[i].GetVersion() {
					t.Errorf("[%d] version = %q, want %q", i, r.Version, tc.in[i].GetVersion())
				}
			}
		})
	}
}
