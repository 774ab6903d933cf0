package client_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

// go-control-plane answers every NACK with the same bad snapshot at once.
// The client lets three identical NACKs out at once and then one a second,
// logs the rejection once, and the server, which only answers requests,
// does not spin either.
func TestNACKLoopIsBounded(t *testing.T) {
	for _, m := range []mode{modes[0], modes[2]} { // SotW: delta servers do not re-send
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := startServer(t, xdstest.Options{ADS: true})
			if err := srv.Set(nodeID, "v1", map[string][]types.Resource{client.ListenerType: res(listener("bad"))}); err != nil {
				t.Fatal(err)
			}
			logs := newLogCounter()
			lh := newHandler()
			lh.setReject(func(client.Update) error { return errors.New("always wrong") })
			runClient(t, srv, client.Options{Delta: m.delta, Aggregated: m.ads, Log: slog.New(logs)}, func(c *client.Client) {
				c.Watch(client.ListenerType, true, nil, lh)
			})

			nacks := 0
			var firstAt time.Time
			_, err := srv.WaitFor(ctx, func(r xdstest.Request) bool {
				if r.Error != "always wrong" {
					return false
				}
				nacks++
				if nacks == 1 {
					firstAt = time.Now()
				}
				return nacks == 5
			})
			if err != nil {
				t.Fatal(err)
			}
			// NACKs 1-3 go at once, 4 after about 1s, 5 after about 2s.
			if d := time.Since(firstAt); d < 1500*time.Millisecond {
				t.Errorf("5 NACKs within %v: the loop is not slowed down", d)
			}
			var sent int
			for _, r := range srv.Responses() {
				if r.TypeURL == client.ListenerType {
					sent++
				}
			}
			if sent > nacks+1 {
				t.Errorf("server sent %d listener responses for %d NACKs", sent, nacks)
			}
			if n := logs.count("xds response rejected"); n != 1 {
				t.Errorf("rejection logged %d times, want once", n)
			}
			if n := logs.count("xds response rejected again"); n != 0 {
				t.Errorf("repeated rejection logged %d times before the 100th, want 0", n)
			}
		})
	}
}

// rate_limit_settings throttles every request with Envoy's token bucket and
// counts control_plane.rate_limit_enforced.
func TestRateLimitSettings(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, xdstest.Options{ADS: true})
	err := srv.Set(nodeID, "v1", map[string][]types.Resource{
		client.ListenerType: res(listener("l1")),
		client.ClusterType:  res(cluster("c1")),
	})
	if err != nil {
		t.Fatal(err)
	}
	st := stats.New()
	rl := &corev3.RateLimitSettings{MaxTokens: wrapperspb.UInt32(1), FillRate: wrapperspb.Double(20)}
	start := time.Now()
	runClient(t, srv, client.Options{Aggregated: true, RateLimit: rl, Stats: st}, func(c *client.Client) {
		c.Watch(client.ListenerType, true, nil, newHandler())
		c.Watch(client.ClusterType, true, nil, newHandler())
	})
	waitACK(t, ctx, srv, client.ListenerType, "v1")
	waitACK(t, ctx, srv, client.ClusterType, "v1")
	// Four requests with one token and 20 tokens/s: at least 150ms.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("4 requests took %v with 1 token at 20/s", d)
	}
	if v, _ := st.Get("control_plane.rate_limit_enforced"); v == 0 {
		t.Error("control_plane.rate_limit_enforced = 0")
	}
	eventually(t, ctx, "no pending requests", func() bool { return gauge(st, "control_plane.pending_requests") == 0 })
}
