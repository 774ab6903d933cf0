package hcm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/filter"
	filterrouter "github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/stats"
)

var extendedConnect = []string{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws", ":authority", "example.com", "sec-websocket-version", "13"}

func getFields(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":path", path, ":authority", "example.com"}
}

func TestAllowConnect(t *testing.T) {
	t.Run("true: advertised and handed on", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2\nhttp2_protocol_options: {allow_connect: true}")
		h := dialH2(t, ts.addr)
		if v, ok := h.settings[http2.SettingEnableConnectProtocol]; !ok || v != 1 {
			t.Errorf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d (sent %v), want 1", v, ok)
		}
		h.request(1, false, extendedConnect...)
		status, rst, goaway, err := h.outcome(1)
		if status == "" {
			t.Fatalf("no response: reset %v, goaway %v, %v", rst, goaway, err)
		}
		if got := ts.stat(t, "http.t.downstream_rq_http2_total"); got != 1 {
			t.Errorf("the request did not reach the connection manager (downstream_rq_http2_total %d)", got)
		}
		if got := ts.stat(t, "http2.rx_messaging_error"); got != 0 {
			t.Errorf("rx_messaging_error = %d", got)
		}
	})
	t.Run("false: connection error", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2")
		h := dialH2(t, ts.addr)
		if _, ok := h.settings[http2.SettingEnableConnectProtocol]; ok {
			t.Errorf("SETTINGS_ENABLE_CONNECT_PROTOCOL sent without allow_connect: %v", h.settings)
		}
		if _, ok := h.settings[http2.SettingMaxConcurrentStreams]; !ok {
			t.Errorf("stripping lost the other settings: %v", h.settings)
		}
		h.request(1, false, extendedConnect...)
		_, rst, goaway, err := h.outcome(1)
		if goaway == nil || goaway.ErrCode != http2.ErrCodeProtocol || goaway.LastStreamID != 1 {
			t.Fatalf("want GOAWAY(PROTOCOL_ERROR, last 1); got reset %v, goaway %+v, %v", rst, goaway, err)
		}
		if err := closedByPeer(h.c); err != nil {
			t.Errorf("the connection did not close: %v", err)
		}
		ts.waitClosed(t, 1)
		for name, want := range map[string]int64{
			"http2.rx_messaging_error": 1, "http.t.downstream_cx_protocol_error": 1, "http.t.downstream_rq_total": 0,
			"http2.goaway_sent": 0, // Envoy counts its graceful GOAWAYs only
		} {
			if got := ts.stat(t, name); got != want {
				t.Errorf("%s = %d, want %d", name, got, want)
			}
		}
	})
	t.Run("false with override: stream error", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2\nhttp2_protocol_options: {override_stream_error_on_invalid_http_message: true}")
		h := dialH2(t, ts.addr)
		h.request(1, false, extendedConnect...)
		_, rst, goaway, err := h.outcome(1)
		if rst == nil || rst.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want RST_STREAM(PROTOCOL_ERROR); got reset %v, goaway %v, %v", rst, goaway, err)
		}
		h.request(3, true, getFields("/next")...)
		if status, _, _, err := h.outcome(3); status != "200" {
			t.Fatalf("the connection did not serve on: status %q, %v", status, err)
		}
		for name, want := range map[string]int64{
			"http2.rx_messaging_error": 1, "http.t.downstream_cx_protocol_error": 0, "http2.tx_reset": 1,
			"http.t.downstream_rq_http2_total": 1,
		} {
			if got := ts.stat(t, name); got != want {
				t.Errorf("%s = %d, want %d", name, got, want)
			}
		}
	})
	t.Run("false: plain CONNECT is not affected", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2")
		h := dialH2(t, ts.addr)
		h.request(1, false, ":method", "CONNECT", ":authority", "example.com:443")
		if status, rst, goaway, err := h.outcome(1); status == "" {
			t.Fatalf("no response: reset %v, goaway %v, %v", rst, goaway, err)
		}
		if got := ts.stat(t, "http2.rx_messaging_error"); got != 0 {
			t.Errorf("rx_messaging_error = %d", got)
		}
	})
	t.Run("HCM stream_error_on_invalid_http_message", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2\nstream_error_on_invalid_http_message: true")
		h := dialH2(t, ts.addr)
		h.request(1, false, extendedConnect...)
		if _, rst, _, err := h.outcome(1); rst == nil {
			t.Fatalf("want a stream reset: %v", err)
		}
	})
}

