package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// fakeDNS is a Resolver the test drives step by step: each lookup first
// announces itself on lookups, then waits for an answer. Because the
// cluster's resolver goroutine applies an answer before it starts its next
// lookup, receiving the next lookup proves the previous answer was applied.
// A real DNS server could not give the test that ordering.
type fakeDNS struct {
	lookups chan lookupCall
	answers chan dnsAnswer
}

type lookupCall struct{ network, host string }

type dnsAnswer struct {
	addrs []netip.Addr
	err   error
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{lookups: make(chan lookupCall), answers: make(chan dnsAnswer)}
}

func (f *fakeDNS) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	select {
	case f.lookups <- lookupCall{network, host}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case a := <-f.answers:
		return a.addrs, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// next waits for the next lookup and returns what was asked.
func (f *fakeDNS) next(t *testing.T, ctx context.Context) lookupCall {
	t.Helper()
	select {
	case c := <-f.lookups:
		return c
	case <-ctx.Done():
		t.Fatal("timed out waiting for a DNS lookup")
		return lookupCall{}
	}
}

func (f *fakeDNS) answer(t *testing.T, ctx context.Context, err error, addrs ...string) {
	t.Helper()
	var a dnsAnswer
	for _, s := range addrs {
		a.addrs = append(a.addrs, netip.MustParseAddr(s))
	}
	a.err = err
	select {
	case f.answers <- a:
	case <-ctx.Done():
		t.Fatal("timed out answering a DNS lookup")
	}
}

func hostAddrs(c *Cluster) []string {
	var out []string
	for _, h := range c.Hosts() {
		out = append(out, h.Address)
	}
	return out
}

func addrsOn(port uint32, ips ...string) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, strconv.Itoa(int(port))))
	}
	return out
}

func TestStrictDNS(t *testing.T) {
	ctx := testCtx(t)
	dns := newFakeDNS()
	m, st := newTestManager(t, dns.resolve)
	port, _ := backendsOnSamePort(t, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	pb := cluster("strict", clusterv3.Cluster_STRICT_DNS, lbEndpoint("backend.test", port))
	pb.DnsRefreshRate = dur(2 * time.Millisecond)
	pb.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	c := mustAdd(t, m, pb)

	if call := dns.next(t, ctx); call != (lookupCall{"ip4", "backend.test"}) {
		t.Errorf("lookup = %+v, want ip4 backend.test", call)
	}
	dns.answer(t, ctx, nil, "127.0.0.1", "127.0.0.2")
	select {
	case <-c.Ready():
	case <-ctx.Done():
		t.Fatal("cluster never became ready")
	}
	if got, want := hostAddrs(c), addrsOn(port, "127.0.0.1", "127.0.0.2"); !slices.Equal(got, want) {
		t.Errorf("hosts = %v, want %v", got, want)
	}
	seen := map[string]bool{get(t, ctx, c): true, get(t, ctx, c): true}
	for _, a := range addrsOn(port, "127.0.0.1", "127.0.0.2") {
		if !seen[a] {
			t.Errorf("backend %s not used; served by %v", a, seen)
		}
	}
	wantStats(t, st, "strict", map[string]int64{"membership_total": 2, "membership_healthy": 2, "upstream_cx_active": 2})

	// The same addresses in another order change nothing.
	dns.next(t, ctx)
	dns.answer(t, ctx, nil, "127.0.0.2", "127.0.0.1")

	// A new answer replaces the hosts.
	dns.next(t, ctx)
	dns.answer(t, ctx, nil, "127.0.0.3")
	dns.next(t, ctx) // the answer above has been applied
	if got, want := hostAddrs(c), addrsOn(port, "127.0.0.3"); !slices.Equal(got, want) {
		t.Errorf("hosts after change = %v, want %v", got, want)
	}
	// The removed hosts' idle keep-alive connections were closed.
	wantStats(t, st, "strict", map[string]int64{"upstream_cx_active": 0, "upstream_cx_destroy": 2})
	if got, want := get(t, ctx, c), addrsOn(port, "127.0.0.3")[0]; got != want {
		t.Errorf("served by %s, want %s", got, want)
	}

	// A failed lookup keeps the last good hosts.
	dns.answer(t, ctx, errors.New("server misbehaving"))
	dns.next(t, ctx)
	if got, want := hostAddrs(c), addrsOn(port, "127.0.0.3"); !slices.Equal(got, want) {
		t.Errorf("hosts after a failed lookup = %v, want the last good %v", got, want)
	}

	// NXDOMAIN is an answer with no addresses, as in Envoy.
	dns.answer(t, ctx, &net.DNSError{Err: "no such host", Name: "backend.test", IsNotFound: true})
	dns.next(t, ctx)
	if got := hostAddrs(c); len(got) != 0 {
		t.Errorf("hosts after NXDOMAIN = %v, want none", got)
	}
	if _, err := c.Dial(ctx); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("Dial with no hosts = %v, want ErrNoHealthyUpstream", err)
	}
	wantStats(t, st, "strict", map[string]int64{"membership_total": 0, "membership_change": 3})
}

