package dataplane_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/gorilla/websocket"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// drainTest is the drain time of the tests that watch a drain end.
const drainTest = time.Second

// hangingUpstream answers nothing until the test ends; arrived gets a value
// for each request it holds.
func hangingUpstream(t *testing.T) (port int, arrived chan struct{}) {
	t.Helper()
	arrived = make(chan struct{}, 4)
	done := make(chan struct{})
	port = upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-done:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(done) }) // runs before the server's Close
	return port, arrived
}

// echoUntil echoes on ws until time.Since(t0) >= d; every echo must come
// back.
func echoUntil(t *testing.T, ws *websocket.Conn, t0 time.Time, d time.Duration) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond) // pacing only
	defer tick.Stop()
	for i := 0; time.Since(t0) < d; i++ {
		if err := echoOnce(ws, fmt.Sprintf("during drain %d", i)); err != nil {
			t.Fatalf("websocket %v after the listener was removed: %v", time.Since(t0), err)
		}
		<-tick.C
	}
}

// waitWSClosed waits until hop closes ws and returns when, failing the
// test if it is still open at deadline.
func waitWSClosed(t *testing.T, ws *websocket.Conn, deadline time.Time) time.Time {
	t.Helper()
	ws.SetReadDeadline(deadline)
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("websocket still open at the deadline: %v", err)
			}
			return time.Now()
		}
	}
}

// TestRemovedListenerDrains: a listener left out of a push stops accepting
// at once; its idle keep-alive connection is closed at once; its WebSocket
// echoes on during the drain time and is cut when it ends, as is a request
// still in flight; a WebSocket on a listener that stays is not touched. The
// listener_manager stats follow.
func TestRemovedListenerDrains(t *testing.T) {
	echo := startEcho(t)
	hang, arrived := hangingUpstream(t)
	h := startDynamic(t, drainTest)
	keep := newListener(t, "keep", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "")
	clusters := []*clusterv3.Cluster{newStatic(t, "echo", echo, ""), newStatic(t, "hang", hang, "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/hang", "hang", "/", "echo")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: []*listenerv3.Listener{newListener(t, "gone", "127.0.0.1:0", ""), keep}, Clusters: clusters, Routes: routes})
	gone := h.addr("gone")

	wsGone, wsKeep := dialWS(t, gone), dialWS(t, h.addr("keep"))
	for _, ws := range []*websocket.Conn{wsGone, wsKeep} {
		if err := echoOnce(ws, "before"); err != nil {
			t.Fatal(err)
		}
	}
	idle := dialRaw(t, gone)
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if res := idle.readResponse("GET"); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	inFlight := dialRaw(t, gone)
	inFlight.send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived

	t0 := time.Now()
	h.apply(snapshot.Bundle{Version: "2", Listeners: []*listenerv3.Listener{keep}, Clusters: clusters, Routes: routes})
	expectRefused(t, gone)
	if h.dp.ListenerAddr("gone") != nil {
		t.Error("removed listener still reported")
	}
	for s, want := range map[string]int64{
		"listener_manager.listener_removed":         1,
		"listener_manager.listener_added":           2,
		"listener_manager.total_listeners_active":   1,
		"listener_manager.total_listeners_draining": 1,
	} {
		if got := h.stat(s); got != want {
			t.Errorf("%s = %d, want %d", s, got, want)
		}
	}
	if at := waitClosed(t, idle.Conn, t0.Add(drainTest/2)); at.Sub(t0) >= drainTest/2 {
		t.Errorf("idle keep-alive connection closed after %v", at.Sub(t0))
	}

	echoUntil(t, wsGone, t0, 300*time.Millisecond)
	closed := waitWSClosed(t, wsGone, t0.Add(drainTest+1500*time.Millisecond)).Sub(t0)
	if closed < drainTest-100*time.Millisecond {
		t.Errorf("websocket closed %v after the push, before the drain time (%v) ended", closed, drainTest)
	}
	waitClosed(t, inFlight.Conn, t0.Add(drainTest+1500*time.Millisecond))
	h.waitStat("listener_manager.total_listeners_draining", 0)

	if err := echoOnce(wsKeep, "after the drain"); err != nil {
		t.Fatalf("websocket on the kept listener: %v", err)
	}
	if err := closeWS(wsKeep); err != nil {
		t.Fatal(err)
	}
}