// TestMalformedRequest: a request x/net refuses as malformed is an invalid
// HTTP message too: a connection error unless stream errors are on.
func TestMalformedRequest(t *testing.T) {
	bad := []string{":method", "GET", ":scheme", "http", ":authority", "example.com"} // no :path
	t.Run("connection error", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2")
		h := dialH2(t, ts.addr)
		h.request(1, true, bad...)
		if _, _, goaway, err := h.outcome(1); goaway == nil || goaway.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want GOAWAY(PROTOCOL_ERROR), got %v %v", goaway, err)
		}
		if got := ts.stat(t, "http2.rx_messaging_error"); got != 1 {
			t.Errorf("rx_messaging_error = %d", got)
		}
	})
	t.Run("stream error", func(t *testing.T) {
		ts := startServer(t, "codec_type: HTTP2\nhttp2_protocol_options: {override_stream_error_on_invalid_http_message: true}")
		h := dialH2(t, ts.addr)
		h.request(1, true, bad...)
		if _, rst, _, err := h.outcome(1); rst == nil || rst.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("want RST_STREAM(PROTOCOL_ERROR), got %v %v", rst, err)
		}
		h.request(3, true, getFields("/")...)
		if status, _, _, err := h.outcome(3); status != "200" {
			t.Fatalf("status %q, %v", status, err)
		}
	})
}

func TestHTTP2Settings(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		want    map[http2.SettingID]uint32
		connWin uint32
	}{
		{"", map[http2.SettingID]uint32{http2.SettingMaxConcurrentStreams: 2147483647, http2.SettingInitialWindowSize: 256 << 20, http2.SettingHeaderTableSize: 4096}, 256<<20 - 65535},
		{"http2_protocol_options: {max_concurrent_streams: 7, initial_stream_window_size: 70000, initial_connection_window_size: 1048576, hpack_table_size: 8192}",
			map[http2.SettingID]uint32{http2.SettingMaxConcurrentStreams: 7, http2.SettingInitialWindowSize: 70000, http2.SettingHeaderTableSize: 8192}, 1<<20 - 65535},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			ts := startServer(t, "codec_type: HTTP2\n"+tc.yaml)
			h := dialH2(t, ts.addr)
			for id, v := range tc.want {
				if got := h.settings[id]; got != v {
					t.Errorf("%v = %d, want %d", id, got, v)
				}
			}
			if h.connWin != tc.connWin {
				t.Errorf("connection WINDOW_UPDATE %d, want %d", h.connWin, tc.connWin)
			}
		})
	}
}

