package tcpproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Upstreams of the tunneling tests, all on loopback: a raw HTTP/1.1
// server (the test scripts each connection after the request head), an
// x/net HTTP/2 server with prior knowledge (h2c), and frameServer
// (h2frames_test.go), an HTTP/2 server scripted frame by frame.

// h2ClusterFor is staticCluster speaking HTTP/2 (explicit_http_config),
// which makes tunnels HTTP/2 CONNECT or POST streams.
func h2ClusterFor(t testing.TB, name, addr string) *clusterv3.Cluster {
	t.Helper()
	c := staticCluster(t, name, addr)
	opts, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	return c
}

// h1Request is what the raw HTTP/1.1 upstream read: the head as it came
// on the wire, parsed, and the connection to go on with.
type h1Request struct {
	head string // request line and headers, CRLFs included
	req  *http.Request
	conn *net.TCPConn
	br   *bufio.Reader // holds what came after the head
}

// respond writes a status line (and extra header lines) with no body
// framing, as a CONNECT answer.
func (r *h1Request) respond(status string, extra ...string) error {
	_, err := io.WriteString(r.conn, "HTTP/1.1 "+status+"\r\n"+strings.Join(extra, "")+"\r\n")
	return err
}

// statOr0 reads a stat that may not have been created yet (the cluster's
// upstream_cx_connect_attempts_exceeded appears on first use).
func (r *rig) statOr0(name string) int64 {
	v, _ := r.st.Get(name)
	return v
}

// serveH1 runs handle for the request head of every connection of a new
// loopback listener. It returns the address and a count of connections.
func serveH1(t testing.TB, handle func(*h1Request)) (string, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	addr := serve(t, func(c *net.TCPConn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
		if err != nil {
			t.Errorf("upstream: bad request head %q: %v", head.String(), err)
			return
		}
		handle(&h1Request{head: head.String(), req: req, conn: c, br: br})
	})
	return addr, &conns
}

// h1Echo accepts a CONNECT with 200 and echoes until the client's FIN,
// then half-closes.
func h1Echo(r *h1Request) {
	if r.respond("200 OK") != nil {
		return
	}
	io.Copy(r.conn, r.br)
	r.conn.CloseWrite()
}

// h1PostEcho accepts a chunked POST with a chunked 200 and echoes the
// body as response chunks; the last request chunk ends the response.
func h1PostEcho(r *h1Request) {
	if r.req.Method != http.MethodPost || len(r.req.TransferEncoding) != 1 || r.req.TransferEncoding[0] != "chunked" {
		r.respond("400 Bad Request")
		return
	}
	if r.respond("200 OK", "Transfer-Encoding: chunked\r\n") != nil {
		return
	}
	cw := httputil.NewChunkedWriter(r.conn) // a chunk per Write
	if _, err := io.Copy(cw, httputil.NewChunkedReader(r.br)); err != nil {
		return
	}
	cw.Close() // "0\r\n"
	io.WriteString(r.conn, "\r\n")
}

// h2Echo answers 200 and echoes the request body until END_STREAM.
func h2Echo(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// readFor reads from r for at most d and returns what arrived: the
// negative checks ("nothing was forwarded yet") need a bounded window.
func readFor(r io.Reader, d time.Duration, setDeadline func(time.Time) error) []byte {
	setDeadline(time.Now().Add(d))
	defer setDeadline(time.Time{})
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	return buf[:n]
}
