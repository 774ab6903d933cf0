package dataplane_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestFilterChainBySNI: with a tls_inspector listener filter, each
// connection goes to the filter chain whose server_names match its TLS
// ClientHello, and plain-text connections to the raw_buffer chain. Which
// chain took a connection shows in that chain's HCM stats.
func TestFilterChainBySNI(t *testing.T) {
	chain := func(match, prefix string) string {
		return fmt.Sprintf(`{%s "filters": [{"name": "hcm", "typed_config": {
  "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
  "stat_prefix": %q,
  "route_config": {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": %q}}}]}]},
  "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}`, match, prefix, prefix)
	}
	h := startHop(t, `{"static_resources": {"listeners": [{
  "name": "l",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
  "listener_filters": [{"name": "tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
  "filter_chains": [`+strings.Join([]string{
		chain(`"filter_chain_match": {"server_names": ["a.example.com"]},`, "a"),
		chain(`"filter_chain_match": {"server_names": ["*.example.com"]},`, "wild"),
		chain(`"filter_chain_match": {"transport_protocol": "raw_buffer"},`, "plain"),
	}, ",")+`]}]}}`)

	hello := func(sni string) {
		c, err := net.DialTimeout("tcp", h.addr("l"), defaultTestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(defaultTestTimeout))
		// hop speaks HTTP on these chains, so the handshake fails; the
		// ClientHello is all the chain choice needs.
		tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	}
	hello("a.example.com")
	hello("b.example.com")
	hello("c.example.com")
	if res, body := get(t, "http://"+h.addr("l")+"/"); res.StatusCode != 200 || body != "plain" {
		t.Fatalf("plain text connection: %d %q", res.StatusCode, body)
	}
	h.waitStat("http.a.downstream_cx_total", 1)
	h.waitStat("http.wild.downstream_cx_total", 2)
	h.waitStat("http.plain.downstream_cx_total", 1)

	// A TLS connection matching no chain is closed and counted.
	hello("other.org")
	h.waitStat("listener.127.0.0.1_0.no_filter_chain_match", 1)
}
