package hcm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	filterrouter "github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/stats"
)

// directOK is a connection manager that answers every request 200 "ok".
const directOK = `
stat_prefix: t
route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: ok}}}]}]}
http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`

func mustParse(t *testing.T, y string) *hcmv3.HttpConnectionManager {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	var p hcmv3.HttpConnectionManager
	if err := protojson.Unmarshal(j, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func compileYAML(t *testing.T, st *stats.Store, y string) (*Config, error) {
	t.Helper()
	reg := filter.NewRegistry()
	if err := reg.Register(filterrouter.Builder{}); err != nil {
		t.Fatal(err)
	}
	return Compile(mustParse(t, y), reg, st, nil)
}

// testServer is a Server fed by a loopback listener.
type testServer struct {
	addr   string
	srv    *Server
	st     *stats.Store
	closed chan struct{} // one value per connection gone (onClose)
}

func (ts *testServer) stat(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := ts.st.Get(name)
	if !ok {
		t.Fatalf("no stat %s", name)
	}
	return v
}

// waitClosed waits until n connections have gone.
func (ts *testServer) waitClosed(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		select {
		case <-ts.closed:
		case <-ctx.Done():
			t.Fatal("connection not closed")
		}
	}
}

func startServer(t *testing.T, extra string) *testServer {
	t.Helper()
	noLeaks(t)
	st := stats.New()
	cfg, err := compileYAML(t, st, directOK+extra)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), srv: NewServer(NewManager(cfg, nil), nil, nil), st: st, closed: make(chan struct{}, 100)}
	loop := make(chan struct{})
	go func() {
		defer close(loop)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.srv.ServeConn(c, func() { ts.closed <- struct{}{} })
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-loop
		ts.srv.Close()
	})
	return ts
}

// noLeaks fails the test if goroutines of hop or of x/net's HTTP/2 server
// are still running once the test and its cleanups are done.
func noLeaks(t *testing.T) {
	leakcheck.Check(t, "hopproxy/hop/pkg/", "x/net/http2.(*serverConn)")
}

// h2cClient speaks HTTP/2 with prior knowledge.
func h2cClient() *http2.Transport {
	return &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func get(t *testing.T, rt http.RoundTripper, url string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET %s: %d %q", url, res.StatusCode, body)
	}
	return res
}

