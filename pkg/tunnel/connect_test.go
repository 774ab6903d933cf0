package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/h2ctest"
	"golang.org/x/net/http2"
)

const connectTestTimeout = 10 * time.Second

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	deadline := time.Now().Add(connectTestTimeout)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// readHead reads a request head up to and including the blank line.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\r\n" {
			return b.String(), err
		}
	}
}

func TestOpenH1Connect(t *testing.T) {
	tests := []struct {
		name     string
		response string // everything the upstream writes after the head
		accepted bool
		status   int
		buffered string // Upstream.Buffered when accepted
		body     string // the response body otherwise
	}{
		{"200", "HTTP/1.1 200 OK\r\n\r\nhello", true, 200, "hello", ""},
		{"202", "HTTP/1.1 202 Accepted\r\n\r\n", true, 202, "", ""},
		{"226 with Content-Length ignored", "HTTP/1.1 226 IM Used\r\nContent-Length: 10\r\n\r\n0123456789ab", true, 226, "0123456789ab", ""},
		{"200 with Transfer-Encoding ignored", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nraw bytes", true, 200, "raw bytes", ""},
		{"101 is not a CONNECT success", "HTTP/1.1 101 Switching Protocols\r\n\r\n", false, 101, "", ""},
		{"407", "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\ndeny", false, 407, "", "deny"},
		{"503", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", false, 503, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			heads := make(chan string, 1)
			go func() {
				head, _ := readHead(bufio.NewReader(server))
				heads <- head
				io.WriteString(server, tt.response)
			}()
			req := &http.Request{Method: http.MethodConnect, Host: "foo.lyft.com:80", URL: &url.URL{Host: "foo.lyft.com:80"},
				Header: http.Header{"X-B": {"2"}, "X-A": {"1", "1b"}}}
			ctx, cancel := context.WithTimeout(context.Background(), connectTestTimeout)
			defer cancel()
			up, err := OpenH1Connect(ctx, client, req)
			if err != nil {
				t.Fatal(err)
			}
			const wantHead = "CONNECT foo.lyft.com:80 HTTP/1.1\r\nHost: foo.lyft.com:80\r\nX-A: 1\r\nX-A: 1b\r\nX-B: 2\r\n\r\n"
			if head := <-heads; head != wantHead {
				t.Errorf("request head\n%q\nwant\n%q", head, wantHead)
			}
			if up.Accepted != tt.accepted || up.Response.StatusCode != tt.status || up.Protocol != 1 || up.Conn != client {
				t.Fatalf("accepted %v status %d protocol %d", up.Accepted, up.Response.StatusCode, up.Protocol)
			}
			if tt.accepted {
				if string(up.Buffered) != tt.buffered || up.Response.Body != http.NoBody {
					t.Errorf("buffered %q body %v, want %q and no body", up.Buffered, up.Response.Body, tt.buffered)
				}
				return
			}
			body, _ := io.ReadAll(up.Response.Body)
			if string(body) != tt.body || up.Buffered != nil {
				t.Errorf("body %q buffered %q, want %q", body, up.Buffered, tt.body)
			}
		})
	}
}

func TestOpenH1ConnectFailures(t *testing.T) {
	req := &http.Request{Method: http.MethodConnect, Host: "h:1", URL: &url.URL{Host: "h:1"}, Header: http.Header{}}
	t.Run("closed before answering", func(t *testing.T) {
		client, server := tcpPair(t)
		go func() { readHead(bufio.NewReader(server)); server.Close() }()
		_, err := OpenH1Connect(context.Background(), client, req)
		var re *ResetError
		if !errors.As(err, &re) {
			t.Fatalf("err = %v, want a *ResetError", err)
		}
	})
	t.Run("context ends while waiting", func(t *testing.T) {
		client, server := tcpPair(t)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { readHead(bufio.NewReader(server)); cancel() }()
		_, err := OpenH1Connect(ctx, client, req)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if _, err := client.Write([]byte("x")); err == nil {
			t.Error("the connection is still open")
		}
	})
}

// h2Upstream is an x/net HTTP/2 server with prior knowledge and a client
// transport to it.
type h2Upstream struct {
	addr string
	rt   *http2.Transport
}

