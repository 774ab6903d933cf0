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

// bootstrapTemplate is a standard Envoy v3 bootstrap: HTTP listeners that
// allow WebSocket upgrades, each routing everything to one STATIC cluster,
// plus the admin listener whose /ready the bench polls. A listener with
// AcceptH2 also takes HTTP/2 (codec AUTO) with extended CONNECT; a cluster
// with H2 speaks HTTP/2 to its endpoint (explicit_http_config) and carries
// WebSockets there as extended CONNECT streams (RFC 8441). Each listener's
// stat_prefix is its name.
var bootstrapTemplate = template.Must(template.New("bootstrap").Parse(`admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} }
static_resources:
  listeners:
{{- range .Listeners}}
  - name: {{.Name}}
    address:
      socket_address: { address: 127.0.0.1, port_value: {{.Port}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {{.Name}}
{{- if .AcceptH2}}
          codec_type: AUTO
          http2_protocol_options: { allow_connect: true }
{{- end}}
          upgrade_configs:
          - upgrade_type: websocket
          route_config:
            name: {{.Name}}
            virtual_hosts:
            - name: {{.Cluster}}
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: {{.Cluster}} }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{{- end}}
  clusters:
{{- range .Clusters}}
  - name: {{.Name}}
    type: STATIC
{{- if .H2}}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: { allow_connect: true }
{{- end}}
    load_assignment:
      cluster_name: {{.Name}}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: {{.Host}}, port_value: {{.Port}} }
{{- end}}
`))

// bootstrapParams fills bootstrapTemplate.
type bootstrapParams struct {
	AdminPort int
	Listeners []listenerParams
	Clusters  []clusterParams
}

// listenerParams is one HTTP listener on 127.0.0.1.
type listenerParams struct {
	Name     string // also the stat_prefix and the route table's name
	Port     int
	Cluster  string // where every request goes
	AcceptH2 bool   // codec AUTO with http2_protocol_options {allow_connect: true}
}

// clusterParams is one STATIC cluster with a single endpoint.
type clusterParams struct {
	Name string
	Host string
	Port int
	H2   bool // HTTP/2 upstream (allow_connect) instead of HTTP/1.1
}

// executeBootstrap renders p.
func executeBootstrap(p bootstrapParams) ([]byte, error) {
	var b strings.Builder
	if err := bootstrapTemplate.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("bench: bootstrap: %w", err)
	}
	return []byte(b.String()), nil
}

// splitHostPort splits "host:port" with a numeric port.
func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("bench: address: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", 0, fmt.Errorf("bench: port of %q: %w", addr, err)
	}
	return host, port, nil
}

// renderBootstrap returns the single-hop bootstrap: listener "bench" on
// listenPort, routed to cluster "echo" at upstream ("127.0.0.1:port").
func renderBootstrap(adminPort, listenPort int, upstream string) ([]byte, error) {
	host, port, err := splitHostPort(upstream)
	if err != nil {
		return nil, err
	}
	return executeBootstrap(bootstrapParams{
		AdminPort: adminPort,
		Listeners: []listenerParams{{Name: "bench", Port: listenPort, Cluster: "echo"}},
		Clusters:  []clusterParams{{Name: "echo", Host: host, Port: port}},
	})
}

// hopProcess is a running hop started by launchHop. Its fields are set
// before launchHop returns; waitErr is written once, before exited is closed.
type hopProcess struct {
	name        string // "hop", "sidecar", "front": who this is in logs and errors
	cmd         *exec.Cmd
	dir         string   // temporary directory holding the bootstrap
	ListenAddrs []string // the listeners, host:port, in the order render got their ports
	ListenAddr  string   // ListenAddrs[0]
	AdminAddr   string
	out         *tailBuffer // the end of hop's stdout and stderr
	exited      chan struct{}
	waitErr     error
}

const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 3 * time.Second
)

// hopSpec says how to start one hop process.
type hopSpec struct {
	name      string // "hop" for the single hop; otherwise its role
	baseID    int    // --base-id; distinct per process, as Envoy wants for processes on one host
	listeners int    // loopback ports to reserve for render, at least 1
	// render returns the bootstrap for the reserved ports.
	render func(adminPort int, listenPorts []int) ([]byte, error)
}

// startHop starts the single hop of the "hop" cases: the bootstrap of
// renderBootstrap in front of upstream, with --base-id 1.
func startHop(ctx context.Context, bin, upstream string, verbose io.Writer, log *slog.Logger) (*hopProcess, error) {
	return launchHop(ctx, bin, hopSpec{
		name: "hop", baseID: 1, listeners: 1,
		render: func(admin int, listen []int) ([]byte, error) { return renderBootstrap(admin, listen[0], upstream) },
	}, verbose, log)
}

// launchHop writes the bootstrap of spec, runs `bin -c <file> --base-id N`,
// and waits (at most readyTimeout) for admin /ready to answer 200. hop's
// output goes to a tail buffer, and also to verbose when not nil. On error
// nothing is left running.
func launchHop(ctx context.Context, bin string, spec hopSpec, verbose io.Writer, log *slog.Logger) (_ *hopProcess, err error) {
	if spec.listeners < 1 {
		return nil, fmt.Errorf("bench: %s needs at least one listener", spec.name)
	}
	ports, err := freePorts(1 + spec.listeners)
	if err != nil {
		return nil, err
	}
	yaml, err := spec.render(ports[0], ports[1:])
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hop-bench-"+spec.name+"-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %w", err)
	}

	h := &hopProcess{
		name:      spec.name,
		dir:       dir,
		AdminAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		out:       &tailBuffer{max: 16 << 10},
		exited:    make(chan struct{}),
	}
	for _, p := range ports[1:] {
		h.ListenAddrs = append(h.ListenAddrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	h.ListenAddr = h.ListenAddrs[0]
	var out io.Writer = h.out
	if verbose != nil {
		out = io.MultiWriter(h.out, verbose)
	}
	h.cmd = exec.Command(bin, "-c", path, "--base-id", strconv.Itoa(spec.baseID))
	h.cmd.Stdout = out
	h.cmd.Stderr = out
	h.cmd.WaitDelay = time.Second // do not hang on pipes a grandchild holds
	// If the bench dies without cleaning up, the kernel kills hop too.
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start %s: %w", h.label(), err)
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
	log.Info("started "+h.label(), "pid", h.cmd.Process.Pid, "bootstrap", path, "listeners", h.ListenAddrs, "admin", h.AdminAddr)

	if err := h.waitReady(ctx); err != nil {
		return nil, h.explain(err)
	}
	return h, nil
}

// label is "hop" for the single hop and "hop <role>" for the others.
func (h *hopProcess) label() string {
	if h.name == "hop" {
		return "hop"
	}
	return "hop " + h.name
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
			return fmt.Errorf("bench: %s exited before it was ready", h.label())
		case <-ctx.Done():
			return fmt.Errorf("bench: %s not ready after %v: GET %s: %w", h.label(), readyTimeout, url, lastErr)
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
	return fmt.Errorf("%w\n%s %s; its last output:\n%s", err, h.label(), status, tail)
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
