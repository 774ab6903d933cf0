//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// bootstrapTemplate is a standard Envoy v3 bootstrap: one HTTP listener that
// allows WebSocket upgrades and routes everything to the STATIC cluster
// "echo", plus the admin listener whose /ready the bench polls.
var bootstrapTemplate = template.Must(template.New("bootstrap").Parse(`admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} }
static_resources:
  listeners:
  - name: bench
    address:
      socket_address: { address: 127.0.0.1, port_value: {{.ListenPort}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            name: bench
            virtual_hosts:
            - name: echo
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: echo }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: {{.UpstreamHost}}, port_value: {{.UpstreamPort}} }
`))

// bootstrapParams fills bootstrapTemplate.
type bootstrapParams struct {
	AdminPort, ListenPort int
	UpstreamHost          string
	UpstreamPort          int
}

// renderBootstrap returns the bootstrap YAML for the given ports and the
// echo upstream at upstream ("127.0.0.1:port").
func renderBootstrap(adminPort, listenPort int, upstream string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, fmt.Errorf("bench: upstream address: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("bench: upstream port: %w", err)
	}
	var b strings.Builder
	if err := bootstrapTemplate.Execute(&b, bootstrapParams{
		AdminPort: adminPort, ListenPort: listenPort, UpstreamHost: host, UpstreamPort: port,
	}); err != nil {
		return nil, fmt.Errorf("bench: bootstrap: %w", err)
	}
	return []byte(b.String()), nil
}

// hopProcess is a running hop started by startHop. Its fields are set before
// startHop returns; waitErr is written once, before exited is closed.
type hopProcess struct {
	cmd        *exec.Cmd
	dir        string // temporary directory holding the bootstrap
	ListenAddr string // the bench listener, host:port
	AdminAddr  string
	out        *tailBuffer // the end of hop's stdout and stderr
	exited     chan struct{}
	waitErr    error
}

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 3 * time.Second
)

// startHop writes a bootstrap that fronts upstream, runs `bin -c <file>
// --base-id 1`, and waits (at most readyTimeout) for admin /ready to answer
// 200. hop's output goes to a tail buffer, and also to verbose when not nil.
// On error nothing is left running.
func startHop(ctx context.Context, bin, upstream string, verbose io.Writer, log *slog.Logger) (_ *hopProcess, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	yaml, err := renderBootstrap(ports[0], ports[1], upstream)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hop-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %w", err)
	}

	h := &hopProcess{
		dir:        dir,
		AdminAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		ListenAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		out:        &tailBuffer{max: 16 << 10},
		exited:     make(chan struct{}),
	}
	var out io.Writer = h.out
	if verbose != nil {
		out = io.MultiWriter(h.out, verbose)
	}
	h.cmd = exec.Command(bin, "-c", path, "--base-id", "1")
	h.cmd.Stdout = out
	h.cmd.Stderr = out
	h.cmd.WaitDelay = time.Second // do not hang on pipes a grandchild holds
	// If the bench dies without cleaning up, the kernel kills hop too.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start hop: %w", err)
	}
	go func() {
		h.waitErr = h.cmd.Wait()
		close(h.exited)
	}()
	defer func() {
		if err != nil {
			h.Stop()
		}
	}()
	log.Info("started hop", "pid", h.cmd.Process.Pid, "bootstrap", path, "listener", h.ListenAddr, "admin", h.AdminAddr)

	if err := h.waitReady(ctx); err != nil {
		return nil, h.explain(err)
	}
	return h, nil
}

// Pid is hop's process id.
func (h *hopProcess) Pid() int { return h.cmd.Process.Pid }

// waitReady polls admin /ready until it answers 200, hop exits, ctx ends, or
// readyTimeout passes.
func (h *hopProcess) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true} // Proxy nil: never an environment proxy
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Second}
	url := "http://" + h.AdminAddr + "/ready"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastErr := errors.New("no answer yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if resp, err := client.Do(req); err != nil {
			lastErr = err
		} else {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			lastErr = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-h.exited:
			return errors.New("bench: hop exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("bench: hop not ready after %v: GET %s: %w", readyTimeout, url, lastErr)
		case <-tick.C:
		}
	}
}

// explain adds hop's exit status (when it has exited) and the end of its
// output to err, which is usually the symptom of hop having failed.
func (h *hopProcess) explain(err error) error {
	status := "still running"
	select {
	case <-h.exited:
		status = fmt.Sprintf("exited: %v", h.waitErr)
	default:
	}
	tail := strings.TrimSpace(h.out.String())
	if tail == "" {
		tail = "(no output)"
	}
	return fmt.Errorf("%w\nhop %s; its last output:\n%s", err, status, tail)
}

// Stop sends SIGTERM, waits up to stopTimeout, then kills hop, and removes
// the bootstrap. It is safe to call more than once.
func (h *hopProcess) Stop() {
	defer os.RemoveAll(h.dir)
	select {
	case <-h.exited:
		return
	default:
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-h.exited:
		return
	case <-timer.C:
	}
	h.cmd.Process.Kill()
	<-h.exited // Kill cannot be ignored; Wait returns within WaitDelay after.
}

// freePorts reserves n distinct loopback ports by listening on port 0, then
// releases them for hop to bind. Another process could take one in between;
// on loopback that is rare, and hop would fail loudly.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailBuffer keeps the last max bytes written to it. Safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
