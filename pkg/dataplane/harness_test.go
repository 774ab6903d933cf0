package dataplane_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/pkg/admin"
	"github.com/hopproxy/hop/pkg/dataplane"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/bootstrap"
)

const defaultTestTimeout = 10 * time.Second

// hop is an in-process hop running one bootstrap.
type hop struct {
	t     *testing.T
	dp    *dataplane.DataPlane
	st    *stats.Store
	admin http.Handler
}

// startHop loads yaml through the real bootstrap loader (from a file, as
// `hop -c` does) and starts the data plane. %s placeholders in yaml are
// filled from args first.
func startHop(t *testing.T, yaml string, args ...any) *hop {
	t.Helper()
	if len(args) > 0 {
		yaml = fmt.Sprintf(yaml, args...)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := bootstrap.Load(bootstrap.Options{Path: path})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	st := stats.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	dp := dataplane.New(log, st, dataplane.DefaultDrainTime)
	bundle := snapshot.Bundle{Version: "static", Listeners: b.GetStaticResources().GetListeners(), Clusters: b.GetStaticResources().GetClusters()}
	if err := dp.Apply(bundle); err != nil {
		t.Fatalf("apply: %v", err)
	}
	h := &hop{t: t, dp: dp, st: st}
	h.admin = admin.New(admin.Options{
		Stats:     st,
		Listeners: dp.ListenerStatus,
		Clusters:  dp.ClusterStatus,
		Ready:     func() bool { return true },
	}).Handler()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		dp.Shutdown(ctx)
	})
	return h
}

// addr returns the bound address of the named listener.
func (h *hop) addr(name string) string {
	h.t.Helper()
	a := h.dp.ListenerAddr(name)
	if a == nil {
		h.t.Fatalf("no listener %q", name)
	}
	return a.String()
}

// stat reads one stat through the admin /stats endpoint, as a user would.
func (h *hop) stat(name string) int64 {
	h.t.Helper()
	req, _ := http.NewRequest("GET", "/stats?filter=^"+strings.ReplaceAll(name, ".", `\.`)+"$", nil)
	rec := &recorder{header: http.Header{}}
	h.admin.ServeHTTP(rec, req)
	for _, line := range strings.Split(rec.body.String(), "\n") {
		if n, v, ok := strings.Cut(line, ": "); ok && n == name {
			var x int64
			fmt.Sscan(v, &x)
			return x
		}
	}
	h.t.Fatalf("stat %s not found in /stats output:\n%s", name, rec.body.String())
	return 0
}

// waitStat waits until stat name has value want.
func (h *hop) waitStat(name string, want int64) {
	h.t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		got := h.stat(name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("stat %s = %d, want %d", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorder struct {
	header http.Header
	body   strings.Builder
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }

// rawConn is a raw TCP client for tests that care about exact bytes.
type rawConn struct {
	t *testing.T
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.Conn, s); err != nil {
		c.t.Fatal(err)
	}
}

// readResponse reads one HTTP response head (and body for non-101).
func (c *rawConn) readResponse(method string) *http.Response {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	return res
}

func (c *rawConn) readN(n int) string {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

// expectEOF asserts the peer closed the connection (after any bytes).
func (c *rawConn) expectEOF() {
	c.t.Helper()
	rest, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		c.t.Fatalf("waiting for close: %v (read %q)", err, rest)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset by peer") || strings.Contains(err.Error(), "broken pipe"))
}

// rawUpstream is a one-connection-at-a-time raw TCP upstream that hands
// each accepted connection to the test.
type rawUpstream struct {
	ln    net.Listener
	conns chan net.Conn
}

func startRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, conns: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(u.conns)
				return
			}
			c.SetDeadline(time.Now().Add(defaultTestTimeout))
			u.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range u.conns {
			c.Close()
		}
	})
	return u
}

func (u *rawUpstream) port() int { return u.ln.Addr().(*net.TCPAddr).Port }

func (u *rawUpstream) accept(t *testing.T) *rawConn {
	t.Helper()
	select {
	case c := <-u.conns:
		t.Cleanup(func() { c.Close() })
		return &rawConn{t: t, Conn: c, br: bufio.NewReader(c)}
	case <-time.After(defaultTestTimeout):
		t.Fatal("upstream: no connection")
		return nil
	}
}

// readRequest reads one request head on the upstream side.
func (c *rawConn) readRequest() *http.Request {
	c.t.Helper()
	r, err := http.ReadRequest(c.br)
	if err != nil {
		c.t.Fatalf("upstream read request: %v", err)
	}
	return r
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