func TestCodecChoice(t *testing.T) {
	for _, codec := range []string{"AUTO", "HTTP2"} {
		t.Run("h2c prior knowledge "+codec, func(t *testing.T) {
			ts := startServer(t, "codec_type: "+codec)
			tr := h2cClient()
			if res := get(t, tr, "http://"+ts.addr+"/"); res.ProtoMajor != 2 {
				t.Errorf("protocol %s", res.Proto)
			}
			get(t, tr, "http://"+ts.addr+"/again")
			tr.CloseIdleConnections()
			ts.waitClosed(t, 1)
			for name, want := range map[string]int64{
				"http.t.downstream_cx_total": 1, "http.t.downstream_cx_http2_total": 1, "http.t.downstream_cx_http1_total": 0,
				"http.t.downstream_cx_http2_active": 0, "http.t.downstream_cx_active": 0, "http.t.downstream_cx_destroy": 1,
				"http.t.downstream_rq_http2_total": 2, "http.t.downstream_rq_http1_total": 0, "http2.streams_active": 0,
			} {
				if got := ts.stat(t, name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
	t.Run("AUTO serves both on one port", func(t *testing.T) {
		ts := startServer(t, "codec_type: AUTO")
		h1 := &http.Transport{}
		if res := get(t, h1, "http://"+ts.addr+"/"); res.ProtoMajor != 1 {
			t.Errorf("HTTP/1.1 client got %s", res.Proto)
		}
		h2 := h2cClient()
		if res := get(t, h2, "http://"+ts.addr+"/"); res.ProtoMajor != 2 {
			t.Errorf("HTTP/2 client got %s", res.Proto)
		}
		h1.CloseIdleConnections()
		h2.CloseIdleConnections()
		ts.waitClosed(t, 2)
		for name, want := range map[string]int64{
			"http.t.downstream_cx_http1_total": 1, "http.t.downstream_cx_http2_total": 1,
			"http.t.downstream_cx_http1_active": 0, "http.t.downstream_cx_http2_active": 0,
			"http.t.downstream_rq_http1_total": 1, "http.t.downstream_rq_http2_total": 1,
		} {
			if got := ts.stat(t, name); got != want {
				t.Errorf("%s = %d, want %d", name, got, want)
			}
		}
	})
	t.Run("HTTP1 takes the preface for a bad request", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP1")
		c := dial(t, ts.addr)
		c.Write([]byte(http2.ClientPreface))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d, want 400", res.StatusCode)
		}
		if err := closedByPeer(c); err != nil {
			t.Errorf("connection not closed cleanly: %v", err)
		}
		if got := ts.stat(t, "http.t.downstream_cx_protocol_error"); got != 1 {
			t.Errorf("downstream_cx_protocol_error = %d", got)
		}
		if got := ts.stat(t, "http.t.downstream_rq_total"); got != 0 {
			t.Errorf("the preface reached the connection manager (downstream_rq_total %d)", got)
		}
	})
	t.Run("HTTP2 does not speak HTTP/1.1", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2")
		c := dial(t, ts.addr)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		got, _ := io.ReadAll(c)
		if bytes.Contains(got, []byte("HTTP/1.1")) {
			t.Errorf("an HTTP/2 codec answered HTTP/1.1: %q", got)
		}
	})
	t.Run("AUTO closes a connection that says nothing in time", func(t *testing.T) {
		ts := startServer(t, "codec_type: AUTO\nrequest_headers_timeout: 0.2s")
		c := dial(t, ts.addr)
		if err := closedByPeer(c); err != nil {
			t.Errorf("read: %v", err)
		}
		ts.waitClosed(t, 1)
		if got := ts.stat(t, "http.t.downstream_cx_active"); got != 0 {
			t.Errorf("downstream_cx_active = %d", got)
		}
	})
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCompileCodecOptions(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
		check               func(*Config) bool
	}{
		{"defaults", "", "", func(c *Config) bool {
			return c.codec == hcmv3.HttpConnectionManager_AUTO && c.h2 == h2Options{maxConcurrentStreams: 2147483647, streamWindow: 256 << 20, connWindow: 256 << 20, hpackTableSize: 4096}
		}},
		{"http2 codec", "codec_type: HTTP2", "", func(c *Config) bool { return c.codec == hcmv3.HttpConnectionManager_HTTP2 }},
		{"options", "http2_protocol_options: {allow_connect: true, max_concurrent_streams: 7, initial_stream_window_size: 70000, initial_connection_window_size: 80000, hpack_table_size: 100}", "",
			func(c *Config) bool {
				return c.h2 == h2Options{allowConnect: true, maxConcurrentStreams: 7, streamWindow: 70000, connWindow: 80000, hpackTableSize: 100}
			}},
		{"override", "http2_protocol_options: {override_stream_error_on_invalid_http_message: true}", "", func(c *Config) bool { return c.h2.streamErrorOnInvalid }},
		{"override beats the HCM", "stream_error_on_invalid_http_message: true\nhttp2_protocol_options: {override_stream_error_on_invalid_http_message: false}", "", func(c *Config) bool { return !c.h2.streamErrorOnInvalid }},
		{"HCM fallback", "stream_error_on_invalid_http_message: true", "", func(c *Config) bool { return c.h2.streamErrorOnInvalid }},
		{"deprecated field", "http2_protocol_options: {stream_error_on_invalid_http_messaging: true}", "", func(c *Config) bool { return c.h2.streamErrorOnInvalid }},
		{"unsupported", "http2_protocol_options: {allow_metadata: true}", "http2_protocol_options.allow_metadata: unsupported field", nil},
		{"custom settings", "http2_protocol_options: {custom_settings_parameters: [{identifier: 8, value: 1}]}", "http2_protocol_options.custom_settings_parameters: unsupported field", nil},
		{"no dynamic table", "http2_protocol_options: {hpack_table_size: 0}", "hpack_table_size: 0 (no dynamic table) is not supported", nil},
		{"window too small", "http2_protocol_options: {initial_stream_window_size: 100}", "InitialStreamWindowSize", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := compileYAML(t, stats.New(), directOK+tc.yaml)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case !tc.check(c):
				t.Errorf("compiled: codec %v, %+v", c.codec, c.h2)
			}
		})
	}
}

