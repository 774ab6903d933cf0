package upstream

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// testHosts makes hosts named h0, h1... with the given weights and health.
func testHosts(weights []uint32, health []corev3.HealthStatus) []*host {
	var hs []*host
	for i, w := range weights {
		ep := &endpointSpec{weight: w}
		if health != nil {
			ep.health = health[i]
		}
		hs = append(hs, newHost("h"+strconv.Itoa(i), netip.AddrPortFrom(netip.IPv4Unspecified(), 1), "", attrsOf(ep)))
	}
	return hs
}

func TestSmoothWeightedRoundRobin(t *testing.T) {
	hosts := testHosts([]uint32{5, 1, 1}, nil)
	p := newPicker(lbRoundRobin, hosts)
	var seq []string
	for i := 0; i < 14; i++ {
		seq = append(seq, p.pick().key)
	}
	// nginx's smooth sequence for 5,1,1: the light hosts are interleaved.
	want := "h0 h0 h1 h0 h2 h0 h0 h0 h0 h1 h0 h2 h0 h0"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("sequence = %s, want %s", got, want)
	}
}

func TestRoundRobinEqualWeights(t *testing.T) {
	p := newPicker(lbRoundRobin, testHosts([]uint32{2, 2, 2}, nil))
	counts := map[string]int{}
	for i := 0; i < 9; i++ {
		counts[p.pick().key]++
	}
	for _, k := range []string{"h0", "h1", "h2"} {
		if counts[k] != 3 {
			t.Errorf("counts = %v, want 3 each", counts)
		}
	}
}

func TestWeightedRandom(t *testing.T) {
	p := newPicker(lbRandom, testHosts([]uint32{1, 3}, nil))
	const n = 20000
	heavy := 0
	for i := 0; i < n; i++ {
		if p.pick().key == "h1" {
			heavy++
		}
	}
	// Expect 0.75; the standard deviation is about 0.003, so ±0.03 cannot
	// fail by chance.
	if f := float64(heavy) / n; f < 0.72 || f > 0.78 {
		t.Errorf("weight-3 host chosen %.3f of the time, want about 0.75", f)
	}
}

func TestHostSetHealthAndPanic(t *testing.T) {
	const (
		H = corev3.HealthStatus_HEALTHY
		U = corev3.HealthStatus_UNHEALTHY
		D = corev3.HealthStatus_DEGRADED
		K = corev3.HealthStatus_UNKNOWN
		R = corev3.HealthStatus_DRAINING
	)
	for _, tc := range []struct {
		name      string
		health    []corev3.HealthStatus
		threshold float64
		wantPanic bool
		wantPick  string // the set of hosts picks come from, sorted
		wantNone  bool
	}{
		{"all healthy", []corev3.HealthStatus{H, K, H}, 50, false, "h0 h1 h2", false},
		{"skip unhealthy", []corev3.HealthStatus{H, H, U}, 50, false, "h0 h1", false},
		{"panic below threshold", []corev3.HealthStatus{H, U, U}, 50, true, "h0 h1 h2", false},
		{"panic disabled", []corev3.HealthStatus{U, U, R}, 0, false, "", true},
		{"degraded when no healthy", []corev3.HealthStatus{D, D, U}, 50, false, "h0 h1", false},
		{"all unhealthy panics", []corev3.HealthStatus{U, R}, 50, true, "h0 h1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ones := make([]uint32, len(tc.health))
			for i := range ones {
				ones[i] = 1
			}
			hosts := testHosts(ones, tc.health)
			hs := newHostSet(hosts, lbRoundRobin, tc.threshold)
			if hs.panic != tc.wantPanic {
				t.Errorf("panic = %v, want %v", hs.panic, tc.wantPanic)
			}
			if tc.wantNone {
				if hs.pick != nil {
					t.Error("a picker exists, want none")
				}
				return
			}
			seen := map[string]bool{}
			for i := 0; i < 3*len(hosts); i++ {
				seen[hs.pick.pick().key] = true
			}
			var got []string
			for _, h := range hosts {
				if seen[h.key] {
					got = append(got, h.key)
				}
			}
			if strings.Join(got, " ") != tc.wantPick {
				t.Errorf("picked from %v, want %s", got, tc.wantPick)
			}
		})
	}
}
