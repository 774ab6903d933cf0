package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/internal/h2ctest"
	_ "github.com/hopproxy/hop/pkg/h2wire/xconnect" // x/net's server advertises extended CONNECT
)

// explicitH2 wraps o (nil: empty) as explicit HTTP/2 typed options.
func explicitH2(t *testing.T, o *corev3.Http2ProtocolOptions) map[string]*anypb.Any {
	t.Helper()
	if o == nil {
		o = &corev3.Http2ProtocolOptions{}
	}
	return httpOptions(t, &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: o},
		},
	}})
}

// protoHandler answers with the request's protocol.
var protoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, r.Proto)
})

func TestH2CRequestsShareOneConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	srv := h2ctest.Start(t, protoHandler)
	pb := staticCluster(t, "h2c", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	c := mustAdd(t, m, pb)

	if got := get(t, ctx, c); got != "HTTP/2.0" {
		t.Fatalf("upstream saw %q, want HTTP/2.0", got)
	}
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Errorf("RoundTrip: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	if n := srv.Accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}
	wantStats(t, st, "h2c", map[string]int64{
		"upstream_cx_total": 1, "upstream_cx_http2_total": 1, "upstream_cx_http1_total": 0,
		"upstream_cx_active": 1, "upstream_rq_total": 11, "upstream_rq_active": 0,
	})
	if tx := statValue(t, st, "cluster.h2c.upstream_cx_tx_bytes_total"); tx == 0 {
		t.Error("upstream_cx_tx_bytes_total = 0, want the HTTP/2 frames")
	}
	m.Close()
	waitStat(t, ctx, st, "cluster.h2c.upstream_cx_active", 0)
}

// echoHandler answers an extended CONNECT with 200 and echoes the stream
// until the client ends it.
var echoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect || r.Header.Get(":protocol") != "websocket" {
		http.Error(w, "want an extended CONNECT for websocket", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 1024)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
})

// extendedConnect builds an extended CONNECT whose body is the returned
// pipe writer's stream.
func extendedConnect(ctx context.Context) (*http.Request, *io.PipeWriter) {
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "http://x/chat", pr)
	req.Host = "backend.example"
	req.Header.Set(":protocol", "websocket")
	req.ContentLength = -1
	return req, pw
}

func TestExtendedConnectStreamsShareOneConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	srv := h2ctest.Start(t, echoHandler)
	pb := staticCluster(t, "xc", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, &corev3.Http2ProtocolOptions{AllowConnect: true})
	c := mustAdd(t, m, pb)

	const streams = 50
	resps := make([]*http.Response, streams)
	writers := make([]*io.PipeWriter, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, pw := extendedConnect(ctx)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Errorf("stream %d: RoundTrip: %v", i, err)
				pw.Close()
				return
			}
			resps[i], writers[i] = resp, pw
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	wantStats(t, st, "xc", map[string]int64{"upstream_rq_total": streams, "upstream_rq_active": streams})
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, pw := resps[i], writers[i]
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("stream %d: status %d", i, resp.StatusCode)
				pw.Close()
				return
			}
			msg := fmt.Sprintf("hello from stream %d", i)
			if _, err := io.WriteString(pw, msg); err != nil {
				t.Errorf("stream %d: write: %v", i, err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
				t.Errorf("stream %d: echo %q, %v; want %q", i, got, err, msg)
			}
			pw.Close() // END_STREAM: the server's handler returns and ends its side
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Errorf("stream %d: after END_STREAM read %q, %v; want a clean EOF", i, rest, err)
			}
		}()
	}
	wg.Wait()
	if n := srv.Accepted.Load(); n != 1 {
		t.Errorf("server accepted %d connections for %d streams, want 1", n, streams)
	}
	wantStats(t, st, "xc", map[string]int64{
		"upstream_cx_total": 1, "upstream_cx_http2_total": 1, "upstream_rq_total": streams, "upstream_rq_active": 0,
	})
}

func TestExtendedConnectCloseResetsStream(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	readErr := make(chan error, 1)
	srv := h2ctest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		_, err := io.Copy(io.Discard, r.Body)
		readErr <- err
	}))
	pb := staticCluster(t, "reset", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	c := mustAdd(t, m, pb)
	req, pw := extendedConnect(ctx)
	defer pw.Close()
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the server read a clean end of stream, want a reset")
		}
	case <-ctx.Done():
		t.Fatal("the server never saw the stream end")
	}
	wantStats(t, st, "reset", map[string]int64{"http2.tx_reset": 1, "http2.rx_reset": 0, "upstream_rq_active": 0})
}