func TestLogicalDNS(t *testing.T) {
	ctx := testCtx(t)
	dns := newFakeDNS()
	m, _ := newTestManager(t, dns.resolve)
	port, _ := backendsOnSamePort(t, "127.0.0.1", "127.0.0.2")
	pb := cluster("logical", clusterv3.Cluster_LOGICAL_DNS, lbEndpoint("backend.test", port))
	pb.DnsRefreshRate = dur(2 * time.Millisecond)
	c := mustAdd(t, m, pb)

	// Until the first answer, callers wait (a cancelled caller gives up).
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Dial(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial before the first answer with a cancelled context = %v, want context.Canceled", err)
	}

	if call := dns.next(t, ctx); call.network != "ip" {
		t.Errorf("lookup network = %q, want ip (AUTO)", call.network)
	}
	dns.answer(t, ctx, nil, "127.0.0.1", "127.0.0.2")
	first := addrsOn(port, "127.0.0.1")[0]
	if got := get(t, ctx, c); got != first {
		t.Errorf("served by %s, want the first answer %s", got, first)
	}
	hs := c.Hosts()
	if len(hs) != 1 || hs[0].Address != first || hs[0].Hostname != "backend.test" {
		t.Errorf("Hosts() = %+v, want one host at %s", hs, first)
	}

	dns.next(t, ctx)
	dns.answer(t, ctx, nil, "127.0.0.2")
	dns.next(t, ctx)
	second := addrsOn(port, "127.0.0.2")[0]
	if got := hostAddrs(c); !slices.Equal(got, []string{second}) {
		t.Errorf("hosts = %v, want [%s]", got, second)
	}
	// New connections go to the new address ...
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.TCP().RemoteAddr().String(); got != second {
		t.Errorf("Dial went to %s, want %s", got, second)
	}
	conn.Close()
	// ... while the pooled keep-alive connection stays where it was.
	if got := get(t, ctx, c); got != first {
		t.Errorf("pooled request served by %s, want the existing connection to %s", got, first)
	}
}

func TestPickFamily(t *testing.T) {
	v4a, v4b, v6a := "10.0.0.1", "10.0.0.2", "2001:db8::1"
	answer := []string{v4a, v6a, v4b, v4a, "::ffff:10.0.0.2"}
	for _, tc := range []struct {
		family clusterv3.Cluster_DnsLookupFamily
		in     []string
		want   []string
	}{
		{clusterv3.Cluster_AUTO, answer, []string{v6a}},
		{clusterv3.Cluster_AUTO, []string{v4a}, []string{v4a}},
		{clusterv3.Cluster_V4_PREFERRED, answer, []string{v4a, v4b}},
		{clusterv3.Cluster_V4_PREFERRED, []string{v6a}, []string{v6a}},
		{clusterv3.Cluster_V4_ONLY, answer, []string{v4a, v4b}},
		{clusterv3.Cluster_V6_ONLY, answer, []string{v6a}},
		{clusterv3.Cluster_ALL, answer, []string{v4a, v6a, v4b}},
	} {
		var in []netip.Addr
		for _, s := range tc.in {
			in = append(in, netip.MustParseAddr(s))
		}
		var got []string
		for _, a := range pickFamily(tc.family, in) {
			got = append(got, a.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("pickFamily(%s, %v) = %v, want %v", tc.family, tc.in, got, tc.want)
		}
	}
}

func TestNextResolve(t *testing.T) {
	c := &Cluster{s: &settings{dnsRefresh: 5 * time.Second, dnsFailureBase: time.Second, dnsFailureMax: 5 * time.Second}}
	for failures, want := range []time.Duration{5 * time.Second, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		if got := c.nextResolve(failures); got != want {
			t.Errorf("nextResolve(%d) = %v, want %v", failures, got, want)
		}
	}
	c.s.dnsJitter = time.Second
	for i := 0; i < 100; i++ {
		if got := c.nextResolve(0); got < 5*time.Second || got >= 6*time.Second {
			t.Fatalf("nextResolve with jitter = %v, want in [5s, 6s)", got)
		}
	}
}
