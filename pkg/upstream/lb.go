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

func newPicker(lb lbKind, hosts []*host) picker {
	equal := true
	for _, h := range hosts[1:] {
		equal = equal && h.weight == hosts[0].weight
	}
	switch {
	case lb == lbRandom && equal:
		return uniformRandom(hosts)
	case lb == lbRandom:
		return newWeightedRandom(hosts)
	case equal:
		// Start at a random index so that many clusters (or restarts) do not
		// all hit the first host first, as Envoy seeds rr_index_.
		p := &roundRobin{hosts: hosts}
		p.next.Store(rand.Uint64N(uint64(len(hosts))))
		return p
	default:
		return newSmoothWRR(hosts)
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
	hosts []*host
	total int64

	mu      sync.Mutex
	current []int64 // guarded by mu
}

func newSmoothWRR(hosts []*host) *smoothWRR {
	p := &smoothWRR{hosts: hosts, current: make([]int64, len(hosts))}
	for _, h := range hosts {
		p.total += int64(h.weight)
	}
	return p
}

func (p *smoothWRR) pick() *host {
	p.mu.Lock()
	best := 0
	for i, h := range p.hosts {
		p.current[i] += int64(h.weight)
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

func newWeightedRandom(hosts []*host) *weightedRandom {
	p := &weightedRandom{hosts: hosts, cum: make([]uint64, len(hosts))}
	var sum uint64
	for i, h := range hosts {
		sum += uint64(h.weight)
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
