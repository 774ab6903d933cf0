package client

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRateLimitBucketDefaults(t *testing.T) {
	now := time.Unix(1000, 0)
	if b := rateLimitBucket(nil, now); b != nil {
		t.Fatal("nil settings must disable the limiter")
	}
	b := rateLimitBucket(&corev3.RateLimitSettings{}, now)
	if b.max != 100 || b.rate != 10 {
		t.Errorf("defaults = %v tokens %v/s, want Envoy's 100 and 10/s", b.max, b.rate)
	}
	b = rateLimitBucket(&corev3.RateLimitSettings{MaxTokens: wrapperspb.UInt32(2), FillRate: wrapperspb.Double(4)}, now)
	for i := 0; i < 2; i++ {
		if d := b.wait(now); d != 0 {
			t.Fatalf("token %d: wait %v", i, d)
		}
		b.take(now)
	}
	if d := b.wait(now); d != 250*time.Millisecond {
		t.Errorf("empty bucket wait = %v, want 250ms at 4/s", d)
	}
	if d := b.wait(now.Add(250 * time.Millisecond)); d != 0 {
		t.Errorf("after refill wait = %v, want 0", d)
	}
}

// Identical NACKs: a burst of three, then one a second; an ACK or another
// error text starts over.
func TestNACKGate(t *testing.T) {
	now := time.Unix(1000, 0)
	var g nackGate
	send := func(msg string) time.Duration {
		d := g.wait(msg, now)
		if d == 0 {
			g.sentNACK(now)
		}
		return d
	}
	for i := 0; i < nackBurst; i++ {
		if d := send("e1"); d != 0 {
			t.Fatalf("NACK %d delayed %v within the burst", i+1, d)
		}
	}
	if d := send("e1"); d != nackInterval {
		t.Fatalf("4th identical NACK delay = %v, want %v", d, nackInterval)
	}
	now = now.Add(nackInterval)
	if d := send("e1"); d != 0 {
		t.Fatalf("NACK after the interval delayed %v", d)
	}
	if d := send("e2"); d != 0 {
		t.Fatalf("NACK with a new text delayed %v", d)
	}
	for i := 0; i < nackBurst-1; i++ {
		send("e2")
	}
	if d := send("e2"); d == 0 {
		t.Fatal("burst of e2 not limited")
	}
	g.sentACK()
	if d := send("e2"); d != 0 {
		t.Fatalf("NACK after an ACK delayed %v", d)
	}
}

func TestNACKLog(t *testing.T) {
	var l nackLog
	var logged []int
	for i := 1; i <= 250; i++ {
		if show, n := l.note("same"); show {
			logged = append(logged, n)
		}
	}
	want := []int{1, 100, 200}
	if len(logged) != len(want) {
		t.Fatalf("logged at %v, want %v", logged, want)
	}
	for i := range want {
		if logged[i] != want[i] {
			t.Fatalf("logged at %v, want %v", logged, want)
		}
	}
	if show, _ := l.note("other"); !show {
		t.Error("a new error text is not logged")
	}
	l.ack()
	if show, n := l.note("other"); !show || n != 1 {
		t.Error("the first NACK after an ACK is not logged")
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: 1 * time.Second}
	ceilings := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, c := range ceilings {
		c *= time.Millisecond
		d := b.next()
		if d < c/2 || d > c {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, d, c/2, c)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset delay = %v, want <= 100ms", d)
	}
}

func TestMethodFor(t *testing.T) {
	tests := []struct {
		typ   string
		delta bool
		want  string
	}{
		{"", false, "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"},
		{"", true, "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"},
		{ListenerType, false, "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners"},
		{ListenerType, true, "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners"},
		{ClusterType, false, "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters"},
		{ClusterType, true, "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters"},
		{RouteType, false, "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes"},
		{RouteType, true, "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes"},
		{EndpointType, false, "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints"},
		{EndpointType, true, "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints"},
	}
	for _, tc := range tests {
		if got, ok := methodFor(tc.typ, tc.delta); !ok || got != tc.want {
			t.Errorf("methodFor(%q, %v) = %q, %v; want %q", tc.typ, tc.delta, got, ok, tc.want)
		}
	}
	if _, ok := methodFor("type.googleapis.com/x", false); ok {
		t.Error("unknown type has a method")
	}
}
