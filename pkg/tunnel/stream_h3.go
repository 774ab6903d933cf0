package tunnel

import (
	"net/http"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP/3 error codes (RFC 9114 §8.1) used when a tunnel stream ends.
const (
	h3NoError          quic.StreamErrorCode = 0x100
	h3RequestCancelled quic.StreamErrorCode = 0x10c
)

// H3Downstream is the downstream end of a tunnel carried by an HTTP/3
// stream that hop serves (quic-go). The handler takes the stream over once
// the response head is sent (http3.HTTPStreamer), so the tunnel does not
// need the handler's goroutine. QUIC streams half-close for real:
// CloseWrite sends FIN and the client may go on sending.
type H3Downstream struct {
	streamAddrs
	str  *http3.Stream
	once sync.Once
}

// NewH3Downstream sends the response head already set on w and takes r's
// stream over.
func NewH3Downstream(w http.ResponseWriter, r *http.Request) (*H3Downstream, error) {
	hs, ok := w.(http3.HTTPStreamer)
	if !ok {
		return nil, errNotH3
	}
	str, err := hs.HTTPStream()
	if err != nil {
		return nil, err
	}
	d := &H3Downstream{str: str}
	d.remote = addrOf(r.RemoteAddr)
	return d, nil
}

func (d *H3Downstream) Read(p []byte) (int, error)  { return d.str.Read(p) }
func (d *H3Downstream) Write(p []byte) (int, error) { return d.str.Write(p) }

// CloseWrite ends the response stream (FIN).
func (d *H3Downstream) CloseWrite() error { return d.str.Close() }

// Close ends the stream: FIN if not sent yet, and no more reading.
func (d *H3Downstream) Close() error {
	d.once.Do(func() {
		d.str.Close()
		d.str.CancelRead(h3NoError)
	})
	return nil
}

// Abort resets both directions of the stream.
func (d *H3Downstream) Abort() {
	d.once.Do(func() {
		d.str.CancelRead(h3RequestCancelled)
		d.str.CancelWrite(h3RequestCancelled)
	})
}

type errString string

func (e errString) Error() string { return string(e) }

const errNotH3 = errString("tunnel: the response writer is not an HTTP/3 stream")

var _ Aborter = (*H3Downstream)(nil)
