package client_test

import (
	"errors"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

// The first push of each type is decoded, delivered and ACKed with its
// version; the node goes only in the first request of each stream when
// SetNodeOnFirstMessageOnly is set; wildcard is the legacy empty list.
func TestFirstPushACK(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			err := srv.Set(nodeID, "v1", map[string][]types.Resource{
				client.ListenerType: res(listener("l1"), listener("l2")),
				client.ClusterType:  res(cluster("c1")),
			})
			if err != nil {
				t.Fatal(err)
			}
			lh, ch := newHandler(), newHandler()
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads, SetNodeOnFirstMessageOnly: true},
				func(c *client.Client) {
					c.Watch(client.ListenerType, true, nil, lh)
					c.Watch(client.ClusterType, true, nil, ch)
				})

			u := lh.waitUpdate(t, ctx, "listeners", func(u client.Update) bool { return len(u.Resources) > 0 })
			if got := names(u); !slices.Equal(got, []string{"l1", "l2"}) {
				t.Errorf("listener names = %v, want [l1 l2]", got)
			}
			if u.Version != "v1" || u.TypeURL != client.ListenerType || u.FullState != !m.delta {
				t.Errorf("update = version %q type %q full state %v; want v1, listener, %v", u.Version, u.TypeURL, u.FullState, !m.delta)
			}
			for _, r := range u.Resources {
				if _, ok := r.Message.(*listenerv3.Listener); !ok || r.Err != nil {
					t.Errorf("resource %q: message %T, err %v", r.Name, r.Message, r.Err)
				}
				if m.delta && r.Version == "" {
					t.Errorf("delta resource %q has no version", r.Name)
				}
			}
			waitACK(t, ctx, srv, client.ListenerType, "v1")
			waitACK(t, ctx, srv, client.ClusterType, "v1")

			firstOfStream := map[int64]bool{}
			for _, r := range srv.Requests() {
				first := !firstOfStream[r.Stream]
				firstOfStream[r.Stream] = true
				switch {
				case first && (r.Node == nil || r.Node.GetId() != nodeID):
					t.Errorf("first request of stream %d has node %v, want id %q", r.Stream, r.Node, nodeID)
				case !first && r.Node != nil:
					t.Errorf("request %+v repeats the node", r)
				}
				if r.Nonce == "" && len(r.Names) != 0 {
					t.Errorf("initial wildcard request names %v, want the legacy empty list", r.Names)
				}
			}
			if want := map[bool]int{true: 1, false: 2}[m.ads]; len(firstOfStream) != want {
				t.Errorf("%d streams, want %d", len(firstOfStream), want)
			}
		})
	}
}

// Without SetNodeOnFirstMessageOnly every request carries the node.
func TestNodeInEveryRequest(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{ADS: true})
	if err := srv.Set(nodeID, "v1", map[string][]types.Resource{client.ListenerType: res(listener("l1"))}); err != nil {
		t.Fatal(err)
	}
	runClient(t, srv, client.Options{Aggregated: true}, func(c *client.Client) {
		c.Watch(client.ListenerType, true, nil, newHandler())
	})
	ack := waitACK(t, ctx, srv, client.ListenerType, "v1")
	if ack.Node.GetId() != nodeID {
		t.Errorf("ACK node = %v, want id %q", ack.Node, nodeID)
	}
}

// A handler error NACKs with INTERNAL (as Envoy does) and the handler's text, and
// keeps version_info at the last accepted version; a later good version is
// ACKed.
func TestNACKKeepsLastAcceptedVersion(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			set := func(version string, ls ...types.Resource) {
				t.Helper()
				if err := srv.Set(nodeID, version, map[string][]types.Resource{client.ListenerType: ls}); err != nil {
					t.Fatal(err)
				}
			}
			lh := newHandler()
			lh.setReject(func(u client.Update) error {
				for _, r := range u.Resources {
					if r.Name == "bad" {
						return errors.New(`listener "bad": rejected`)
					}
				}
				return nil
			})
			set("v1", listener("l1"))
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads}, func(c *client.Client) {
				c.Watch(client.ListenerType, true, nil, lh)
			})
			waitACK(t, ctx, srv, client.ListenerType, "v1")

			set("v2", listener("l1"), listener("bad"))
			nack := waitNACK(t, ctx, srv, client.ListenerType, "v2")
			if nack.Error != `listener "bad": rejected` || nack.ErrorCode != 13 {
				t.Errorf("NACK error_detail = %d %q, want 13 %q", nack.ErrorCode, nack.Error, `listener "bad": rejected`)
			}
			if !m.delta && nack.Version != "v1" {
				t.Errorf("NACK version_info = %q, want the last accepted v1", nack.Version)
			}

			set("v3", listener("l1"), listener("l3"))
			waitACK(t, ctx, srv, client.ListenerType, "v3")
			u := lh.waitUpdate(t, ctx, "v3", func(u client.Update) bool { return u.Version == "v3" })
			if m.delta && !slices.Equal(u.Removed, []string{"bad"}) {
				t.Errorf("delta v3 removed = %v, want [bad]", u.Removed)
			}
		})
	}
}