func TestSameServerCodec(t *testing.T) {
	st := stats.New()
	base, _ := compileYAML(t, st, directOK)
	for _, tc := range []struct {
		yaml string
		same bool
	}{
		{"", true},
		{"stat_prefix: other", true},
		{"codec_type: HTTP2", false},
		{"http2_protocol_options: {allow_connect: true}", false},
		{"http2_protocol_options: {max_concurrent_streams: 3}", false},
		{"http2_protocol_options: {override_stream_error_on_invalid_http_message: true}", false},
		{"http3_protocol_options: {allow_extended_connect: true}", false},
	} {
		c, err := compileYAML(t, st, directOK+tc.yaml)
		if err != nil {
			t.Fatal(err)
		}
		if got := SameServer(base, c); got != tc.same {
			t.Errorf("%q: SameServer = %v, want %v", tc.yaml, got, tc.same)
		}
	}
}

// h2Raw is an HTTP/2 client written frame by frame.
type h2Raw struct {
	t         *testing.T
	c         net.Conn
	fr        *http2.Framer
	settings  map[http2.SettingID]uint32
	connWin   uint32 // the server's first connection WINDOW_UPDATE
	henc      *hpack.Encoder
	hbuf      bytes.Buffer
	sawGoAway bool
}

// dialH2 opens a connection, exchanges prefaces and SETTINGS and returns
// once the server's SETTINGS have been read.
func dialH2(t *testing.T, addr string) *h2Raw {
	t.Helper()
	c := dial(t, addr)
	h := &h2Raw{t: t, c: c, settings: map[http2.SettingID]uint32{}}
	h.fr = http2.NewFramer(c, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.henc = hpack.NewEncoder(&h.hbuf)
	c.Write([]byte(http2.ClientPreface))
	h.fr.WriteSettings()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			f.ForeachSetting(func(s http2.Setting) error { h.settings[s.ID] = s.Val; return nil })
			h.fr.WriteSettingsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 && h.connWin == 0 {
				h.connWin = f.Increment
			}
		}
		if len(h.settings) > 0 && h.connWin > 0 {
			return h
		}
	}
}

// request sends a HEADERS frame with the given fields (pseudo-headers first).
func (h *h2Raw) request(id uint32, endStream bool, fields ...string) {
	h.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		h.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		h.t.Fatal(err)
	}
}

// outcome reads frames until one ends stream id's fate: its response
// HEADERS (the :status), an RST_STREAM, a GOAWAY or the connection's end.
func (h *h2Raw) outcome(id uint32) (status string, rst *http2.RSTStreamFrame, goaway *http2.GoAwayFrame, err error) {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return "", nil, nil, err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status"), nil, nil, nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", f, nil, nil
			}
		case *http2.GoAwayFrame:
			g := *f
			if g.ErrCode == http2.ErrCodeNo && g.LastStreamID >= id && !h.sawGoAway {
				h.sawGoAway = true // graceful: stream id still gets its answer
				continue
			}
			return "", nil, &g, nil
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
	}
}

// closedByPeer reads c to its end: nil once the peer closed it (EOF, or a
// reset when the peer closed with bytes of ours unread), the error when the
// read timed out or failed otherwise.
func closedByPeer(c net.Conn) error {
	_, err := io.ReadAll(c)
	if err == nil || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}
