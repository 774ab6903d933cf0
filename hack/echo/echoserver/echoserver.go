// Package echoserver is the upstream that hop's developer tools and tests put
// behind the proxy: one HTTP handler that echoes WebSocket messages and
// describes plain HTTP requests, and a raw TCP echo for tunnel tests.
//
// The handler answers a WebSocket upgrade at any path by echoing every text
// and binary message back unchanged, streamed frame by frame so a message of
// any size costs a bounded buffer. Any other request gets a short text/plain
// description of what arrived (method, path, Host, headers sorted, body size),
// which shows what a proxy hop added or rewrote on the way.
//
// It is meant for loopback use: it accepts any Origin.
package echoserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
)

const (
	// copyBufferSize bounds the memory one echo in progress holds.
	copyBufferSize = 32 << 10
	// maxDescribedBody is how much of a plain request body is read and counted.
	maxDescribedBody = 1 << 20
)

// handler serves both faces of the echo upstream. It holds no per-request
// state; the buffer pools are shared and safe for concurrent use.
type handler struct {
	upgrader websocket.Upgrader
	copyBufs sync.Pool // *[]byte of copyBufferSize, for streaming a message back
}

// New returns the echo handler. Each call returns an independent handler.
func New() http.Handler {
	h := &handler{
		copyBufs: sync.Pool{New: func() any {
			b := make([]byte, copyBufferSize)
			return &b
		}},
	}
	h.upgrader = websocket.Upgrader{
		// ReadBufferSize 0 reuses the 4 KiB reader net/http hijacks to us.
		// Write buffers come from a pool so an idle connection holds none.
		WriteBufferSize: copyBufferSize,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if websocket.IsWebSocketUpgrade(r) {
		h.serveWebSocket(w, r)
		return
	}
	describe(w, r)
}

// serveWebSocket upgrades and echoes until the peer closes or an I/O error
// ends the connection. Ping and close frames get gorilla's default replies
// (pong, and a close echoed back).
func (h *handler) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	var respHeader http.Header
	if protos := websocket.Subprotocols(r); len(protos) > 0 {
		// Accept whatever the client offered first, so clients that insist
		// on a subprotocol can still be pointed at the echo.
		respHeader = http.Header{"Sec-Websocket-Protocol": {protos[0]}}
	}
	conn, err := h.upgrader.Upgrade(w, r, respHeader)
	if err != nil {
		return // Upgrade has already answered the client with an error status.
	}
	defer conn.Close()

	bp := h.copyBufs.Get().(*[]byte)
	defer h.copyBufs.Put(bp)
	for {
		if err := echoMessage(conn, *bp); err != nil {
			return
		}
	}
}

// echoMessage copies one incoming message back to the peer with the same
// message type, streaming it through buf.
func echoMessage(conn *websocket.Conn, buf []byte) error {
	mt, rd, err := conn.NextReader()
	if err != nil {
		return err
	}
	wr, err := conn.NextWriter(mt)
	if err != nil {
		return err
	}
	// Hide wr's ReadFrom so the copy goes through buf in bounded chunks.
	if _, err := io.CopyBuffer(struct{ io.Writer }{wr}, rd, buf); err != nil {
		wr.Close()
		return err
	}
	return wr.Close()
}

// describe writes a text/plain description of r.
func describe(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxDescribedBody+1))

	var b strings.Builder
	fmt.Fprintf(&b, "hop echo upstream\n")
	fmt.Fprintf(&b, "method: %s\n", r.Method)
	fmt.Fprintf(&b, "path: %s\n", r.URL.Path)
	if r.URL.RawQuery != "" {
		fmt.Fprintf(&b, "query: %s\n", r.URL.RawQuery)
	}
	fmt.Fprintf(&b, "proto: %s\n", r.Proto)
	fmt.Fprintf(&b, "host: %s\n", r.Host)
	fmt.Fprintf(&b, "remote: %s\n", r.RemoteAddr)
	fmt.Fprintf(&b, "headers:\n")
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, v)
		}
	}
	switch {
	case err != nil:
		fmt.Fprintf(&b, "body: %d bytes, then error: %v\n", n, err)
	case n > maxDescribedBody:
		fmt.Fprintf(&b, "body: more than %d bytes\n", maxDescribedBody)
	default:
		fmt.Fprintf(&b, "body: %d bytes\n", n)
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, b.String())
}

// ServeTCPEcho accepts connections on l and writes every byte it reads back
// to the same connection. When a peer half-closes, the echo finishes and
// half-closes in turn, so tunnel tests can check that CloseWrite travels
// through a proxy.
//
// It returns when l is closed (nil) or Accept fails (the error). Before
// returning it closes the connections still open and waits for their
// goroutines, so a caller that closes l leaks nothing.
func ServeTCPEcho(l net.Listener) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	var acceptErr error
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				acceptErr = fmt.Errorf("echoserver: accept: %w", err)
			}
			break
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			echoTCP(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return acceptErr
}

// echoTCP copies c to itself until EOF, half-closes, and closes.
func echoTCP(c net.Conn) {
	defer c.Close()
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
