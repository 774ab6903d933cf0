package dataplane_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// tcpProxyYAML is a listener whose only filter is tcp_proxy to a cluster at
// 127.0.0.1:<port>.
const tcpProxyYAML = `
static_resources:
  listeners:
  - name: tcp
    stat_prefix: tp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: front
          cluster: echo
          idle_timeout: 30s
          max_connect_attempts: 2
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`

// TestTCPProxyEcho: 1 MiB of random bytes through a tcp_proxy listener and
// back, the client's half-close reaching the upstream and the upstream's
// coming back, with the tcp.*, cluster.* and listener.* stats.
func TestTCPProxyEcho(t *testing.T) {
	h := startHop(t, tcpProxyYAML, startTCPEcho(t))
	c, err := net.DialTimeout("tcp", h.addr("tcp"), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // ends only when the echo server's FIN comes back
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}
	c.Close()
	h.waitStat("listener.tp.downstream_cx_active", 0)
	h.waitStat("listener.tp.downstream_cx_destroy", 1)
	for name, want := range map[string]int64{
		"listener.tp.downstream_cx_total":         1,
		"tcp.front.downstream_cx_total":           1,
		"tcp.front.downstream_cx_rx_bytes_total":  1 << 20,
		"tcp.front.downstream_cx_tx_bytes_total":  1 << 20,
		"tcp.front.downstream_cx_no_route":        0,
		"tcp.front.idle_timeout":                  0,
		"tcp.front.upstream_flush_total":          0,
		"cluster.echo.upstream_cx_total":          1,
		"cluster.echo.upstream_cx_active":         0,
		"cluster.echo.upstream_cx_rx_bytes_total": 1 << 20,
	} {
		if got := h.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
