package dataplane_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"strconv"
	"strings"
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

// TestTCPProxyMaxConnectionDuration: max_downstream_connection_duration
// closes a connection that is still busy once it has lasted that long
// (plus its jitter, when set), spliced to the echo or still waiting for its
// tunnel's answer, counting tcp.<prefix>.max_downstream_connection_duration
// (not idle_timeout). backoff_options is accepted alongside.
func TestTCPProxyMaxConnectionDuration(t *testing.T) {
	const limit = 300 * time.Millisecond
	silent := startRawUpstream(t) // accepts the tunnel's CONNECT, never answers
	yaml := strings.Replace(tcpProxyYAML, "max_connect_attempts: 2", `max_connect_attempts: 2
          max_downstream_connection_duration: 0.3s
          max_downstream_connection_duration_jitter_percentage: {value: 50}
          backoff_options: {base_interval: 0.01s, max_interval: 0.05s}`, 1)
	yaml = strings.Replace(yaml, "  clusters:", `  - name: tunnel
    address: {socket_address: {address: 127.0.0.1, port_value: `+strconv.Itoa(freePort(t))+`}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tun
          cluster: silent
          max_downstream_connection_duration: 0.3s
          tunneling_config: {hostname: "silent.test:443"}
  clusters:
  - name: silent
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: silent
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: `+strconv.Itoa(silent.port())+`}}}}]}]`, 1)
	h := startHop(t, yaml, startTCPEcho(t))

	// Spliced: the client keeps the echo busy until hop cuts it.
	start := time.Now()
	c, err := net.DialTimeout("tcp", h.addr("tcp"), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	buf := make([]byte, 5)
	var rerr error
	for i := 0; rerr == nil && i < 1000; i++ {
		if _, rerr = c.Write([]byte("ping\n")); rerr == nil {
			_, rerr = io.ReadFull(c, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rerr == nil {
		t.Fatal("the connection still echoes after 10 s")
	}
	if d := time.Since(start); d < limit {
		t.Errorf("closed after %v, before the %v limit", d, limit)
	}
	h.waitStat("tcp.front.max_downstream_connection_duration", 1)

	// Connecting: the tunnel's CONNECT is never answered.
	start = time.Now()
	tc, err := net.DialTimeout("tcp", h.addr("tunnel"), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(defaultTestTimeout))
	up := silent.accept(t)
	up.readRequest()
	if _, err := tc.Read(buf); err == nil {
		t.Fatal("read data from a tunnel that was never established")
	}
	if d := time.Since(start); d < limit {
		t.Errorf("tunnel closed after %v, before the %v limit", d, limit)
	}
	up.expectEOF()
	h.waitStat("tcp.tun.max_downstream_connection_duration", 1)
	for _, name := range []string{"tcp.front.idle_timeout", "tcp.tun.idle_timeout"} {
		if n := h.stat(name); n != 0 {
			t.Errorf("%s = %d, want 0", name, n)
		}
	}
}
