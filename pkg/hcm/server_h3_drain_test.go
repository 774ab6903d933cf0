package hcm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/stats"
)

// waitConnClosed waits for a client connection to end with an
// application CONNECTION_CLOSE and returns its code. byServer: the server
// sent it (else quic-go's client may close on a GOAWAY itself).
func waitConnClosed(t *testing.T, ctx context.Context, c *quic.Conn, byServer bool) quic.ApplicationErrorCode {
	t.Helper()
	select {
	case <-c.Context().Done():
	case <-ctx.Done():
		t.Fatal("the connection was not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(c.Context()); !errors.As(err, &ae) || byServer && !ae.Remote {
		t.Fatalf("connection ended with %v, want a CONNECTION_CLOSE (by the server: %v)", err, byServer)
	}
	return ae.ErrorCode
}

// TestH3Shutdown: Shutdown sends GOAWAY, lets a request in flight finish,
// closes each connection (H3_NO_ERROR) once nothing runs on it, even when
// the client does not close it on the GOAWAY, and returns without waiting
// for its context to end.
func TestH3Shutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	f := newH3Fixture(t, "", func(s *filter.Stream) {
		if s.Req.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(s.W, "done")
	})
	ctx := testCtx(t)
	f.get(t, ctx, "/warm")
	conn := <-f.conns
	idle := f.dialRaw(t, ctx)
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url("/slow"), nil)
		resp, err := f.client.RoundTrip(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- f.srv.Shutdown(ctx) }()
	for !f.srv.draining.Load() {
		runtime.Gosched()
	}
	close(release)
	if r := <-res; r.err != nil || r.body != "done" {
		t.Fatalf("request in flight: %q, %v", r.body, r.err)
	}
	if code := waitConnClosed(t, ctx, conn, false); code != h3NoError {
		t.Errorf("closed with %#x, want H3_NO_ERROR", code)
	}
	if code := waitConnClosed(t, ctx, idle, true); code != h3NoError {
		t.Errorf("idle connection closed with %#x, want H3_NO_ERROR", code)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Shutdown did not return once the connection was closed")
	}
}

// TestH3ShutdownDeadline: what is still running when Shutdown's context
// ends is closed, and the handler's request context ends.
func TestH3ShutdownDeadline(t *testing.T) {
	entered := make(chan struct{}, 1)
	handlerErr := make(chan error, 1)
	f := newH3Fixture(t, "", func(s *filter.Stream) {
		entered <- struct{}{}
		<-s.Req.Context().Done()
		handlerErr <- s.Req.Context().Err()
	})
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url("/hang"), nil)
		resp, err := f.client.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		res <- err
	}()
	<-entered
	conn := <-f.conns
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want the deadline", err)
	}
	if err := <-handlerErr; err == nil {
		t.Error("the handler's context did not end")
	}
	if err := <-res; err == nil {
		t.Error("the request succeeded")
	}
	if code := waitConnClosed(t, ctx, conn, true); code != h3NoError {
		t.Errorf("closed with %#x, want H3_NO_ERROR", code)
	}
}

// TestH3ServeAfterClose: a connection handed over after Close is closed at
// once and accounted.
func TestH3ServeAfterClose(t *testing.T) {
	f := newH3Fixture(t, "", func(s *filter.Stream) {})
	f.srv.Close()
	ctx := testCtx(t)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url("/"), nil)
	if resp, err := f.client.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("served after Close")
	}
	// The client may give up before the accept loop has taken the
	// connection (and counted it in f.closed): wait for the server's count
	// first, so that Wait cannot run alongside that Add.
	for deadline := time.Now().Add(5 * time.Second); f.stat(t, "http.h3.downstream_cx_destroy") < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	f.closed.Wait()
	if a, d := f.stat(t, "http.h3.downstream_cx_active"), f.stat(t, "http.h3.downstream_cx_destroy"); a != 0 || d < 1 {
		t.Errorf("cx_active %d, cx_destroy %d", a, d)
	}
}

// TestCompileH3Options: http3_protocol_options fields hop cannot honour
// are refused by name.
func TestCompileH3Options(t *testing.T) {
	for _, tc := range []struct{ yaml, wantErr string }{
		{"http3_protocol_options: {allow_extended_connect: true, quic_protocol_options: {max_concurrent_streams: 5}}", ""},
		{"http3_protocol_options: {disable_qpack: true}", "http3_protocol_options.disable_qpack: unsupported field"},
		{"http3_protocol_options: {allow_metadata: true}", "http3_protocol_options.allow_metadata: unsupported field"},
		{"http3_protocol_options: {disallow_obs_text: false}", "http3_protocol_options.disallow_obs_text: unsupported field"},
	} {
		j, err := yaml.YAMLToJSON([]byte(h3HCM + tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		var p hcmv3.HttpConnectionManager
		if err := protojson.Unmarshal(j, &p); err != nil {
			t.Fatal(err)
		}
		reg := filter.NewRegistry()
		reg.Register(h3Terminal{})
		_, err = Compile(&p, reg, stats.New(), nil)
		if got := fmt.Sprint(err); (tc.wantErr == "") != (err == nil) || tc.wantErr != "" && !strings.Contains(got, tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.wantErr)
		}
	}
}