func TestHTTP2Resets(t *testing.T) {
	ts := startServer(t, "codec_type: HTTP2\nhttp2_protocol_options: {max_concurrent_streams: 1}")
	h := dialH2(t, ts.addr)
	// Stream 1 stays open (no END_STREAM, the response is sent and the
	// request body never ends), then the client resets it.
	h.request(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x")
	if status, _, _, err := h.outcome(1); status != "200" {
		t.Fatalf("status %q, %v", status, err)
	}
	h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	h.request(3, true, getFields("/")...)
	if status, _, _, err := h.outcome(3); status != "200" {
		t.Fatalf("status %q, %v", status, err)
	}
	if got := ts.stat(t, "http2.rx_reset"); got != 1 {
		t.Errorf("rx_reset = %d, want 1", got)
	}
}

// TestGracefulShutdown: Shutdown sends GOAWAY(NO_ERROR) on HTTP/2
// connections, lets them close, closes idle HTTP/1.1 connections and
// returns; a connection after it is closed at once.
func TestGracefulShutdown(t *testing.T) {
	ts := startServer(t, "codec_type: AUTO")
	h := dialH2(t, ts.addr)
	h1 := &http.Transport{}
	get(t, h1, "http://"+ts.addr+"/")
	h.request(1, true, getFields("/")...)
	if status, _, _, err := h.outcome(1); status != "200" {
		t.Fatalf("status %q, %v", status, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	_, _, goaway, err := h.outcome(3)
	if goaway == nil || goaway.ErrCode != http2.ErrCodeNo || goaway.LastStreamID != 1 {
		t.Fatalf("want GOAWAY(NO_ERROR, last 1), got %+v %v", goaway, err)
	}
	if _, _, _, err := h.outcome(3); !errors.Is(err, io.EOF) {
		t.Errorf("after GOAWAY: %v, want the connection closed", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ts.waitClosed(t, 2)
	if got := ts.stat(t, "http2.goaway_sent"); got != 1 {
		t.Errorf("goaway_sent = %d", got)
	}
	h1.CloseIdleConnections()
	c := dial(t, ts.addr)
	if err := closedByPeer(c); err != nil {
		t.Errorf("a connection after Shutdown: %v", err)
	}
	ts.waitClosed(t, 1)
}

// TestCloseEndsHTTP2Connections: Close closes HTTP/2 connections, sniffing
// ones included, and returns once their goroutines are gone.
func TestCloseEndsHTTP2Connections(t *testing.T) {
	ts := startServer(t, "codec_type: AUTO")
	h := dialH2(t, ts.addr)
	quiet := dial(t, ts.addr) // still being sniffed
	ts.srv.Close()
	if err := closedByPeer(h.c); err != nil {
		t.Errorf("HTTP/2 connection: %v", err)
	}
	if err := closedByPeer(quiet); err != nil {
		t.Errorf("sniffed connection: %v", err)
	}
	ts.waitClosed(t, 2)
	if got := ts.stat(t, "http.t.downstream_cx_active"); got != 0 {
		t.Errorf("downstream_cx_active = %d", got)
	}
}

// recorder stands in for the router: it records what a stream's context
// says of its connection and answers 200.
type recorder struct{ seen chan any }

func (recorder) TypeURLs() []string { return []string{filterrouter.TypeURL} }
func (recorder) Terminal() bool     { return true }
func (r recorder) Compile(proto.Message) (filter.Factory, error) {
	return func(filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(s *filter.Stream) {
			t := connTrackFrom(s.Req.Context())
			if t == nil {
				r.seen <- nil
			} else {
				r.seen <- t.group()
			}
			s.W.WriteHeader(http.StatusOK)
			s.W.Write([]byte("ok"))
		})
	}, nil
}

// TestStreamsCarryTheirConnection: HTTP/1.1 and HTTP/2 requests alike
// carry their connection's track, tagged with the server's owner (the
// tunnel group).
func TestStreamsCarryTheirConnection(t *testing.T) {
	noLeaks(t)
	st := stats.New()
	p := mustParse(t, directOK+"codec_type: AUTO")
	reg := filter.NewRegistry()
	rec := recorder{seen: make(chan any, 2)}
	reg.Register(rec)
	cfg, err := Compile(p, reg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	owner := new(int)
	srv := NewServer(NewManager(cfg, nil), nil, owner)
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			srv.ServeConn(c, nil)
		}
	}()
	h1, h2 := &http.Transport{}, h2cClient()
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	for _, rt := range []http.RoundTripper{h1, h2} {
		get(t, rt, "http://"+ln.Addr().String()+"/")
		if g := <-rec.seen; g != any(owner) {
			t.Errorf("group %v, want the server's owner", g)
		}
	}
}
