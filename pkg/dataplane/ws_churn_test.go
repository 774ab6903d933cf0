package dataplane_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/gorilla/websocket"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// TestWebSocketsSurvivePushes: 20 WebSockets echo without pause while 10
// pushes change, on their listener, the route configuration, the
// WebSocket's own cluster (connect_timeout, so a new cluster object),
// other clusters (added and removed) and HCM settings, half of them
// settings that give the filter chain a new HTTP server. Each socket must
// echo after every push and none may close; a WebSocket opened after the
// last push uses the last configuration.
func TestWebSocketsSurvivePushes(t *testing.T) {
	const sockets, pushes = 20, 10
	echo, other := startEcho(t), namedUpstream(t, "other")
	h := startDynamic(t, drain1s)
	push := func(i int) {
		t.Helper()
		hcmExtra := fmt.Sprintf(`, "server_name": "s%d", "max_request_headers_kb": %d`, i, 60-i%2)
		clusters := []*clusterv3.Cluster{
			newStatic(t, "echo", echo, fmt.Sprintf(`, "connect_timeout": "%ds"`, i+1)),
			newStatic(t, fmt.Sprintf("other%d", i), other, ""),
		}
		h.apply(snapshot.Bundle{
			Version:   fmt.Sprint(i),
			Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", hcmExtra)},
			Clusters:  clusters,
			Routes:    map[string]*routev3.RouteConfiguration{"r": newRoutes(t, fmt.Sprintf("/other%d", i), fmt.Sprintf("other%d", i), "/", "echo")},
		})
	}
	push(0)
	addr := h.addr("l")

	var (
		echoed [sockets]atomic.Int64
		failed = make(chan error, sockets)
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		wss    []*websocket.Conn
	)
	for i := range sockets {
		ws := dialWS(t, addr)
		wss = append(wss, ws)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := echoOnce(ws, fmt.Sprintf("socket %d message %d", i, n)); err != nil {
					failed <- fmt.Errorf("socket %d after %d messages: %w", i, n, err)
					return
				}
				echoed[i].Add(1)
			}
		}()
	}
	stopAll := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopAll()

	// waitEchoes waits until every socket has echoed twice more than at
	// the call (so at least once entirely after it).
	waitEchoes := func(when string) {
		t.Helper()
		var base [sockets]int64
		for i := range sockets {
			base[i] = echoed[i].Load()
		}
		deadline := time.Now().Add(defaultTestTimeout)
		for i := 0; i < sockets; {
			select {
			case err := <-failed:
				t.Fatalf("%s: %v", when, err)
			default:
			}
			if echoed[i].Load() >= base[i]+2 {
				i++
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: socket %d stopped echoing", when, i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitEchoes("before the pushes")
	for i := 1; i <= pushes; i++ {
		push(i)
		waitEchoes(fmt.Sprintf("after push %d", i))
	}
	if n := h.dp.Tunnels.Len(); n != sockets {
		t.Errorf("%d live tunnels, want %d", n, sockets)
	}
	if res, body := get(t, fmt.Sprintf("http://%s/other%d", addr, pushes)); res.StatusCode != 200 || body != "other" {
		t.Errorf("route of the last push: %d %q", res.StatusCode, body)
	}
	ws := dialWS(t, addr)
	if err := echoOnce(ws, "new"); err != nil {
		t.Fatalf("websocket after the pushes: %v", err)
	}
	stopAll()
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	for i, ws := range append(wss, ws) {
		if err := closeWS(ws); err != nil {
			t.Errorf("socket %d: %v", i, err)
		}
	}
}
