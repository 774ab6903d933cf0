package tcpproxy

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/pkg/stats"
)

// highest returns the largest value rnd may: the bound of each draw shows.
func highest(n int64) int64 { return n - 1 }

// TestBackoffDelays: the bound doubles from base_interval per retry until
// doubling would pass half of max_interval, then is max_interval (Envoy's JitteredExponentialBackOffStrategy); the
// default max is ten times the base; no backoff_options retries at once.
func TestBackoffDelays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    *corev3.BackoffStrategy
		want    []time.Duration // delay(n, highest) + 1ns for n = 0, 1, ...
		wantErr string
	}{
		{"none", nil, []time.Duration{0, 0}, ""},
		{"base 100ms max 1s", &corev3.BackoffStrategy{BaseInterval: durationpb.New(100 * time.Millisecond), MaxInterval: durationpb.New(time.Second)},
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}, ""},
		{"default max", &corev3.BackoffStrategy{BaseInterval: durationpb.New(100 * time.Millisecond)},
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}, ""},
		{"max below base", &corev3.BackoffStrategy{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)},
			nil, "tcp_proxy: backoff_options: max_interval must be greater or equal to base_interval"},
		{"no base", &corev3.BackoffStrategy{}, nil, "tcp_proxy: backoff_options.base_interval: required, at least 1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(&tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"), BackoffOptions: tc.opts}, stats.New())
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Compile = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for n, want := range tc.want {
				got := c.backoff.delay(n, highest)
				if want > 0 {
					got++ // highest draws bound-1
				}
				if got != want {
					t.Errorf("retry %d: bound %v, want %v", n, got, want)
				}
			}
			if d := c.backoff.delay(3, func(int64) int64 { return 0 }); d != 0 {
				t.Errorf("lowest draw = %v, want 0", d)
			}
		})
	}
}

// TestMaxDurationJitter: the jitter adds up to ⌈d·p/100⌉ ms, drawn below
// that bound; without a percentage the duration is exact.
func TestMaxDurationJitter(t *testing.T) {
	for _, tc := range []struct {
		pct        *typev3.Percent
		high, zero time.Duration
	}{
		{nil, time.Second, time.Second},
		{&typev3.Percent{Value: 10}, time.Second + 99*time.Millisecond, time.Second},
		{&typev3.Percent{Value: 0.05}, time.Second, time.Second}, // ⌈0.5⌉ = 1 ms: only 0 can be drawn
	} {
		c, err := Compile(&tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
			MaxDownstreamConnectionDuration:                 durationpb.New(time.Second),
			MaxDownstreamConnectionDurationJitterPercentage: tc.pct}, stats.New())
		if err != nil {
			t.Fatal(err)
		}
		if got := c.maxDurationFor(highest); got != tc.high {
			t.Errorf("%v: highest draw %v, want %v", tc.pct, got, tc.high)
		}
		if got := c.maxDurationFor(func(int64) int64 { return 0 }); got != tc.zero {
			t.Errorf("%v: lowest draw %v, want %v", tc.pct, got, tc.zero)
		}
	}
	_, err := Compile(&tcpv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: single("c"),
		MaxDownstreamConnectionDurationJitterPercentage: &typev3.Percent{Value: 101}}, stats.New())
	if err == nil {
		t.Error("jitter 101% accepted")
	}
}
