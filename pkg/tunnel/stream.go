package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The ends of a tunnel that are HTTP/2 or HTTP/3 streams rather than
// connections. Each is a net.Conn so that Splice and the Tracker treat every
// tunnel alike; addresses are those of the connection below when known, and
// deadlines are not supported (Splice watches idleness with a timer).
//
// Closing an end means "the tunnel is over": Close lets the stream finish
// normally, Abort (Aborter) resets it.

var errNoDeadline = errors.New("tunnel: deadlines are not supported on a stream")

// streamAddrs gives a stream end the addresses of its connection.
type streamAddrs struct{ local, remote net.Addr }

func (a streamAddrs) LocalAddr() net.Addr                { return a.local }
func (a streamAddrs) RemoteAddr() net.Addr               { return a.remote }
func (a streamAddrs) SetDeadline(t time.Time) error      { return errNoDeadline }
func (a streamAddrs) SetReadDeadline(t time.Time) error  { return errNoDeadline }
func (a streamAddrs) SetWriteDeadline(t time.Time) error { return errNoDeadline }

// H2Downstream is the downstream end of a tunnel carried by an HTTP/2 stream
// that hop serves (golang.org/x/net/http2): bytes from the client are the
// request body, bytes to the client are written and flushed as response
// DATA. The stream lives as long as the handler runs, so the handler splices
// on its own goroutine (Tracker.Run) and returns afterwards.
//
// HTTP/2 lets the server end its response while the client keeps sending,
// but the handler API does not: the response ends when the handler returns.
// So, as in Envoy, when the upstream ends first the whole stream ends:
// CloseWrite stops reading the request body (Read then reports EOF), the
// splice finishes, and when the handler returns the server sends END_STREAM
// and resets the request side with NO_ERROR. When the client ends first
// (END_STREAM), its EOF reaches the upstream as a half-close and the
// response keeps flowing until the upstream ends.
type H2Downstream struct {
	streamAddrs
	body io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController

	writeDone atomic.Bool // CloseWrite or Close ran: Read reports EOF
	aborted   atomic.Bool
	closeOnce sync.Once
}

// NewH2Downstream makes the downstream end of r's stream. The response head
// must already be written; every Write is flushed.
func NewH2Downstream(w http.ResponseWriter, r *http.Request) *H2Downstream {
	d := &H2Downstream{body: r.Body, w: w, rc: http.NewResponseController(w)}
	d.remote = addrOf(r.RemoteAddr)
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		d.local = a
	}
	return d
}

func (d *H2Downstream) Read(p []byte) (int, error) {
	if d.writeDone.Load() {
		return 0, io.EOF
	}
	n, err := d.body.Read(p)
	if err != nil && err != io.EOF && d.writeDone.Load() && !d.aborted.Load() {
		err = io.EOF // the body was closed by CloseWrite, not reset
	}
	return n, err
}

func (d *H2Downstream) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if err == nil {
		err = d.rc.Flush()
	}
	return n, err
}

// CloseWrite ends the tunnel from the upstream's side (see the type).
func (d *H2Downstream) CloseWrite() error {
	d.writeDone.Store(true)
	d.closeBody()
	return nil
}

// Close ends the tunnel; the response ends when the handler returns.
func (d *H2Downstream) Close() error {
	d.writeDone.Store(true)
	d.closeBody()
	return nil
}

// Abort resets the stream: an expired deadline makes the HTTP/2 server
// reset it, which also unblocks a Write waiting for flow control.
func (d *H2Downstream) Abort() {
	d.aborted.Store(true)
	now := time.Now()
	d.rc.SetWriteDeadline(now)
	d.rc.SetReadDeadline(now)
	d.Close()
}

// Aborted reports whether the stream was reset (the handler should not
// pretend the response ended cleanly).
func (d *H2Downstream) Aborted() bool { return d.aborted.Load() }

func (d *H2Downstream) closeBody() { d.closeOnce.Do(func() { d.body.Close() }) }

// H2Upstream is the upstream end of a tunnel carried by an HTTP/2 (or
// HTTP/3) client stream: writes go into the request body, reads come from
// the response body. CloseWrite ends the request body (END_STREAM), which
// is a true half-close; Close releases the stream; Abort resets it.
//
// After CloseWrite, Close first waits (at most closeGrace, or until Abort)
// for the HTTP/2 client to be done with the request body, so that the
// END_STREAM it still has to write is not turned into RST_STREAM by the
// release: a tunnel whose both directions ended goes without a reset, as
// with Envoy.
type H2Upstream struct {
	streamAddrs
	pw     *io.PipeWriter
	body   io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once

	sent      chan struct{} // closed when the client closed the request body
	ended     atomic.Bool   // CloseWrite ran
	aborted   chan struct{}
	abortOnce sync.Once
}

// closeGrace bounds Close's wait for a pending END_STREAM: a peer that
// never opens its flow-control window must not keep an ended tunnel alive.
const closeGrace = 30 * time.Second

func newH2Upstream(pw *io.PipeWriter, body io.ReadCloser, cancel context.CancelFunc, sent chan struct{}) *H2Upstream {
	return &H2Upstream{pw: pw, body: body, cancel: cancel, sent: sent, aborted: make(chan struct{})}
}

// Write sends bytes on the request stream.
func (u *H2Upstream) Write(p []byte) (int, error) { return u.pw.Write(p) }

// Read receives bytes from the response stream.
func (u *H2Upstream) Read(p []byte) (int, error) { return u.body.Read(p) }

// CloseWrite ends the request stream.
func (u *H2Upstream) CloseWrite() error {
	u.ended.Store(true)
	return u.pw.Close()
}

// Close ends both directions, once the END_STREAM of an ended request
// went out.
func (u *H2Upstream) Close() error {
	if u.ended.Load() && u.sent != nil {
		t := time.NewTimer(closeGrace)
		select {
		case <-u.sent:
		case <-u.aborted:
		case <-t.C:
		}
		t.Stop()
	}
	u.once.Do(func() {
		u.pw.Close()
		u.body.Close()
		u.cancel()
	})
	return nil
}

// Abort resets the stream, and cuts short a Close waiting for END_STREAM.
func (u *H2Upstream) Abort() {
	u.abortOnce.Do(func() { close(u.aborted) })
	u.pw.CloseWithError(errAborted)
	u.Close()
}

var errAborted = errors.New("tunnel: aborted")

// sentBody tells, by closing sent, that the HTTP/2 client closed the
// request body: it does once it wrote END_STREAM or gave the stream up.
type sentBody struct {
	io.ReadCloser
	sent chan struct{}
	once sync.Once
}

func (b *sentBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { close(b.sent) })
	return err
}

func addrOf(hostport string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", hostport)
	if err != nil {
		return nil
	}
	return a
}

var (
	_ net.Conn = (*H2Downstream)(nil)
	_ Aborter  = (*H2Downstream)(nil)
	_ net.Conn = (*H2Upstream)(nil)
	_ Aborter  = (*H2Upstream)(nil)
)
