package dataplane_test

import (
	"fmt"
	"net/http"
	"testing"
)

// origDstConnectYAML terminates CONNECTs carrying "foo: bar" into an
// ORIGINAL_DST cluster keyed by :authority (terminate_http1_connect.yaml's
// local_original_dst), with the given HCM fields.
func origDstConnectYAML(hcmExtra string) string {
	vh := `{"name": "od", "domains": ["127.0.0.1", "127.0.0.1:*"], "routes": [{"match": {"connect_matcher": {}, "headers": [{"name": "foo", "string_match": {"exact": "bar"}}]},
	 "route": {"cluster": "od", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}]}`
	od := `{"name": "od", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s",
	 "original_dst_lb_config": {"use_http_header": true, "http_header_name": ":authority"}}`
	return bootstrapJSON([]string{hcmListener("", hcmExtra, vh, "")}, od)
}

// TestConnectTerminateOriginalDst: a terminated CONNECT reaches the
// address in its authority through an ORIGINAL_DST cluster, also when
// strip_any_host_port took the port off for matching (the router puts it
// back before the cluster reads :authority); without the matching header
// no route matches.
func TestConnectTerminateOriginalDst(t *testing.T) {
	for _, hcm := range []string{"", `"strip_any_host_port": true`} {
		t.Run(fmt.Sprintf("hcm{%s}", hcm), func(t *testing.T) {
			h := startHop(t, origDstConnectYAML(hcm))
			for i := 0; i < 2; i++ { // two echo servers, two hosts
				echo := startTCPEcho(t)
				c := dialRaw(t, h.addr("l"))
				c.send(fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\nfoo: bar\r\n\r\n", echo))
				if res := c.readResponse("CONNECT"); res.StatusCode != http.StatusOK {
					t.Fatalf("status %d", res.StatusCode)
				}
				echoBoth(t, c.Conn, c.br, 64<<10)
			}
			if n := h.stat("cluster.od.upstream_cx_total"); n != 2 {
				t.Errorf("cluster.od.upstream_cx_total = %d, want 2", n)
			}
			c := dialRaw(t, h.addr("l"))
			c.send(fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", startTCPEcho(t)))
			if res := c.readResponse("CONNECT"); res.StatusCode != http.StatusNotFound {
				t.Fatalf("without foo: bar: %d, want 404", res.StatusCode)
			}
		})
	}
}
