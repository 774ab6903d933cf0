package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tunnel pairs: one hop wraps raw TCP (or HTTP) into an HTTP tunnel, a
// second hop unwraps it, and bytes sent into the first arrive intact at the
// second's upstream and come back. Both hops run in this process through
// run(), from configuration files as `hop -c` reads them: hop's own pair
// configurations in testdata/issue5, and Envoy's example configurations
// (../shared/envoy-configs) when they are beside the repository.

// tcpEcho is a TCP echo server on loopback that counts its connections.
// A client's FIN is echoed as a FIN once everything before it is sent back.
type tcpEcho struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startTCPEchoServer(t *testing.T) *tcpEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &tcpEcho{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * defaultTestTimeout))
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); e.wg.Wait() })
	return e
}

func (e *tcpEcho) port() int { return e.ln.Addr().(*net.TCPAddr).Port }

// runningHop is one in-process `hop -c` run.
type runningHop struct {
	admin string
	done  chan int
	errb  *syncBuffer
}

// startHopFile writes cfg and runs hop on it until the test ends.
func startHopFile(t *testing.T, name, cfg string, adminPort int) *runningHop {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &runningHop{admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), done: make(chan int, 1), errb: &syncBuffer{}}
	var out syncBuffer
	go func() {
		// The admin address is set here too: some of Envoy's examples
		// have no admin section.
		h.done <- run([]string{"-c", path, "--base-id", "1", "-l", "warning", "--drain-time-s", "1",
			"--config-yaml", fmt.Sprintf("admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}", adminPort)}, &out, h.errb)
	}()
	waitReady(t, h.admin, h.done, h.errb)
	t.Cleanup(func() {
		res, err := http.Post(h.admin+"/quitquitquit", "", nil)
		if err == nil {
			res.Body.Close()
		}
		select {
		case code := <-h.done:
			if code != 0 {
				t.Errorf("%s: exit %d: %s", name, code, h.errb.String())
			}
		case <-time.After(defaultTestTimeout):
			t.Errorf("%s: hop did not exit after /quitquitquit", name)
		}
	})
	return h
}

// stat reads one counter or gauge from the admin /stats text.
func (h *runningHop) stat(t *testing.T, name string) int64 {
	t.Helper()
	body := httpGet(t, h.admin+"/stats?filter=^"+strings.ReplaceAll(name, ".", `\.`)+"$")
	for _, line := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && k == name {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("stat %s not in:\n%s", name, body)
	return 0
}

// rewritePorts replaces "port_value: N" and "127.0.0.1:N" for each N in m,
// and points www.google.com at loopback.
func rewritePorts(cfg string, m map[int]int) string {
	for from, to := range m {
		cfg = strings.ReplaceAll(cfg, fmt.Sprintf("port_value: %d", from), fmt.Sprintf("port_value: %d", to))
		cfg = strings.ReplaceAll(cfg, fmt.Sprintf("127.0.0.1:%d", from), fmt.Sprintf("127.0.0.1:%d", to))
	}
	return strings.ReplaceAll(cfg, "address: www.google.com", "address: 127.0.0.1")
}

// echoThrough sends size random bytes into addr, half-closes, and checks
// that the same bytes come back followed by EOF.
func echoThrough(t *testing.T, addr string, size int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * defaultTestTimeout))
	want := make([]byte, size)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read through %s: %v (after %d bytes)", addr, err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("write through %s: %v", addr, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("through %s: got %d bytes back, want the %d sent", addr, len(got), size)
	}
}

// echoConcurrently runs n echoThrough at once.
func echoConcurrently(t *testing.T, addr string, n, size int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			echoThrough(t, addr, size)
		}()
	}
	wg.Wait()
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "issue5", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pairPorts reserves the ports a pair uses: the configs' fixed ports
// (base+0 … base+4 for listeners and backends, base+10 … base+12 for the
// admin listeners) mapped to free ones; the backends are echo servers.
func pairPorts(t *testing.T, base int, echoes ...*tcpEcho) map[int]int {
	t.Helper()
	m := map[int]int{}
	for _, off := range []int{0, 1, 2, 10, 11, 12} {
		m[base+off] = freePort(t)
	}
	for i, e := range echoes {
		m[base+3+i] = e.port()
	}
	return m
}

