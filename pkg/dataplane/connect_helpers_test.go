package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/h2ctest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// connectCluster is a STATIC cluster on 127.0.0.1:port; h2 makes it speak
// HTTP/2 (prior knowledge).
func connectCluster(name string, port int, h2 bool) string {
	proto := ""
	if h2 {
		proto = `"typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {}}}},`
	}
	return fmt.Sprintf(`{"name": %q, "type": "STATIC", "connect_timeout": "1s", %s "load_assignment": {"cluster_name": %q, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}}}}]}]}}`, name, proto, name, port)
}

// hcmListener is a listener named l on addr (127.0.0.1 when empty) whose
// HTTP connection manager (stat prefix t, codec AUTO, extended CONNECT
// allowed) has the given extra fields, virtual hosts and router config.
// A last virtual host "*" answers GET / with 200 "ok" (getOK).
func hcmListener(addr, hcmExtra, vhosts, routerExtra string) string {
	if addr == "" {
		addr = "127.0.0.1"
	}
	if hcmExtra != "" {
		hcmExtra += ","
	}
	if vhosts != "" {
		vhosts += ","
	}
	return fmt.Sprintf(`{
   "name": "l",
   "address": {"socket_address": {"address": %q, "port_value": 0}},
   "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "stat_prefix": "t",
    "codec_type": "AUTO",
    "http2_protocol_options": {"allow_connect": true},
    %s
    "route_config": {"name": "rc", "virtual_hosts": [%s
     {"name": "any", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}
    ]},
    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" %s}}]
   }}]}]
  }`, addr, hcmExtra, vhosts, routerExtra)
}

// bootstrapJSON puts listeners and clusters together.
func bootstrapJSON(listeners []string, clusters ...string) string {
	return fmt.Sprintf(`{"static_resources": {"listeners": [%s], "clusters": [%s]}}`,
		strings.Join(listeners, ","), strings.Join(clusters, ","))
}

// vhost is one virtual host with one route (JSON of the route's match and
// action).
func vhost(name, domain, route string) string {
	return fmt.Sprintf(`{"name": %q, "domains": [%q], "routes": [%s]}`, name, domain, route)
}

// readHead reads a request or response head on c as sent: the first line
// and the header fields, without interpreting any of them.
func (c *rawConn) readHead() (string, http.Header) {
	c.t.Helper()
	tp := textproto.NewReader(c.br)
	line, err := tp.ReadLine()
	if err != nil {
		c.t.Fatalf("read head: %v", err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		c.t.Fatalf("read head fields: %v", err)
	}
	return line, http.Header(h)
}

// expectQuiet checks that nothing arrives on c for a short while: the
// only way to see that bytes are held back. It cannot fail when hop is
// right; a hop that forwards too early is caught by it.
func (c *rawConn) expectQuiet(d time.Duration) {
	c.t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.br.Peek(1)
	if err == nil || !isTimeout(err) {
		c.t.Fatalf("expected nothing, got %q, %v", b, err)
	}
	c.Conn.SetReadDeadline(time.Now().Add(defaultTestTimeout))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// h2ConnectUpstream is an h2c server (x/net, extended CONNECT enabled
// through pkg/h2wire/xconnect, which the data plane links in) that answers
// CONNECT streams, plain or extended, with status(r) and, for a 2xx,
// echoes the stream; it records the requests.
type h2ConnectUpstream struct {
	port   int
	status func(*http.Request) int
	mu     sync.Mutex
	seen   []*http.Request
}

// answer is an h2ConnectUpstream status function that always says status.
func answer(status int) func(*http.Request) int {
	return func(*http.Request) int { return status }
}

func startH2ConnectUpstream(t *testing.T, status func(*http.Request) int) *h2ConnectUpstream {
	t.Helper()
	u := &h2ConnectUpstream{status: status}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(r.Context()))
		u.mu.Unlock()
		st := u.status(r)
		w.WriteHeader(st)
		w.(http.Flusher).Flush()
		if st/100 != 2 {
			io.WriteString(w, "refused by upstream")
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	u.port = h2ctest.Start(t, h).Port()
	return u
}

func (u *h2ConnectUpstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.seen...)
}

// h2Client is a frame-level HTTP/2 client (prior knowledge) for what a
// library client cannot send or show: header-only CONNECTs, malformed
// pseudo-headers, END_STREAM and RST_STREAM as they are on the wire.
type h2Client struct {
	t   *testing.T
	c   net.Conn
	bw  *bufio.Writer // frames go out when a method returns
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	t.Cleanup(func() { c.Close() })
	h := &h2Client{t: t, c: c, bw: bufio.NewWriter(c)}
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.buf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// A large connection window so that echoes are never held back.
	h.fr.WriteWindowUpdate(0, 1<<30)
	h.flush()
	return h
}

func (h *h2Client) flush() {
	h.t.Helper()
	if err := h.bw.Flush(); err != nil {
		h.t.Fatal(err)
	}
}

// connect sends a plain CONNECT for authority on stream, with payload as
// DATA in the same write when not empty; END_STREAM goes on the last
// frame when end.
func (h *h2Client) connect(stream uint32, authority, payload string, end bool) {
	h.t.Helper()
	h.writeHeaders(stream, end && payload == "", ":method", "CONNECT", ":authority", authority)
	if payload != "" {
		h.fr.WriteData(stream, end, []byte(payload))
	}
	h.flush()
}

// headers sends a HEADERS frame with the fields given as name, value
// pairs (pseudo-headers first).
func (h *h2Client) headers(stream uint32, endStream bool, kv ...string) {
	h.t.Helper()
	h.writeHeaders(stream, endStream, kv...)
	h.flush()
}

func (h *h2Client) writeHeaders(stream uint32, endStream bool, kv ...string) {
	h.t.Helper()
	h.buf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: h.buf.Bytes(), EndStream: endStream, EndHeaders: true})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *h2Client) data(stream uint32, endStream bool, p string) {
	h.t.Helper()
	if err := h.fr.WriteData(stream, endStream, []byte(p)); err != nil {
		h.t.Fatal(err)
	}
	h.flush()
}