// TestListenerAddressChange: a kept listener name with a new address binds
// the new address and drains the old one: the old address refuses new
// connections, its WebSocket echoes on and is cut when the drain time ends,
// and the new address serves HTTP and WebSockets.
func TestListenerAddressChange(t *testing.T) {
	h := startDynamic(t, drainTest)
	clusters := []*clusterv3.Cluster{newStatic(t, "echo", startEcho(t), "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "echo")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", "")}, Clusters: clusters, Routes: routes})
	oldAddr := h.addr("l")
	wsOld := dialWS(t, oldAddr)

	newAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t0 := time.Now()
	h.apply(snapshot.Bundle{Version: "2", Listeners: []*listenerv3.Listener{newListener(t, "l", newAddr, "")}, Clusters: clusters, Routes: routes})
	expectRefused(t, oldAddr)
	if got := h.addr("l"); got != newAddr {
		t.Fatalf("listener l on %s, want %s", got, newAddr)
	}
	if n := h.stat("listener_manager.total_listeners_draining"); n != 1 {
		t.Errorf("listener_manager.total_listeners_draining = %d, want 1", n)
	}
	if res, body := get(t, "http://"+newAddr+"/"); res.StatusCode != 200 || body == "" {
		t.Fatalf("new address: %d %q", res.StatusCode, body)
	}
	wsNew := dialWS(t, newAddr)
	if err := echoOnce(wsNew, "new"); err != nil {
		t.Fatal(err)
	}

	echoUntil(t, wsOld, t0, 300*time.Millisecond)
	closed := waitWSClosed(t, wsOld, t0.Add(drainTest+1500*time.Millisecond)).Sub(t0)
	if closed < drainTest-100*time.Millisecond {
		t.Errorf("websocket on the old address closed %v after the push, before the drain time ended", closed)
	}
	h.waitStat("listener_manager.total_listeners_draining", 0)
	if err := echoOnce(wsNew, "after the drain"); err != nil {
		t.Fatalf("websocket on the new address: %v", err)
	}
	if err := closeWS(wsNew); err != nil {
		t.Fatal(err)
	}
}

// TestReplacedServerDrains: when a push gives a filter chain a new HTTP
// server (max_request_headers_kb changed), a request still in flight on
// the old server has the drain time to finish; then its connection is
// closed, as Envoy closes the connections of a replaced filter chain.
func TestReplacedServerDrains(t *testing.T) {
	hang, arrived := hangingUpstream(t)
	h := startDynamic(t, drainTest)
	clusters := []*clusterv3.Cluster{newStatic(t, "hang", hang, "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "hang")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", "")}, Clusters: clusters, Routes: routes})
	c := dialRaw(t, h.addr("l"))
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	t0 := time.Now()
	h.apply(snapshot.Bundle{Version: "2", Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", `, "max_request_headers_kb": 30`)}, Clusters: clusters, Routes: routes})
	closed := waitClosed(t, c.Conn, t0.Add(drainTest+1500*time.Millisecond)).Sub(t0)
	if closed < drainTest-100*time.Millisecond {
		t.Errorf("connection closed %v after the push, before the drain time ended", closed)
	}
}

// TestShutdownEndsDrains: Shutdown(ctx) does not wait past ctx for a
// listener that is still draining: its WebSocket is closed and Shutdown
// returns soon after ctx ends, long before the drain time.
func TestShutdownEndsDrains(t *testing.T) {
	h := startDynamic(t, time.Minute)
	clusters := []*clusterv3.Cluster{newStatic(t, "echo", startEcho(t), "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "echo")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", "")}, Clusters: clusters, Routes: routes})
	ws := dialWS(t, h.addr("l"))
	h.apply(snapshot.Bundle{Version: "2", Clusters: clusters, Routes: routes})
	if err := echoOnce(ws, "draining"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); h.dp.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown still waiting for the drain 3s after its context ended")
	}
	if d := time.Since(t0); d < 150*time.Millisecond {
		t.Errorf("Shutdown returned after %v, before its context ended (the WebSocket had until then)", d)
	}
	waitWSClosed(t, ws, time.Now().Add(time.Second))
}
