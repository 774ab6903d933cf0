package dataplane_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// The client side of RFC 8441 in tests: an extended CONNECT over HTTP/2
// carries WebSocket frames in its DATA. Clients mask what they send
// (RFC 6455 §5.3); servers do not.

// wsFrameWrite writes one masked, final text frame.
func wsFrameWrite(w io.Writer, msg []byte) error {
	hdr := []byte{0x81}
	switch n := len(msg); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	hdr = append(hdr, mask[:]...)
	out := append(hdr, msg...)
	for i := range msg {
		out[len(hdr)+i] ^= mask[i%4]
	}
	_, err := w.Write(out)
	return err
}

// wsFrameRead reads one unmasked frame and returns its payload.
func wsFrameRead(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		return nil, fmt.Errorf("server frame is masked")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return p, err
}

// extendedConnectH2 opens an RFC 8441 WebSocket to addr over h2c and
// returns the response and the stream's writer.
func extendedConnectH2(t *testing.T, addr, path string) (*http.Response, io.WriteCloser) {
	t.Helper()
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req := (&http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Scheme: "http", Host: addr, Path: path},
		Host:   addr,
		Header: http.Header{":protocol": {"websocket"}, "Sec-Websocket-Version": {"13"}},
		Body:   pr,
	}).WithContext(ctx)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("extended CONNECT: %v", err)
	}
	t.Cleanup(func() { res.Body.Close(); pw.Close() })
	return res, pw
}

// TestNativeRFC8441ClientReachesHTTP1App: beyond Envoy. A WebSocket over
// HTTP/2 (RFC 8441, no Sec-WebSocket-Key) reaches an RFC 6455 app over
// HTTP/1.1: hop supplies the key the app requires and checks its Accept.
func TestNativeRFC8441ClientReachesHTTP1App(t *testing.T) {
	app := startWSApp(t)
	sidecar := startHop(t, sidecarYAML(app.port, true, ""))
	res, w := extendedConnectH2(t, sidecar.addr("sidecar"), "/chat")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	if res.Header.Get("Sec-WebSocket-Accept") != "" || res.Header.Get("Upgrade") != "" {
		t.Fatalf("response carries HTTP/1.1 handshake headers: %v", res.Header)
	}
	for i := 0; i < 200; i++ {
		msg := []byte(strings.Repeat(fmt.Sprint(i), 1+i%300))
		if err := wsFrameWrite(w, msg); err != nil {
			t.Fatal(err)
		}
		got, err := wsFrameRead(res.Body)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != string(msg) {
			t.Fatalf("message %d corrupted", i)
		}
	}
	seen := app.requests()
	if len(seen) != 1 || seen[0].Method != http.MethodGet || seen[0].Header.Get("Sec-WebSocket-Key") == "" || seen[0].URL.Path != "/chat" {
		t.Fatalf("app saw %+v", seen)
	}
	if got := sidecar.stat("http.sidecar.downstream_cx_upgrades_total"); got != 1 {
		t.Errorf("upgrades_total %d", got)
	}
}

// TestHTTP2TunnelIdleTimeout: a tunnel on an HTTP/2 stream that carries
// nothing for stream_idle_timeout is reset (the stream's body read fails)
// and counted in downstream_rq_idle_timeout; the connection's other
// streams are not touched.
func TestHTTP2TunnelIdleTimeout(t *testing.T) {
	app := startWSApp(t)
	yaml := strings.Replace(sidecarYAML(app.port, true, ""), "codec_type: AUTO", "codec_type: AUTO\n          stream_idle_timeout: 0.3s", 1)
	sidecar := startHop(t, yaml)
	res, w := extendedConnectH2(t, sidecar.addr("sidecar"), "/idle")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	if err := wsFrameWrite(w, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if got, err := wsFrameRead(res.Body); err != nil || string(got) != "before" {
		t.Fatalf("echo %q %v", got, err)
	}
	start := time.Now()
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("the idle stream ended cleanly, want a reset")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("reset after %v, before the idle timeout", d)
	}
	sidecar.waitStat("http.sidecar.downstream_rq_idle_timeout", 1)
	sidecar.waitStat("http.sidecar.downstream_cx_upgrades_active", 0)
}

// TestHTTP2TunnelsAcrossPushes: WebSockets carried on HTTP/2 streams (RFC
// 8441) live through pushes like HTTP/1.1 tunnels: a route change leaves a
// kept listener's stream alone; a removed listener's stream echoes on
// during the drain time and is reset when it ends.
func TestHTTP2TunnelsAcrossPushes(t *testing.T) {
	echo := startEcho(t)
	h := startDynamic(t, drainTest)
	h2 := `, "http2_protocol_options": {"allow_connect": true}`
	keep := newListener(t, "keep", fmt.Sprintf("127.0.0.1:%d", freePort(t)), h2)
	gone := newListener(t, "gone", "127.0.0.1:0", h2)
	clusters := []*clusterv3.Cluster{newStatic(t, "echo", echo, "")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: []*listenerv3.Listener{gone, keep}, Clusters: clusters,
		Routes: map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "echo")}})

	resGone, wGone := extendedConnectH2(t, h.addr("gone"), "/ws")
	resKeep, wKeep := extendedConnectH2(t, h.addr("keep"), "/ws")
	echo8441 := func(res *http.Response, w io.Writer, msg string) error {
		if err := wsFrameWrite(w, []byte(msg)); err != nil {
			return err
		}
		got, err := wsFrameRead(res.Body)
		if err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, sent %q", got, msg)
		}
		return nil
	}
	for _, p := range []struct {
		res *http.Response
		w   io.Writer
	}{{resGone, wGone}, {resKeep, wKeep}} {
		if p.res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", p.res.StatusCode)
		}
		if err := echo8441(p.res, p.w, "before"); err != nil {
			t.Fatal(err)
		}
	}

	// A route change on both listeners: nothing is cut.
	h.apply(snapshot.Bundle{Version: "2", Listeners: []*listenerv3.Listener{gone, keep}, Clusters: clusters,
		Routes: map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/other", "echo", "/", "echo")}})
	if err := echo8441(resKeep, wKeep, "after the route push"); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	h.apply(snapshot.Bundle{Version: "3", Listeners: []*listenerv3.Listener{keep}, Clusters: clusters,
		Routes: map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "echo")}})
	if err := echo8441(resGone, wGone, "during the drain"); err != nil {
		t.Fatalf("draining stream: %v", err)
	}
	if _, err := io.ReadAll(resGone.Body); err == nil {
		t.Fatal("the drained stream ended cleanly, want a reset")
	}
	if d := time.Since(t0); d < drainTest-100*time.Millisecond {
		t.Fatalf("stream cut %v after the push, before the drain time (%v)", d, drainTest)
	}
	if err := echo8441(resKeep, wKeep, "after the drain"); err != nil {
		t.Fatalf("kept listener's stream: %v", err)
	}
}
