package client_test

import (
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

// When the server goes away the client reports the stream error, drops
// connected_state to 0, keeps subscription changes made meanwhile, and on
// the new stream re-requests every type with the last accepted version and
// no nonce (SotW) or with initial_resource_versions (delta), then ACKs.
func TestReconnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: false})
			err := srv.Set(nodeID, "v1", map[string][]types.Resource{
				client.ListenerType: res(listener("l1")),
				client.RouteType:    res(route("r1"), route("r2")),
			})
			if err != nil {
				t.Fatal(err)
			}
			st := stats.New()
			lh, rh := newHandler(), newHandler()
			c := runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads, Stats: st}, func(c *client.Client) {
				c.Watch(client.ListenerType, true, nil, lh)
				c.Watch(client.RouteType, false, []string{"r1"}, rh)
			})
			waitACK(t, ctx, srv, client.ListenerType, "v1")
			waitACK(t, ctx, srv, client.RouteType, "v1")
			eventually(t, ctx, "connected", func() bool {
				return c.Connected() && gauge(st, "control_plane.connected_state") == 1
			})
			before := lh.count()

			srv.Stop()
			eventually(t, ctx, "disconnected", func() bool {
				return !c.Connected() && gauge(st, "control_plane.connected_state") == 0
			})
			lh.wait(t, ctx, "a stream error", func(_ []client.Update, errs int) bool { return errs >= 1 })
			rh.wait(t, ctx, "a stream error", func(_ []client.Update, errs int) bool { return errs >= 1 })
			if lh.count() != before {
				t.Errorf("the handler got %d updates while disconnected", lh.count()-before)
			}
			var lastStream int64 // streams after it are opened after the restart
			for _, r := range srv.Requests() {
				lastStream = max(lastStream, r.Stream)
			}
			// Changed while disconnected: goes out on the next stream.
			c.Watch(client.RouteType, false, []string{"r1", "r2"}, rh)
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}

			newStream := func(typeURL string) xdstest.Request {
				t.Helper()
				r, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
					return r.Stream > lastStream && r.TypeURL == typeURL
				})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			lr, rr := newStream(client.ListenerType), newStream(client.RouteType)
			if lr.Nonce != "" || rr.Nonce != "" {
				t.Errorf("first requests on the new stream carry nonces %q, %q", lr.Nonce, rr.Nonce)
			}
			if m.delta {
				if lr.InitialVersions["l1"] == "" || len(lr.Names) != 0 {
					t.Errorf("delta LDS re-request = %+v, want initial version of l1 and legacy wildcard", lr)
				}
				if _, ok := rr.InitialVersions["r1"]; !ok || len(rr.InitialVersions) != 1 || !slices.Equal(rr.Names, []string{"r1", "r2"}) {
					t.Errorf("delta RDS re-request = %+v, want initial version of r1 only, subscribe [r1 r2]", rr)
				}
			} else {
				if lr.Version != "v1" || rr.Version != "v1" {
					t.Errorf("re-request versions %q, %q; want the last accepted v1", lr.Version, rr.Version)
				}
				if !slices.Equal(rr.Names, []string{"r1", "r2"}) {
					t.Errorf("RDS re-request names = %v, want [r1 r2]", rr.Names)
				}
			}
			if _, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
				return r.Stream > lastStream && r.TypeURL == client.ListenerType && r.Nonce != "" && r.Error == ""
			}); err != nil {
				t.Fatalf("no ACK on the new stream: %v", err)
			}
			rh.waitUpdate(t, ctx, "r2", func(u client.Update) bool { return slices.Contains(names(u), "r2") })
			eventually(t, ctx, "reconnected", func() bool {
				return c.Connected() && gauge(st, "control_plane.connected_state") == 1
			})
		})
	}
}