// sync sends a PING and waits for its ACK: once it is back, the server
// has processed every frame sent before it (HTTP/2 servers handle a
// connection's frames in order). Events read meanwhile are dropped.
func (h *h2Client) sync() {
	h.t.Helper()
	if err := h.fr.WritePing(false, [8]byte{'s', 'y', 'n', 'c'}); err != nil {
		h.t.Fatal(err)
	}
	h.flush()
	for {
		switch ev := h.next(); ev.kind {
		case "pingack":
			return
		case "eof", "goaway":
			h.t.Fatalf("%s (%v) before the PING ACK", ev.kind, ev.code)
		}
	}
}

// h2Event is what happened on the connection, as the test cares.
type h2Event struct {
	kind      string // "headers", "data", "rst", "goaway", "pingack", "eof"
	stream    uint32
	status    int
	header    http.Header
	data      string
	endStream bool
	code      http2.ErrCode
}

// next returns the next event, answering SETTINGS and PING on the way
// and giving back the stream window of the DATA it read.
func (h *h2Client) next() h2Event {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return h2Event{kind: "eof"}
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
				h.flush()
			}
		case *http2.PingFrame:
			if f.IsAck() {
				return h2Event{kind: "pingack"}
			}
			h.fr.WritePing(true, f.Data)
			h.flush()
		case *http2.MetaHeadersFrame:
			ev := h2Event{kind: "headers", stream: f.StreamID, header: http.Header{}, endStream: f.StreamEnded()}
			for _, hf := range f.Fields {
				if hf.Name == ":status" {
					ev.status, _ = strconv.Atoi(hf.Value)
					continue
				}
				ev.header.Add(hf.Name, hf.Value)
			}
			return ev
		case *http2.DataFrame:
			if n := len(f.Data()); n > 0 {
				h.fr.WriteWindowUpdate(f.StreamID, uint32(n))
				h.flush()
			}
			return h2Event{kind: "data", stream: f.StreamID, data: string(f.Data()), endStream: f.StreamEnded()}
		case *http2.RSTStreamFrame:
			return h2Event{kind: "rst", stream: f.StreamID, code: f.ErrCode}
		case *http2.GoAwayFrame:
			return h2Event{kind: "goaway", code: f.ErrCode}
		}
	}
}

// response reads events until the response head of stream.
func (h *h2Client) response(stream uint32) h2Event {
	h.t.Helper()
	for {
		ev := h.next()
		switch {
		case ev.kind == "eof" || ev.kind == "goaway":
			h.t.Fatalf("stream %d: %s (%v) before the response", stream, ev.kind, ev.code)
		case ev.stream != stream:
			continue
		case ev.kind == "headers":
			return ev
		default:
			h.t.Fatalf("stream %d: %s before the response head", stream, ev.kind)
		}
	}
}

// readBody reads stream's DATA until want bytes arrived, or END_STREAM
// when want is negative; it returns the bytes and how the stream ended so
// far ("", "end", "rst:<code>").
func (h *h2Client) readBody(stream uint32, want int) (string, string) {
	h.t.Helper()
	var b strings.Builder
	for want < 0 || b.Len() < want {
		ev := h.next()
		if ev.kind == "eof" {
			return b.String(), "eof"
		}
		if ev.stream != stream {
			continue
		}
		switch ev.kind {
		case "data":
			b.WriteString(ev.data)
			if ev.endStream {
				return b.String(), "end"
			}
		case "headers":
			if ev.endStream {
				return b.String(), "end"
			}
		case "rst":
			return b.String(), "rst:" + ev.code.String()
		}
	}
	return b.String(), ""
}

// h2cConn is one HTTP/2 client connection (prior knowledge) to addr:
// every request on it is a stream of that connection.
func h2cConn(t *testing.T, addr string) *http2.ClientConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// tunnelRoundTrip opens a plain CONNECT to authority through tr, sends n
// random bytes, half-closes, and checks they all come back before the
// tunnel ends. It reports instead of failing, for use from goroutines.
func tunnelRoundTrip(tr http.RoundTripper, authority string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Scheme: "http", Host: authority},
		Host:   authority,
		Header: http.Header{},
		Body:   pr,
	}).WithContext(ctx)
	res, err := tr.RoundTrip(req)
	if err != nil {
		pw.Close()
		return fmt.Errorf("CONNECT %s: %w", authority, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		pw.Close()
		return fmt.Errorf("CONNECT %s: status %d", authority, res.StatusCode)
	}
	payload := make([]byte, n)
	rand.Read(payload)
	go func() {
		pw.Write(payload)
		pw.Close()
	}()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("CONNECT %s: read: %w", authority, err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("CONNECT %s: %d bytes back, not the %d sent", authority, len(got), n)
	}
	return nil
}
