package tcpproxy

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// backoff is backoff_options: the wait before each connect retry, as
// Envoy's JitteredExponentialBackOffStrategy. The n-th retry (n from 0)
// waits a random time below base·2ⁿ, the bound capped at max. The zero
// value retries at once (Envoy without backoff_options).
type backoff struct {
	base, max time.Duration
}

// compileBackoff reads backoff_options; max_interval defaults to ten times
// base_interval.
func compileBackoff(p *tcpv3.TcpProxy) (backoff, error) {
	o := p.GetBackoffOptions()
	if o == nil {
		return backoff{}, nil
	}
	b := o.GetBaseInterval()
	if b == nil || !b.IsValid() || b.AsDuration() < time.Millisecond {
		return backoff{}, fmt.Errorf("tcp_proxy: backoff_options.base_interval: required, at least 1ms")
	}
	bo := backoff{base: b.AsDuration(), max: 10 * b.AsDuration()}
	if m := o.GetMaxInterval(); m != nil {
		if !m.IsValid() || m.AsDuration() <= 0 {
			return backoff{}, fmt.Errorf("tcp_proxy: backoff_options.max_interval: must be positive")
		}
		bo.max = m.AsDuration()
	}
	if bo.max < bo.base {
		return backoff{}, fmt.Errorf("tcp_proxy: backoff_options: max_interval must be greater or equal to base_interval")
	}
	return bo, nil
}

// delay is the wait before retry n (n from 0); rnd(k) returns a value in
// [0, k).
func (b backoff) delay(n int, rnd func(int64) int64) time.Duration {
	if b.base <= 0 {
		return 0
	}
	bound := b.base
	for range n {
		if bound >= b.max/2 {
			bound = b.max
			break
		}
		bound *= 2
	}
	bound = min(bound, b.max)
	return time.Duration(rnd(int64(bound)))
}

// draw returns a random value in [0, n): the backoff and jitter draws.
// Tests replace it to make the draws known.
var draw = rand.Int64N

// wait sleeps before retry n, or returns ctx's error when ctx ends first.
func (b backoff) wait(ctx context.Context, n int) error {
	d := b.delay(n, draw)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxDurationFor is max_downstream_connection_duration for one connection:
// with max_downstream_connection_duration_jitter_percentage p, Envoy adds
// a random part below ⌈d·p/100⌉ (whole milliseconds). rnd(k) returns a
// value in [0, k).
func (c *Config) maxDurationFor(rnd func(int64) int64) time.Duration {
	if c.maxDuration <= 0 || c.maxJitter <= 0 {
		return c.maxDuration
	}
	ms := c.maxDuration.Milliseconds()
	jitter := int64(math.Ceil(float64(ms) * c.maxJitter / 100))
	if jitter <= 0 {
		return c.maxDuration
	}
	return c.maxDuration + time.Duration(rnd(jitter))*time.Millisecond
}