func TestH2ResetBeforeHeaders(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	addr := frameServer(t, func(fr *http2.Framer, f http2.Frame) {
		if hf, ok := f.(*http2.HeadersFrame); ok {
			code := http2.ErrCodeInternal
			if hf.StreamID > 1 {
				code = http2.ErrCodeRefusedStream
			}
			fr.WriteRSTStream(hf.StreamID, code)
		}
	})
	pb := staticCluster(t, "rst", addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	c := mustAdd(t, m, pb)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	_, err := c.RoundTrip(req)
	var re *ResetError
	if !errors.As(err, &re) || re.ResetReason != ResetRemoteReset || re.StatusCode() != 503 {
		t.Fatalf("RoundTrip error = %v, want a remote reset (503)", err)
	}
	// REFUSED_STREAM means unprocessed: a bodiless request is sent again
	// (and refused again, up to the limit).
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	_, err = c.RoundTrip(req)
	if !errors.As(err, &re) || re.ResetReason != ResetRemoteRefusedStream {
		t.Fatalf("RoundTrip error = %v, want a refused stream reset", err)
	}
	wantStats(t, st, "rst", map[string]int64{
		"http2.rx_reset": 1 + maxH2Attempts, "upstream_rq_total": 2, "upstream_rq_active": 0, "upstream_cx_total": 1,
	})
}

// frameServer is an HTTP/2 server at the frame level: on each connection
// it reads the client preface, sends empty SETTINGS (so extended CONNECT
// is not enabled), acknowledges the client's SETTINGS and passes every
// other frame to onFrame. Connections close at the end of the test.
func frameServer(t *testing.T, onFrame func(fr *http2.Framer, f http2.Frame)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	serve := func(conn net.Conn) {
		defer conn.Close()
		br := bufio.NewReader(conn)
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(br, preface); err != nil {
			return
		}
		fr := http2.NewFramer(conn, br)
		if err := fr.WriteSettings(); err != nil {
			return
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok {
				if !sf.IsAck() {
					fr.WriteSettingsAck()
				}
				continue
			}
			if onFrame != nil {
				onFrame(fr, f)
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

func TestExtendedConnectUnsupported(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "nox", frameServer(t, nil))
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	c := mustAdd(t, m, pb)
	req, pw := extendedConnect(ctx)
	defer pw.Close()
	_, err := c.RoundTrip(req)
	if !errors.Is(err, ErrExtendedConnectUnsupported) {
		t.Fatalf("RoundTrip error = %v, want ErrExtendedConnectUnsupported", err)
	}
	wantStats(t, st, "nox", map[string]int64{"upstream_rq_total": 0, "upstream_rq_active": 0, "upstream_cx_total": 1})
	// What h2wire saw agrees, for when x/net's error text changes.
	if hc := c.set.Load().hosts[0].h2.conns[0]; !refusedXConnect(hc) {
		t.Error("refusedXConnect = false for a server without SETTINGS_ENABLE_CONNECT_PROTOCOL")
	}

	// An HTTP/1.1 cluster refuses at once.
	h1 := mustAdd(t, m, staticCluster(t, "h1only", closedPort(t)))
	req, pw2 := extendedConnect(ctx)
	defer pw2.Close()
	if _, err := h1.RoundTrip(req); !errors.Is(err, ErrExtendedConnectUnsupported) {
		t.Errorf("HTTP/1.1 cluster: RoundTrip error = %v, want ErrExtendedConnectUnsupported", err)
	}
}

// TestXNetErrorTexts pins the texts of x/net's unexported errors that
// errors.go recognises: it fails when an x/net upgrade changes them.
func TestXNetErrorTexts(t *testing.T) {
	ctx := testCtx(t)
	dialCC := func(addr string) *http2.ClientConn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}

	t.Run("extended connect", func(t *testing.T) {
		cc := dialCC(frameServer(t, nil))
		req, pw := extendedConnect(ctx)
		defer pw.Close()
		_, err := cc.RoundTrip(req)
		if err == nil || err.Error() != xnetExtendedConnectText {
			t.Errorf("x/net error = %v, want %q", err, xnetExtendedConnectText)
		}
	})
	t.Run("conn not usable", func(t *testing.T) {
		cc := dialCC(frameServer(t, nil))
		cc.SetDoNotReuse()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		_, err := cc.RoundTrip(req)
		if err == nil || err.Error() != xnetConnUnusableText || !streamNeverOpened(err) {
			t.Errorf("x/net error = %v, want %q", err, xnetConnUnusableText)
		}
	})
	t.Run("goaway and reset", func(t *testing.T) {
		// The server refuses the stream with GOAWAY (last stream 0).
		addr := frameServer(t, func(fr *http2.Framer, f http2.Frame) {
			if _, ok := f.(*http2.HeadersFrame); ok {
				fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			}
		})
		cc := dialCC(addr)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		_, err := cc.RoundTrip(req)
		if err == nil || err.Error() != xnetGotGoAwayText || !streamNeverOpened(err) {
			t.Errorf("x/net error = %v, want %q", err, xnetGotGoAwayText)
		}
	})
	t.Run("reset from peer", func(t *testing.T) {
		addr := frameServer(t, func(fr *http2.Framer, f http2.Frame) {
			if hf, ok := f.(*http2.HeadersFrame); ok {
				fr.WriteRSTStream(hf.StreamID, http2.ErrCodeInternal)
			}
		})
		cc := dialCC(addr)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		_, err := cc.RoundTrip(req)
		var re *ResetError
		if !errors.As(classifyH2Error(req, err), &re) || re.ResetReason != ResetRemoteReset {
			t.Errorf("classified %v as %v, want a remote reset", err, classifyH2Error(req, err))
		}
	})
}

func TestH2MaxConcurrentStreamsOpensAnotherConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	srv := h2ctest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "ok")
	}))
	pb := staticCluster(t, "mcs", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(1)})
	c := mustAdd(t, m, pb)

	results := make(chan error, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
			resp, err := c.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			results <- err
		}()
	}
	for range 2 { // both requests are in the handler at once
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("the two requests did not reach the server together")
		}
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("RoundTrip: %v", err)
		}
	}
	if n := srv.Accepted.Load(); n != 2 {
		t.Errorf("server accepted %d connections, want 2 (one stream each)", n)
	}
	wantStats(t, st, "mcs", map[string]int64{"upstream_cx_http2_total": 2, "upstream_rq_total": 2})
	// With both idle again, a third request reuses one of them.
	get(t, ctx, c)
	if n := srv.Accepted.Load(); n != 2 {
		t.Errorf("server accepted %d connections after a third request, want 2", n)
	}
}

