package dataplane_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/hopproxy/hop/hack/echo/echoserver"
)

func startEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: echoserver.New()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestWebSocketEchoAndStats: a real WebSocket client through hop to a real
// WebSocket server; 1,000 messages of varied size echo intact; the upgrade
// stats read from /stats are right while the socket is open and after.
func TestWebSocketEchoAndStats(t *testing.T) {
	port := startEcho(t)
	h := startHop(t, cfg{upstreamPort: port, hcm: `"upgrade_configs": [{"upgrade_type": "websocket"}]`}.String())
	ws, res, err := websocket.DefaultDialer.Dial("ws://"+h.addr("l")+"/chat", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if res.StatusCode != 101 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for i := 0; i < 1000; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, 1+(i*37)%5000)
		typ := websocket.BinaryMessage
		if i%2 == 0 {
			typ = websocket.TextMessage
			msg = []byte(fmt.Sprintf("message %d", i))
		}
		if err := ws.WriteMessage(typ, msg); err != nil {
			t.Fatal(err)
		}
		gotType, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if gotType != typ || !bytes.Equal(got, msg) {
			t.Fatalf("message %d corrupted", i)
		}
	}
	for name, want := range map[string]int64{
		"http.t.downstream_cx_upgrades_total":       1,
		"http.t.downstream_cx_upgrades_active":      1,
		"http.t.downstream_cx_active":               1,
		"http.t.downstream_rq_active":               1,
		"http.t.downstream_rq_1xx":                  1,
		"listener.127.0.0.1_0.downstream_cx_active": 1,
		"cluster.up.upstream_cx_active":             1,
		"cluster.up.upstream_cx_total":              1,
	} {
		if got := h.stat(name); got != want {
			t.Errorf("while open: %s = %d, want %d", name, got, want)
		}
	}
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done"))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("close handshake: %v", err)
	}
	ws.Close()
	h.waitStat("http.t.downstream_cx_upgrades_active", 0)
	h.waitStat("http.t.downstream_cx_active", 0)
	h.waitStat("http.t.downstream_rq_active", 0)
	h.waitStat("listener.127.0.0.1_0.downstream_cx_active", 0)
	h.waitStat("cluster.up.upstream_cx_active", 0)
	if got := h.stat("http.t.downstream_cx_upgrades_total"); got != 1 {
		t.Errorf("after close: downstream_cx_upgrades_total = %d", got)
	}
}
