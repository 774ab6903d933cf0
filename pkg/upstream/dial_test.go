package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection until the client half-closes.
func echoServer(t *testing.T) string {
	t.Helper()
	return rawServer(t, func(conn net.Conn) {
		io.Copy(conn, conn)
	})
}

func TestDialAndClose(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	addr := echoServer(t)
	c := mustAdd(t, m, staticCluster(t, "dial", addr))

	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if conn.TCP() == nil || conn.TCP().RemoteAddr().String() != addr || conn.HostAddress() != addr {
		t.Fatalf("TCP() = %v, HostAddress() = %q, want a *net.TCPConn to %s", conn.TCP(), conn.HostAddress(), addr)
	}
	wantStats(t, st, "dial", map[string]int64{"upstream_cx_active": 1, "upstream_cx_total": 1, "upstream_rq_total": 0})
	conn.CountRequest()
	conn.CountRequest()
	wantStats(t, st, "dial", map[string]int64{"upstream_rq_total": 1, "upstream_rq_active": 1})

	// Bytes flow through the Conn (ReadFrom/WriteTo delegate to the TCPConn),
	// and CloseWrite half-closes so the echo ends.
	var n int64
	go func() {
		n, _ = io.Copy(conn, stringsReader("ping"))
		conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v; want ping", got, err)
	}
	if n != 4 {
		t.Errorf("copied %d bytes, want 4", n)
	}

	if err := conn.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	conn.CountRequest() // after Close: no effect
	wantStats(t, st, "dial", map[string]int64{
		"upstream_cx_active": 0, "upstream_cx_destroy": 1, "upstream_rq_active": 0, "upstream_rq_total": 1,
	})
	if hs := c.Hosts(); hs[0].CxActive != 0 || hs[0].RqTotal != 1 {
		t.Errorf("Hosts() = %+v", hs)
	}
}

func TestDialConnectFailure(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, staticCluster(t, "dialfail", closedPort(t)))
	_, err := c.Dial(ctx)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.ResetReason != ResetRemoteConnectionFailure {
		t.Fatalf("Dial error = %v, want a remote connection failure", err)
	}
	wantStats(t, st, "dialfail", map[string]int64{"upstream_cx_connect_fail": 1, "upstream_cx_active": 0})
}

func TestDialCancelled(t *testing.T) {
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, staticCluster(t, "cancel", blackhole(t)))
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	_, err := c.Dial(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial error = %v, want context.Canceled", err)
	}
	wantStats(t, st, "cancel", map[string]int64{"upstream_cx_connect_fail": 0, "upstream_cx_active": 0})
}

// blackhole returns a loopback address whose SYNs are dropped, so a connect
// to it hangs: a listener with a backlog of 0 whose one queue slot is taken.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for i := 0; i < 8; i++ {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full: this connect timed out
		}
		t.Cleanup(func() { conn.Close() })
	}
	t.Skip("could not fill the accept queue of a backlog-0 listener")
	return ""
}

func TestConnectTimeout(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "slow", blackhole(t))
	pb.ConnectTimeout = dur(100 * time.Millisecond)
	c := mustAdd(t, m, pb)

	start := time.Now()
	_, err := c.Dial(ctx)
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.Timeout() {
		t.Fatalf("Dial error = %v, want a connect timeout", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Dial took %v, want about connect_timeout (100ms)", elapsed)
	}
	want := "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
	if ce.LocalReplyBody() != want {
		t.Errorf("LocalReplyBody = %q, want %q", ce.LocalReplyBody(), want)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	if _, err := c.RoundTrip(req); !errors.As(err, &ce) || !ce.Timeout() {
		t.Fatalf("RoundTrip error = %v, want a connect timeout", err)
	}
	wantStats(t, st, "slow", map[string]int64{
		"upstream_cx_connect_timeout": 2, "upstream_cx_connect_fail": 2, "upstream_cx_active": 0,
	})
}

func stringsReader(s string) io.Reader { return &onceReader{s: s} }

// onceReader is a plain io.Reader (no WriterTo), so io.Copy goes through
// Conn.ReadFrom.
type onceReader struct{ s string }

func (r *onceReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}
