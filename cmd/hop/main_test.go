package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hopproxy/hop/hack/echo/echoserver"
)

const defaultTestTimeout = 10 * time.Second

// sharedConfig returns the path of one of Envoy's example configs in
// ../shared/envoy-configs (beside the repository, as in CI), or skips.
func sharedConfig(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", "envoy-configs", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not present (shared/ is not beside the repository)", p)
	}
	return p
}

func TestValidateEnvoyWebSocketExamples(t *testing.T) {
	for _, name := range []string{"examples/websocket_envoy-ws.yaml", "examples/websocket_envoy-ws-route.yaml"} {
		t.Run(filepath.Base(name), func(t *testing.T) {
			path := sharedConfig(t, name)
			var out, errb bytes.Buffer
			if code := run([]string{"--mode", "validate", "-c", path}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if want := fmt.Sprintf("configuration '%s' OK\n", path); out.String() != want {
				t.Errorf("stdout = %q, want %q", out.String(), want)
			}
		})
	}
}

func TestValidateFailsWithFieldPath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`
static_resources:
  clusters:
  - name: c
    conect_timeout: 1s
`), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"--mode", "validate", "-c", bad}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "static_resources.clusters[0].conect_timeout") {
		t.Errorf("error does not name the field path: %q", errb.String())
	}
	dup := filepath.Join(dir, "dup.yaml")
	os.WriteFile(dup, []byte(`
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: websocket}]
          route_config: {name: r}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`), 0o600)
	errb.Reset()
	if code := run([]string{"--mode", "validate", "-c", dup}, &out, &errb); code != 1 {
		t.Fatalf("duplicate upgrade types: exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "multiple upgrade configs with the same name: 'websocket'") {
		t.Errorf("error = %q", errb.String())
	}
}

func TestFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "hop version ") {
		t.Errorf("--version: %d %q", code, out.String())
	}
	if code := run([]string{"--mode", "bogus", "-c", "x"}, &out, &errb); code != 1 {
		t.Errorf("bad mode exit %d", code)
	}
	if code := run([]string{"-c", "/nonexistent.yaml"}, &out, &errb); code != 1 {
		t.Errorf("missing file exit %d", code)
	}
	if code := run([]string{"-l", "loud", "-c", "x"}, &out, &errb); code != 1 {
		t.Errorf("bad log level exit %d", code)
	}
}

// freePort returns a loopback TCP port that is free now, for a listener
// the test names in a config before hop binds it. It is drawn below the
// kernel's ephemeral range (32768 and up on Linux): a port the kernel hands
// out could be taken, before hop binds it, as the local port of some
// parallel test's outgoing connection ("address already in use").
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 10000 + rand.IntN(22000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free loopback port below 32000")
	return 0
}

// TestServeEnvoyWebSocketExamples runs Envoy's own WebSocket examples with
// their upstream pointed at a local echo server and the listener moved to
// loopback, the admin interface added with --config-yaml (merged as Envoy
// merges), and talks to them with a real WebSocket client.
func TestServeEnvoyWebSocketExamples(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wsPath    string
		plainPath string
		plainBody string
	}{
		{"examples/websocket_envoy-ws.yaml", "/", "", ""},
		{"examples/websocket_envoy-ws-route.yaml", "/ws", "/", "NotWebSocket\n"},
	} {
		t.Run(filepath.Base(tc.name), func(t *testing.T) {
			src, err := os.ReadFile(sharedConfig(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			echo := &http.Server{Handler: echoserver.New()}
			go echo.Serve(ln)
			defer echo.Close()

			listenPort, adminPort := freePort(t), freePort(t)
			cfg := string(src)
			cfg = strings.ReplaceAll(cfg, "address: 0.0.0.0", "address: 127.0.0.1")
			cfg = strings.ReplaceAll(cfg, "port_value: 10000", fmt.Sprintf("port_value: %d", listenPort))
			cfg = strings.ReplaceAll(cfg, "address: service-ws", "address: 127.0.0.1")
			cfg = strings.ReplaceAll(cfg, "port_value: 80", fmt.Sprintf("port_value: %d", ln.Addr().(*net.TCPAddr).Port))
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			os.WriteFile(path, []byte(cfg), 0o600)

			var out, errb syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- run([]string{"-c", path, "--base-id", "1", "-l", "warning", "--drain-time-s", "1",
					"--config-yaml", fmt.Sprintf("admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}", adminPort)}, &out, &errb)
			}()
			adminURL := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
			waitReady(t, adminURL, done, &errb)

			ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d%s", listenPort, tc.wsPath), nil)
			if err != nil {
				t.Fatalf("websocket dial: %v", err)
			}
			for i := 0; i < 100; i++ {
				msg := fmt.Sprintf("hello %d", i)
				ws.WriteMessage(websocket.TextMessage, []byte(msg))
				_, got, err := ws.ReadMessage()
				if err != nil || string(got) != msg {
					t.Fatalf("echo %d: %q %v", i, got, err)
				}
			}
			stats := httpGet(t, adminURL+"/stats?filter=downstream_cx_upgrades")
			if !strings.Contains(stats, "http.ingress_ws_to_ws.downstream_cx_upgrades_active: 1") {
				t.Errorf("stats while open:\n%s", stats)
			}
			ws.Close()
			if tc.plainPath != "" {
				if got := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d%s", listenPort, tc.plainPath)); got != tc.plainBody {
					t.Errorf("plain GET %s = %q", tc.plainPath, got)
				}
			}
			res, err := http.Post(adminURL+"/quitquitquit", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			select {
			case code := <-done:
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errb.String())
				}
			case <-time.After(defaultTestTimeout):
				t.Fatal("hop did not exit after /quitquitquit")
			}
		})
	}
}

func waitReady(t *testing.T, adminURL string, done chan int, errb *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("hop exited %d: %s", code, errb.String())
		default:
		}
		if res, err := http.Get(adminURL + "/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("hop not ready")
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}