func TestTunnelPairs(t *testing.T) {
	const mib = 1 << 20
	t.Run("h1-connect", func(t *testing.T) {
		backend, byTarget := startTCPEchoServer(t), startTCPEchoServer(t)
		m := pairPorts(t, 20000, backend, byTarget)
		out := startHopFile(t, "out.yaml", rewritePorts(readTestdata(t, "h1-connect-out.yaml"), m), m[20011])
		startHopFile(t, "in.yaml", rewritePorts(readTestdata(t, "h1-connect-in.yaml"), m), m[20010])
		echoThrough(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), mib)
		echoConcurrently(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), 10, 64<<10)
		if n := backend.accepted.Load(); n != 11 {
			t.Errorf("backend accepted %d connections, want 11 (one per tunnel)", n)
		}
		// The second entry names its destination in the CONNECT target and
		// asks for the ORIGINAL_DST route.
		echoThrough(t, fmt.Sprintf("127.0.0.1:%d", m[20002]), mib)
		if n := byTarget.accepted.Load(); n != 1 {
			t.Errorf("CONNECT target accepted %d connections, want 1", n)
		}
		if n := out.stat(t, "http.connect_out.downstream_cx_upgrades_total"); n != 12 {
			t.Errorf("downstream_cx_upgrades_total = %d, want 12", n)
		}
	})
	t.Run("h2-connect", func(t *testing.T) {
		backend := startTCPEchoServer(t)
		m := pairPorts(t, 20000, backend)
		out := startHopFile(t, "out.yaml", rewritePorts(readTestdata(t, "h2-connect-out.yaml"), m), m[20011])
		in := startHopFile(t, "in.yaml", rewritePorts(readTestdata(t, "h2-connect-in.yaml"), m), m[20010])
		echoThrough(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), mib)
		echoConcurrently(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), 20, 64<<10)
		if n := out.stat(t, "http.connect_out.downstream_cx_http2_total"); n != 1 {
			t.Errorf("terminating hop saw %d HTTP/2 connections, want 1 (tunnels multiplexed)", n)
		}
		if n := in.stat(t, "tcp.tcp_in.downstream_cx_total"); n != 21 {
			t.Errorf("tcp.tcp_in.downstream_cx_total = %d, want 21", n)
		}
	})
	t.Run("h2-post", func(t *testing.T) {
		backend := startTCPEchoServer(t)
		m := pairPorts(t, 20000, backend)
		out := startHopFile(t, "out.yaml", rewritePorts(readTestdata(t, "h2-post-out.yaml"), m), m[20011])
		startHopFile(t, "in.yaml", rewritePorts(readTestdata(t, "h2-post-in.yaml"), m), m[20010])
		echoThrough(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), mib)
		echoConcurrently(t, fmt.Sprintf("127.0.0.1:%d", m[20000]), 10, 64<<10)
		if n := out.stat(t, "http.post_out.downstream_cx_http2_total"); n != 1 {
			t.Errorf("terminating hop saw %d HTTP/2 connections, want 1", n)
		}
	})
	t.Run("http-in-h2-connect", func(t *testing.T) {
		m := pairPorts(t, 20000)
		startHopFile(t, "out.yaml", rewritePorts(readTestdata(t, "http-in-h2-connect-out.yaml"), m), m[20011])
		startHopFile(t, "in.yaml", rewritePorts(readTestdata(t, "http-in-h2-connect-in.yaml"), m), m[20010])
		for i := 0; i < 3; i++ {
			if got := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/any/path", m[20000])); got != "answered inside the tunnel\n" {
				t.Fatalf("GET through the tunnel = %q", got)
			}
		}
	})
	t.Run("connect-proxy", func(t *testing.T) {
		backend := startTCPEchoServer(t)
		m := pairPorts(t, 20000, backend)
		// The terminating hop moves to :20002, behind the proxy on :20001.
		outCfg := strings.ReplaceAll(readTestdata(t, "h2-connect-out.yaml"), "port_value: 20001", fmt.Sprintf("port_value: %d", m[20002]))
		out := startHopFile(t, "out.yaml", rewritePorts(outCfg, m), m[20011])
		proxy := startHopFile(t, "proxy.yaml", rewritePorts(readTestdata(t, "connect-proxy.yaml"), m), m[20012])
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m[20001]), defaultTestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * defaultTestTimeout))
		fmt.Fprintf(c, "CONNECT backend.test:9 HTTP/1.1\r\nHost: backend.test:9\r\n\r\n")
		head := make([]byte, len("HTTP/1.1 200 OK\r\n"))
		if _, err := io.ReadFull(c, head); err != nil || string(head) != "HTTP/1.1 200 OK\r\n" {
			t.Fatalf("CONNECT through the proxy: %q %v", head, err)
		}
		// Skip the rest of the response head.
		var last [4]byte
		for string(last[:]) != "\r\n\r\n" {
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				t.Fatal(err)
			}
			copy(last[:], append(last[1:], b[0]))
		}
		payload := make([]byte, mib)
		rand.Read(payload)
		go func() { c.Write(payload); c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("through the proxy: %d bytes back (want %d), %v", len(got), len(payload), err)
		}
		if n := out.stat(t, "http.connect_out.downstream_cx_http2_total"); n != 1 {
			t.Errorf("the terminating hop saw %d HTTP/2 connections, want 1 (the proxy forwards over HTTP/2)", n)
		}
		if n := proxy.stat(t, "cluster.next_hop.upstream_cx_http2_total"); n != 1 {
			t.Errorf("cluster.next_hop.upstream_cx_http2_total = %d, want 1", n)
		}
	})
}