// Changing a named subscription re-sends the full list (SotW) with the
// latest nonce and version, or a subscribe/unsubscribe diff (delta).
func TestNamedSubscriptionChange(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			// Not ADS-strict: the client subscribes to subsets.
			srv := startServer(t, xdstest.Options{ADS: false})
			err := srv.Set(nodeID, "v1", map[string][]types.Resource{
				client.RouteType: res(route("r1"), route("r2"), route("r3")),
			})
			if err != nil {
				t.Fatal(err)
			}
			rh := newHandler()
			c := runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads}, func(c *client.Client) {
				c.Watch(client.RouteType, false, []string{"r1"}, rh)
			})
			u := rh.waitUpdate(t, ctx, "r1", func(u client.Update) bool { return len(u.Resources) > 0 })
			if got := names(u); !slices.Equal(got, []string{"r1"}) || u.FullState {
				t.Errorf("first update names %v full state %v, want [r1] false", got, u.FullState)
			}
			ack := waitACK(t, ctx, srv, client.RouteType, "v1")
			if !m.delta && !slices.Equal(ack.Names, []string{"r1"}) {
				t.Errorf("ACK names = %v, want [r1]", ack.Names)
			}

			c.Watch(client.RouteType, false, []string{"r2", "r1"}, rh)
			req, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
				return r.TypeURL == client.RouteType && slices.Contains(r.Names, "r2")
			})
			if err != nil {
				t.Fatal(err)
			}
			if m.delta {
				if !slices.Equal(req.Names, []string{"r2"}) || req.Nonce != "" || len(req.Unsubscribe) != 0 {
					t.Errorf("delta subscribe request = %+v, want subscribe [r2] and no nonce", req)
				}
			} else if !slices.Equal(req.Names, []string{"r1", "r2"}) || req.Nonce != ack.Nonce || req.Version != "v1" {
				t.Errorf("SotW request = %+v, want names [r1 r2], nonce %q, version v1", req, ack.Nonce)
			}
			rh.waitUpdate(t, ctx, "r2", func(u client.Update) bool { return slices.Contains(names(u), "r2") })

			c.Watch(client.RouteType, false, []string{"r2"}, rh)
			req, err = srv.WaitFor(ctx, func(r xdstest.Request) bool {
				if r.TypeURL != client.RouteType {
					return false
				}
				if m.delta {
					return len(r.Unsubscribe) > 0
				}
				return slices.Equal(r.Names, []string{"r2"})
			})
			if err != nil {
				t.Fatal(err)
			}
			if m.delta && (!slices.Equal(req.Unsubscribe, []string{"r1"}) || len(req.Names) != 0) {
				t.Errorf("delta unsubscribe request = %+v, want unsubscribe [r1]", req)
			}
		})
	}
}

// Watch called from inside OnUpdate (CDS naming EDS) neither deadlocks nor
// is lost, and with an ADS-strict cache the EDS request names every
// cluster.
func TestWatchFromHandler(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			err := srv.Set(nodeID, "v1", map[string][]types.Resource{
				client.ClusterType:  res(cluster("c1"), cluster("c2")),
				client.EndpointType: res(endpoints("c1"), endpoints("c2")),
			})
			if err != nil {
				t.Fatal(err)
			}
			ch, eh := newHandler(), newHandler()
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads}, func(c *client.Client) {
				ch.onUpdate = func(u client.Update) {
					c.Watch(client.EndpointType, false, names(u), eh)
				}
				c.Watch(client.ClusterType, true, nil, ch)
			})
			u := eh.waitUpdate(t, ctx, "endpoints", func(u client.Update) bool { return len(u.Resources) == 2 })
			if got := names(u); !slices.Equal(got, []string{"c1", "c2"}) {
				t.Errorf("endpoint names = %v, want [c1 c2] (from cluster_name)", got)
			}
			waitACK(t, ctx, srv, client.EndpointType, "v1")
			waitACK(t, ctx, srv, client.ClusterType, "v1")
		})
	}
}

// ExplicitWildcard subscribes with "*" instead of the legacy empty list.
// Only delta is tested against the server: go-control-plane's snapshot
// cache filters a SotW response by the literal request names, so "*" gets
// nothing from it in SotW.
func TestExplicitWildcard(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{ADS: true})
	if err := srv.Set(nodeID, "v1", map[string][]types.Resource{client.ListenerType: res(listener("l1"))}); err != nil {
		t.Fatal(err)
	}
	h := newHandler()
	runClient(t, srv, client.Options{Delta: true, Aggregated: true, ExplicitWildcard: true}, func(c *client.Client) {
		c.Watch(client.ListenerType, true, nil, h)
	})
	waitACK(t, ctx, srv, client.ListenerType, "v1")
	if first := srv.Requests()[0]; !slices.Equal(first.Names, []string{"*"}) {
		t.Errorf("first request names = %v, want [*]", first.Names)
	}
	h.waitUpdate(t, ctx, "l1", func(u client.Update) bool { return slices.Equal(names(u), []string{"l1"}) })
}

// A type without a per-type service cannot be carried outside ADS: the
// handler hears of it once and nothing spins.
func TestPerTypeUnknownType(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{})
	h := newHandler()
	const secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	runClient(t, srv, client.Options{}, func(c *client.Client) { c.Watch(secret, false, []string{"s"}, h) })
	h.wait(t, ctx, "stream error", func(_ []client.Update, errs int) bool { return errs == 1 })
}

func TestStreamErrorWhenUnreachable(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{})
	srv.Stop()
	h := newHandler()
	c := runClient(t, srv, client.Options{Aggregated: true}, func(c *client.Client) {
		c.Watch(client.ListenerType, true, nil, h)
	})
	h.wait(t, ctx, "two stream errors", func(_ []client.Update, errs int) bool { return errs >= 2 })
	if c.Connected() {
		t.Error("Connected() = true with no server")
	}
	if h.count() != 0 {
		t.Errorf("%d updates without a server", h.count())
	}
}
