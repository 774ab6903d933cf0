package client

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

func testSender(o Options) *sender {
	return &sender{l: &loop{c: New(o)}, per: map[string]*streamType{}}
}

// What the SotW request of one type says, step by step on one stream.
func TestBuildSotW(t *testing.T) {
	node := &corev3.Node{Id: "n"}
	s := testSender(Options{Node: node, SetNodeOnFirstMessageOnly: true})
	pt := s.typeOn(RouteType)

	// No names yet: an empty first request would be a wildcard.
	if m, _ := s.buildSotW(pt, view{url: RouteType}); m != nil {
		t.Fatalf("request %v for an empty named subscription", m)
	}
	m, commit := s.buildSotW(pt, view{url: RouteType, names: []string{"a", "b"}, version: "v0"})
	req := m.(*discoveryv3.DiscoveryRequest)
	if !slices.Equal(req.GetResourceNames(), []string{"a", "b"}) || req.GetVersionInfo() != "v0" || req.GetNode() != node || req.GetResponseNonce() != "" {
		t.Fatalf("first request = %v", req)
	}
	commit()
	s.nodeSent = true
	if m, _ := s.buildSotW(pt, view{url: RouteType, names: []string{"a", "b"}, version: "v0"}); m != nil {
		t.Fatalf("request %v with nothing to say", m)
	}

	// A NACK of nonce 1 with the last accepted version and the full list.
	pt.nonce, pt.ackPending, pt.ackErr = "1", true, "bad"
	m, commit = s.buildSotW(pt, view{url: RouteType, names: []string{"a", "b"}, version: "v0"})
	req = m.(*discoveryv3.DiscoveryRequest)
	if req.GetErrorDetail().GetMessage() != "bad" || req.GetErrorDetail().GetCode() != 13 || req.GetResponseNonce() != "1" ||
		req.GetVersionInfo() != "v0" || req.GetNode() != nil || len(req.GetResourceNames()) != 2 {
		t.Fatalf("NACK = %v", req)
	}
	commit()

	// Dropping every name after names were sent: an empty list (not a
	// wildcard any more for the server), still with the latest nonce.
	m, _ = s.buildSotW(pt, view{url: RouteType, version: "v0"})
	req = m.(*discoveryv3.DiscoveryRequest)
	if len(req.GetResourceNames()) != 0 || req.GetResponseNonce() != "1" || req.GetErrorDetail() != nil {
		t.Fatalf("unsubscribe-all request = %v", req)
	}

	// Wildcard plus names: explicit "*" with the names.
	lt := s.typeOn(ListenerType)
	m, _ = s.buildSotW(lt, view{url: ListenerType, wildcard: true, names: []string{"x"}})
	if got := m.(*discoveryv3.DiscoveryRequest).GetResourceNames(); !slices.Equal(got, []string{"*", "x"}) {
		t.Fatalf("wildcard+names = %v", got)
	}
}

func TestBuildDelta(t *testing.T) {
	s := testSender(Options{Delta: true})
	pt := s.typeOn(ListenerType)
	m, commit := s.buildDelta(pt, view{url: ListenerType, wildcard: true, resVers: map[string]string{"l1": "h"}})
	req := m.(*discoveryv3.DeltaDiscoveryRequest)
	if len(req.GetResourceNamesSubscribe()) != 0 || req.GetInitialResourceVersions()["l1"] != "h" {
		t.Fatalf("first wildcard request = %v, want legacy empty subscribe and initial versions", req)
	}
	commit()

	// ACK: nonce, no diff, no initial versions.
	pt.nonce, pt.ackPending = "7", true
	m, commit = s.buildDelta(pt, view{url: ListenerType, wildcard: true, resVers: map[string]string{"l1": "h"}})
	req = m.(*discoveryv3.DeltaDiscoveryRequest)
	if req.GetResponseNonce() != "7" || req.GetErrorDetail() != nil || len(req.GetInitialResourceVersions()) != 0 {
		t.Fatalf("ACK = %v", req)
	}
	commit()

	// Adding a name and leaving wildcard: a diff without a nonce.
	m, _ = s.buildDelta(pt, view{url: ListenerType, names: []string{"n"}})
	req = m.(*discoveryv3.DeltaDiscoveryRequest)
	if !slices.Equal(req.GetResourceNamesSubscribe(), []string{"n"}) || !slices.Equal(req.GetResourceNamesUnsubscribe(), []string{"*"}) ||
		req.GetResponseNonce() != "" {
		t.Fatalf("diff = %v", req)
	}
}