// tunnelExamplePairs are Envoy's example configurations that pair up: the
// first wraps TCP (or HTTP) entering :10000, the second unwraps on :10001
// towards www.google.com:443 (pointed at a local echo here).
var tunnelExamplePairs = []struct{ in, out string }{
	{"encapsulate_in_http1_connect.yaml", "terminate_http1_connect.yaml"},
	{"encapsulate_in_http2_connect.yaml", "terminate_http2_connect.yaml"},
	{"encapsulate_in_http2_post.yaml", "terminate_http2_post.yaml"},
	{"encapsulate_http_in_http2_connect.yaml", "terminate_http_in_http2_connect.yaml"},
}

func TestValidateEnvoyTunnelExamples(t *testing.T) {
	names := []string{"proxy_connect.yaml"}
	for _, p := range tunnelExamplePairs {
		names = append(names, p.in, p.out)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			path := sharedConfig(t, name)
			var out, errb bytes.Buffer
			if code := run([]string{"--mode", "validate", "-c", path}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
		})
	}
}

func TestServeEnvoyTunnelExamples(t *testing.T) {
	for _, p := range tunnelExamplePairs {
		t.Run(strings.TrimSuffix(p.in, ".yaml"), func(t *testing.T) {
			inSrc, err := os.ReadFile(sharedConfig(t, p.in))
			if err != nil {
				t.Fatal(err)
			}
			outSrc, err := os.ReadFile(sharedConfig(t, p.out))
			if err != nil {
				t.Fatal(err)
			}
			google, target := startTCPEchoServer(t), startTCPEchoServer(t)
			m := map[int]int{443: google.port(), 10003: target.port()}
			for _, port := range []int{10000, 10001, 10002, 9902, 9903} {
				m[port] = freePort(t)
			}
			startHopFile(t, "out.yaml", rewritePorts(string(outSrc), m), m[9902])
			startHopFile(t, "in.yaml", rewritePorts(string(inSrc), m), m[9903])
			entry := fmt.Sprintf("127.0.0.1:%d", m[10000])
			if strings.HasPrefix(p.in, "encapsulate_http_") {
				if got := httpGet(t, "http://"+entry+"/"); got != "Hello, world!\n" {
					t.Fatalf("GET through the tunnel = %q", got)
				}
				return
			}
			echoThrough(t, entry, 1<<20)
			if n := google.accepted.Load(); n != 1 {
				t.Errorf("the terminating side's upstream accepted %d connections, want 1", n)
			}
			if strings.Contains(p.in, "http1") {
				// listener_1 sends CONNECT 127.0.0.1:10003 with foo: bar,
				// which the terminating side routes to the target itself.
				echoThrough(t, fmt.Sprintf("127.0.0.1:%d", m[10002]), 1<<20)
				if n := target.accepted.Load(); n != 1 {
					t.Errorf("the CONNECT target accepted %d connections, want 1", n)
				}
			}
		})
	}
}