func TestH2MaxRequestsPerConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	srv := h2ctest.Start(t, protoHandler)
	pb := staticCluster(t, "h2maxrq", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	pb.MaxRequestsPerConnection = wrapperspb.UInt32(2)
	c := mustAdd(t, m, pb)
	for range 3 {
		get(t, ctx, c)
	}
	if n := srv.Accepted.Load(); n != 2 {
		t.Errorf("server accepted %d connections, want 2", n)
	}
	wantStats(t, st, "h2maxrq", map[string]int64{"upstream_cx_http2_total": 2, "upstream_rq_total": 3})
	waitStat(t, ctx, st, "cluster.h2maxrq.upstream_cx_active", 1) // the used-up one closes
}

func TestUseDownstreamProtocol(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	backend := newBackendWith(t, protoHandler, func(s *http.Server) { s.Protocols = protos })
	pb := staticCluster(t, "ds", backend)
	pb.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	})
	c := mustAdd(t, m, pb)
	for _, tc := range []struct {
		major, upgrade int
		want           string
	}{
		{1, 1, "HTTP/1.1"}, {2, 2, "HTTP/2.0"}, {3, 2, "HTTP/2.0"},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		req.ProtoMajor = tc.major
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatalf("HTTP/%d downstream: %v", tc.major, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tc.want {
			t.Errorf("HTTP/%d downstream: upstream saw %s, want %s", tc.major, b, tc.want)
		}
		if got := c.UpgradeProtocol(tc.major); got != tc.upgrade {
			t.Errorf("UpgradeProtocol(%d) = %d, want %d", tc.major, got, tc.upgrade)
		}
	}
	wantStats(t, st, "ds", map[string]int64{"upstream_cx_http1_total": 1, "upstream_cx_http2_total": 1})
}

func TestUpgradeProtocol(t *testing.T) {
	m, _ := newTestManager(t, nil)
	h1 := mustAdd(t, m, staticCluster(t, "up1", "127.0.0.1:1"))
	pb := staticCluster(t, "up2", "127.0.0.1:1")
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	h2 := mustAdd(t, m, pb)
	legacy := staticCluster(t, "up3", "127.0.0.1:1")
	legacy.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
	ds := mustAdd(t, m, legacy)
	for _, tc := range []struct {
		c           *Cluster
		major, want int
	}{{h1, 2, 1}, {h1, 1, 1}, {h2, 1, 2}, {h2, 3, 2}, {ds, 1, 1}, {ds, 2, 2}} {
		if got := tc.c.UpgradeProtocol(tc.major); got != tc.want {
			t.Errorf("%s.UpgradeProtocol(%d) = %d, want %d", tc.c.Name(), tc.major, got, tc.want)
		}
	}
}

// newBackendWith starts a plain loopback HTTP server configured by f.
func newBackendWith(t *testing.T, h http.Handler, f func(*http.Server)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	f(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() { s.Close(); <-done })
	return l.Addr().String()
}

// waitStat polls until the stat has the wanted value: connections close on
// their own goroutines after the event that closes them.
func waitStat(t *testing.T, ctx context.Context, st interface {
	Get(string) (int64, bool)
}, name string, want int64) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if v, _ := st.Get(name); v == want {
			return
		}
		select {
		case <-ctx.Done():
			v, _ := st.Get(name)
			t.Fatalf("%s = %d, want %d", name, v, want)
		case <-tick.C:
		}
	}
}

func TestH2StreamSurvivesRemoval(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	srv := h2ctest.Start(t, echoHandler)
	pb := staticCluster(t, "keep", srv.Addr)
	pb.TypedExtensionProtocolOptions = explicitH2(t, nil)
	c := mustAdd(t, m, pb)
	req, pw := extendedConnect(ctx)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m.Remove("keep") // retires the connection, which still carries the tunnel
	for _, msg := range []string{"still", "open"} {
		io.WriteString(pw, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
			t.Fatalf("echo after Remove = %q, %v; want %q", got, err, msg)
		}
	}
	wantStats(t, st, "keep", map[string]int64{"upstream_cx_active": 1})
	pw.Close()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitStat(t, ctx, st, "cluster.keep.upstream_cx_active", 0) // its last stream ended
}
