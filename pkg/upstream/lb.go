package upstream

import (
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// picker chooses one host of a fixed, non-empty candidate list. It is safe
// for concurrent use.
type picker interface {
	pick() *host
}

// newPicker reads the hosts' weights once; the picker keeps them.
func newPicker(lb lbKind, hosts []*host) picker {
	weights := make([]uint32, len(hosts))
	equal := true
	for i, h := range hosts {
		weights[i] = h.attr().weight
		equal = equal && weights[i] == weights[0]
	}
	switch {
	case lb == lbRandom && equal:
		return uniformRandom(hosts)
	case lb == lbRandom:
		return newWeightedRandom(hosts, weights)
	case equal:
		// Start at a random index so that many clusters (or restarts) do not
		// all hit the first host first, as Envoy seeds rr_index_.
		p := &roundRobin{hosts: hosts}
		p.next.Store(rand.Uint64N(uint64(len(hosts))))
		return p
	default:
		return newSmoothWRR(hosts, weights)
	}
}

// roundRobin cycles through hosts of equal weight; lock-free.
type roundRobin struct {
	hosts []*host
	next  atomic.Uint64
}

func (p *roundRobin) pick() *host {
	i := p.next.Add(1) - 1
	return p.hosts[i%uint64(len(p.hosts))]
}

// smoothWRR is nginx's smooth weighted round robin: every pick adds each
// host's weight to its current value, takes the largest and subtracts the
// total from it. Over sum(weights) picks each host is chosen weight times,
// interleaved. The state is compound, so a mutex guards it.
type smoothWRR struct {
	hosts   []*host
	weights []int64 // weights[i] is hosts[i]'s weight when the picker was built
	total   int64

	mu      sync.Mutex
	current []int64 // guarded by mu
}

func newSmoothWRR(hosts []*host, weights []uint32) *smoothWRR {
	p := &smoothWRR{hosts: hosts, weights: make([]int64, len(hosts)), current: make([]int64, len(hosts))}
	for i, w := range weights {
		p.weights[i] = int64(w)
		p.total += int64(w)
	}
	return p
}

func (p *smoothWRR) pick() *host {
	p.mu.Lock()
	best := 0
	for i, w := range p.weights {
		p.current[i] += w
		if p.current[i] > p.current[best] {
			best = i
		}
	}
	p.current[best] -= p.total
	p.mu.Unlock()
	return p.hosts[best]
}

// uniformRandom picks any host with equal probability.
type uniformRandom []*host

func (p uniformRandom) pick() *host { return p[rand.IntN(len(p))] }

// weightedRandom picks a host with probability weight/total.
type weightedRandom struct {
	hosts []*host
	cum   []uint64 // cum[i] = sum of weights of hosts[0..i]
}

func newWeightedRandom(hosts []*host, weights []uint32) *weightedRandom {
	p := &weightedRandom{hosts: hosts, cum: make([]uint64, len(hosts))}
	var sum uint64
	for i, w := range weights {
		sum += uint64(w)
		p.cum[i] = sum
	}
	return p
}

func (p *weightedRandom) pick() *host {
	r := rand.Uint64N(p.cum[len(p.cum)-1])
	i := sort.Search(len(p.cum), func(i int) bool { return p.cum[i] > r })
	return p.hosts[i]
}

var (
	_ picker = (*roundRobin)(nil)
	_ picker = (*smoothWRR)(nil)
	_ picker = uniformRandom(nil)
	_ picker = (*weightedRandom)(nil)
)