func startH2(t *testing.T, handler http.HandlerFunc) *h2Upstream {
	t.Helper()
	u := &h2Upstream{addr: h2ctest.Start(t, handler).Addr, rt: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	t.Cleanup(u.rt.CloseIdleConnections)
	return u
}

// request is a tunnel request to u with the given wire form.
func (u *h2Upstream) request(method, authority, path string) *http.Request {
	return &http.Request{Method: method, Host: authority, URL: &url.URL{Scheme: "http", Host: u.addr, Path: path},
		Header: http.Header{"Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "X-Tunnel": {"yes"}}}
}

// echoHandler records the request it saw, answers status and echoes the
// body until END_STREAM.
func echoHandler(status int, seen chan<- *http.Request) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.WriteHeader(status)
		rc := http.NewResponseController(w)
		rc.Flush()
		buf := make([]byte, 4096)
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
	}
}

func TestOpenH2Connect(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
		status             int
		accept             func(int) bool
		accepted           bool
	}{
		{"connect 200", http.MethodConnect, "", 200, func(s int) bool { return s == 200 }, true},
		{"post 200", http.MethodPost, "/tunnel", 200, func(s int) bool { return s == 200 }, true},
		{"connect 202 exact-200 rule", http.MethodConnect, "", 202, func(s int) bool { return s == 200 }, false},
		{"connect 202 any-2xx rule", http.MethodConnect, "", 202, Is2xx, true},
		{"connect 503", http.MethodConnect, "", 503, Is2xx, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make(chan *http.Request, 1)
			u := startH2(t, echoHandler(tc.status, seen))
			ctx, cancel := context.WithTimeout(context.Background(), connectTestTimeout)
			defer cancel()
			req := u.request(tc.method, "foo.lyft.com:80", tc.path)
			up, err := OpenH2Connect(ctx, u.rt.RoundTrip, req, tc.accept)
			if err != nil {
				t.Fatal(err)
			}
			defer up.Conn.Close()
			r := <-seen
			if r.Method != tc.method || r.Host != "foo.lyft.com:80" || r.Header.Get("X-Tunnel") != "yes" {
				t.Errorf("upstream saw %s %s %v", r.Method, r.Host, r.Header)
			}
			if tc.method == http.MethodPost && r.URL.Path != tc.path {
				t.Errorf("path %q, want %q", r.URL.Path, tc.path)
			}
			if r.ContentLength != -1 || len(r.TransferEncoding) != 0 || r.Header.Get("Content-Length") != "" {
				t.Errorf("framing headers sent: content length %d, %v", r.ContentLength, r.Header)
			}
			if req.Header.Get("Content-Length") != "5" {
				t.Error("the caller's request was modified")
			}
			if up.Accepted != tc.accepted || up.Response.StatusCode != tc.status || up.Protocol != 2 {
				t.Fatalf("accepted %v status %d protocol %d", up.Accepted, up.Response.StatusCode, up.Protocol)
			}
			if _, ok := up.Conn.(*H2Upstream); !ok {
				t.Fatalf("Conn is %T", up.Conn)
			}
			if !up.Accepted {
				return
			}
			// Bytes both ways, then END_STREAM from our side ends the
			// echo, whose END_STREAM reaches us as EOF.
			if _, err := up.Conn.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(up.Conn, got); err != nil || string(got) != "hello" {
				t.Fatalf("read %q, %v", got, err)
			}
			if err := up.Conn.(*H2Upstream).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if rest, err := io.ReadAll(up.Conn); err != nil || len(rest) != 0 {
				t.Fatalf("after END_STREAM: %q, %v", rest, err)
			}
		})
	}
}

func TestOpenH2ConnectAbortAndContext(t *testing.T) {
	t.Run("abort resets the stream", func(t *testing.T) {
		bodyErr := make(chan error, 1)
		u := startH2(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			_, err := io.ReadAll(r.Body)
			bodyErr <- err
		})
		up, err := OpenH2Connect(context.Background(), u.rt.RoundTrip, u.request(http.MethodConnect, "h:1", ""), Is2xx)
		if err != nil || !up.Accepted {
			t.Fatalf("%v, accepted %v", err, up != nil && up.Accepted)
		}
		up.Conn.(Aborter).Abort()
		select {
		case err := <-bodyErr:
			if err == nil {
				t.Error("the upstream saw a clean END_STREAM, want a reset")
			}
		case <-time.After(connectTestTimeout):
			t.Fatal("the upstream never saw the reset")
		}
	})
	t.Run("context ends before the response", func(t *testing.T) {
		release := make(chan struct{})
		u := startH2(t, func(w http.ResponseWriter, r *http.Request) { <-release })
		defer close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := OpenH2Connect(ctx, u.rt.RoundTrip, u.request(http.MethodConnect, "h:1", ""), Is2xx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	})
}
