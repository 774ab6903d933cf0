package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

// A resource with a TTL comes wrapped in envoy.service.discovery.v3.Resource
// (go-control-plane wraps whenever there is a TTL); the client unwraps it.
// A heartbeat (a wrapper without a resource) is ACKed without an update.
func TestResourceWrapperUnwrapped(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{ADS: true})
	ttl := time.Minute
	snap, err := cachev3.NewSnapshotWithTTLs("v1", map[string][]types.ResourceWithTTL{
		client.ListenerType: {{Resource: listener("l1"), TTL: &ttl}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
	wrapped := false
	srv.SetResponseHook(func(m proto.Message) {
		if r, ok := m.(*discoveryv3.DiscoveryResponse); ok && len(r.Resources) > 0 {
			wrapped = r.Resources[0].GetTypeUrl() == "type.googleapis.com/envoy.service.discovery.v3.Resource"
		}
	})
	lh := newHandler()
	runClient(t, srv, client.Options{Aggregated: true}, func(c *client.Client) {
		c.Watch(client.ListenerType, true, nil, lh)
	})
	u := lh.waitUpdate(t, ctx, "l1", func(u client.Update) bool { return len(u.Resources) == 1 })
	waitACK(t, ctx, srv, client.ListenerType, "v1")
	srv.SetResponseHook(nil)
	if !wrapped {
		t.Fatal("the server did not wrap the resource; the test tests nothing")
	}
	if l, ok := u.Resources[0].Message.(*listenerv3.Listener); !ok || l.GetName() != "l1" || u.Resources[0].Name != "l1" {
		t.Errorf("resource = %q %T, want the unwrapped listener l1", u.Resources[0].Name, u.Resources[0].Message)
	}

	hb, err := anypb.New(&discoveryv3.Resource{Name: "l1", Ttl: durationpb.New(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := srv.Inject(&discoveryv3.DiscoveryResponse{
		VersionInfo: "v1", TypeUrl: client.ListenerType, Nonce: "heartbeat-1", Resources: []*anypb.Any{hb},
	}); err != nil || n != 1 {
		t.Fatalf("Inject = %d, %v", n, err)
	}
	ack, err := srv.WaitFor(ctx, func(r xdstest.Request) bool { return r.Nonce == "heartbeat-1" })
	if err != nil {
		t.Fatal(err)
	}
	if ack.Error != "" || ack.Version != "v1" {
		t.Errorf("heartbeat answer = %+v, want an ACK of v1", ack)
	}
	if n := lh.count(); n != 1 {
		t.Errorf("%d updates, want 1: a heartbeat is no update", n)
	}
}

// Two resources with one name in a response NACK it without calling the
// handler (X-ACK-6).
func TestDuplicateNamesNACK(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			if err := srv.Set(nodeID, "v1", map[string][]types.Resource{client.ListenerType: res(listener("l1"))}); err != nil {
				t.Fatal(err)
			}
			srv.SetResponseHook(func(m proto.Message) {
				switch r := m.(type) {
				case *discoveryv3.DiscoveryResponse:
					r.Resources = append(r.Resources, r.Resources...)
				case *discoveryv3.DeltaDiscoveryResponse:
					r.Resources = append(r.Resources, r.Resources...)
				}
			})
			lh := newHandler()
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: true}, func(c *client.Client) {
				c.Watch(client.ListenerType, true, nil, lh)
			})
			nack := waitNACK(t, ctx, srv, client.ListenerType, "v1")
			if !strings.Contains(nack.Error, `duplicate resource name "l1"`) {
				t.Errorf("NACK error = %q, want it to name the duplicate", nack.Error)
			}
			if n := lh.count(); n != 0 {
				t.Errorf("handler called %d times for a response with duplicates", n)
			}
		})
	}
}

// A response of a type nobody watches is neither ACKed nor NACKed, and does
// not disturb the watched types (X-ACK-9).
func TestUnwatchedTypeIgnored(t *testing.T) {
	for _, m := range modes[:2] {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			set := func(v string) {
				t.Helper()
				if err := srv.Set(nodeID, v, map[string][]types.Resource{client.ClusterType: res(cluster("c-" + v))}); err != nil {
					t.Fatal(err)
				}
			}
			set("v1")
			ch := newHandler()
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: true}, func(c *client.Client) {
				c.Watch(client.ClusterType, true, nil, ch)
			})
			waitACK(t, ctx, srv, client.ClusterType, "v1")

			l, err := anypb.New(&listenerv3.Listener{Name: "stray"})
			if err != nil {
				t.Fatal(err)
			}
			var resp proto.Message = &discoveryv3.DiscoveryResponse{VersionInfo: "x", TypeUrl: client.ListenerType, Nonce: "stray", Resources: []*anypb.Any{l}}
			if m.delta {
				resp = &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "x", TypeUrl: client.ListenerType, Nonce: "stray",
					Resources: []*discoveryv3.Resource{{Name: "stray", Version: "1", Resource: l}}}
			}
			if n, err := srv.Inject(resp); err != nil || n != 1 {
				t.Fatalf("Inject = %d, %v", n, err)
			}
			// Responses are handled in order: once v2 is ACKed, the stray
			// response has been seen.
			set("v2")
			waitACK(t, ctx, srv, client.ClusterType, "v2")
			for _, r := range srv.Requests() {
				if r.TypeURL == client.ListenerType || r.Nonce == "stray" {
					t.Errorf("request %+v answers the unwatched type", r)
				}
			}
			for _, u := range ch.all() {
				if u.TypeURL != client.ClusterType {
					t.Errorf("cluster handler got a %s update", u.TypeURL)
				}
			}
		})
	}
}
