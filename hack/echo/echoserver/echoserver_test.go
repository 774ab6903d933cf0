package echoserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tracked counts handler calls in flight, so a test can wait for hijacked
// WebSocket handlers (which httptest.Server.Close does not wait for).
type tracked struct {
	h  http.Handler
	wg sync.WaitGroup
}

func (t *tracked) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.wg.Add(1)
	defer t.wg.Done()
	t.h.ServeHTTP(w, r)
}

// startServer runs New() on loopback and, at cleanup, waits (bounded) for
// every handler to return.
func startServer(t *testing.T) *httptest.Server {
	t.Helper()
	th := &tracked{h: New()}
	srv := httptest.NewServer(th)
	t.Cleanup(func() {
		srv.Close()
		done := make(chan struct{})
		go func() { th.wg.Wait(); close(done) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		select {
		case <-done:
		case <-ctx.Done():
			t.Errorf("echo handlers still running after the clients closed")
		}
	})
	return srv
}

func dial(t *testing.T, srv *httptest.Server, path string, hdr http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + path
	c, resp, err := websocket.DefaultDialer.DialContext(ctx, url, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c, resp
}

// closeConn does the close handshake: send close, read until the echo
// server's close comes back, then close the socket.
func closeConn(t *testing.T, c *websocket.Conn) {
	t.Helper()
	defer c.Close()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("write close: %v", err)
	}
	for {
		if _, _, err := c.NextReader(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Errorf("after close: got %v, want the close echoed with code 1000", err)
			}
			return
		}
	}
}

func TestWebSocketEchoesMessagesUnchanged(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes, many copy buffers
	tests := []struct {
		name    string
		mt      int
		payload []byte
	}{
		{"text", websocket.TextMessage, []byte("hello, hop")},
		{"binary", websocket.BinaryMessage, []byte{0, 1, 2, 0xff, 0xfe}},
		{"empty text", websocket.TextMessage, nil},
		{"empty binary", websocket.BinaryMessage, []byte{}},
		{"large binary", websocket.BinaryMessage, big},
	}
	srv := startServer(t)
	c, _ := dial(t, srv, "/any/path?x=1", nil)
	defer closeConn(t, c)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.WriteMessage(tt.mt, tt.payload); err != nil {
				t.Fatalf("write: %v", err)
			}
			mt, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if mt != tt.mt {
				t.Errorf("message type = %d, want %d", mt, tt.mt)
			}
			if !bytes.Equal(got, tt.payload) {
				t.Errorf("echo differs: got %d bytes, want %d", len(got), len(tt.payload))
			}
		})
	}
}

func TestWebSocketAnswersPing(t *testing.T) {
	srv := startServer(t)
	c, _ := dial(t, srv, "/", nil)
	defer closeConn(t, c)
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// A data message after the ping: by the time it is echoed, the pong
	// (sent first) has been handled by the read loop.
	if err := c.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatalf("read: %v", err)
	}
	select {
	case got := <-pong:
		if got != "p1" {
			t.Errorf("pong payload = %q, want %q", got, "p1")
		}
	default:
		t.Errorf("no pong before the echoed message")
	}
}

func TestWebSocketAcceptsFirstSubprotocol(t *testing.T) {
	srv := startServer(t)
	hdr := http.Header{"Sec-Websocket-Protocol": {"chat.v2, chat.v1"}}
	c, resp := dial(t, srv, "/", hdr)
	defer closeConn(t, c)
	if got := c.Subprotocol(); got != "chat.v2" {
		t.Errorf("subprotocol = %q, want %q", got, "chat.v2")
	}
	if got := resp.StatusCode; got != http.StatusSwitchingProtocols {
		t.Errorf("status = %d, want 101", got)
	}
}

func TestPlainRequestIsDescribed(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/a/b?q=1&r=2", strings.NewReader("twelve bytes"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "example.test:8443"
	req.Header.Set("X-Zeta", "last")
	req.Header.Add("X-Alpha", "one")
	req.Header.Add("X-Alpha", "two")
	req.Header.Set("User-Agent", "echo-test")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}

	// The remote line carries an ephemeral port; check it separately.
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if rest, ok := strings.CutPrefix(l, "remote: "); ok {
			if host, _, err := net.SplitHostPort(rest); err != nil || host != "127.0.0.1" {
				t.Errorf("remote line = %q, want 127.0.0.1:<port>", l)
			}
			continue
		}
		lines = append(lines, l)
	}
	want := []string{
		"hop echo upstream",
		"method: POST",
		"path: /a/b",
		"query: q=1&r=2",
		"proto: HTTP/1.1",
		"host: example.test:8443",
		"headers:",
		"  Accept-Encoding: gzip",
		"  Content-Length: 12",
		"  User-Agent: echo-test",
		"  X-Alpha: one",
		"  X-Alpha: two",
		"  X-Zeta: last",
		"body: 12 bytes",
	}
	if got, w := strings.Join(lines, "\n"), strings.Join(want, "\n"); got != w {
		t.Errorf("description:\n%s\nwant:\n%s", got, w)
	}
}

func TestServeTCPEcho(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ServeTCPEcho(l) }()

	// Half-close: the echo returns everything, then EOF.
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	payload := bytes.Repeat([]byte("tunnel "), 10000)
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		writeErr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("echo: got %d bytes, want %d identical bytes", len(got), len(payload))
	}

	// A connection still open when the listener closes is closed for us.
	open, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	open.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := open.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	if _, err := io.ReadFull(open, one[:]); err != nil { // accepted and echoing
		t.Fatalf("read: %v", err)
	}
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeTCPEcho after Close = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("ServeTCPEcho did not return after its listener closed")
	}
	if n, err := open.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("open conn after shutdown: read (%d, %v), want EOF", n, err)
	}
}
