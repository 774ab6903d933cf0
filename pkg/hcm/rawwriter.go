package hcm

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hopproxy/hop/pkg/tunnel"
)

// rawWriter answers an upgrade request on the connection itself.
//
// Once a request is an upgrade, whatever follows its headers is payload,
// not an HTTP body, whatever Content-Length or Transfer-Encoding say
// (Envoy's codec works the same way). net/http does not know that: after a
// refusal it would wait to drain the declared body. So the first write
// takes the connection over from net/http, writes the head itself and
// closes the connection when the stream ends. A 101 goes the same way and
// the connection becomes a tunnel.
type rawWriter struct {
	w   http.ResponseWriter // net/http's writer, until hijacked
	hdr http.Header

	down        *tunnel.Downstream // set once hijacked
	bw          *bufio.Writer
	wroteHeader bool
	chunked     bool
	// tunnel: the head written is the one that starts a tunnel (a 101, or
	// a CONNECT's 2xx): no Connection: close and no framing.
	tunnel bool
	err    error
}

func newRawWriter(w http.ResponseWriter) *rawWriter {
	return &rawWriter{w: w, hdr: http.Header{}}
}

func (r *rawWriter) Header() http.Header { return r.hdr }

// rawWriterBuf is the write buffer of a taken-over connection: enough for
// a response head, which is all a tunnel's writer ever writes (a refusal's
// body goes through it too, flushed as it fills). Every CONNECT and
// upgrade allocates one, so it is kept small.
const rawWriterBuf = 1024

// hijack takes the connection over (once).
func (r *rawWriter) hijack() error {
	if r.down != nil || r.err != nil {
		return r.err
	}
	d, err := tunnel.HijackH1(r.w)
	if err != nil {
		r.err = err
		return err
	}
	r.down = d
	r.bw = bufio.NewWriterSize(d.Conn, rawWriterBuf)
	return nil
}

// WriteHeader writes a final response head. The connection closes after the
// response: Connection: close is set, and a body of unknown length is
// chunked so the client sees where it ends.
func (r *rawWriter) WriteHeader(code int) {
	if r.wroteHeader || r.hijack() != nil {
		return
	}
	r.wroteHeader = true
	h := r.hdr
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if !r.tunnel {
		h.Set("Connection", "close")
		if h.Get("Content-Length") == "" && bodyAllowed(code) {
			h.Set("Transfer-Encoding", "chunked")
			r.chunked = true
		}
	}
	r.err = tunnel.WriteResponseHead(r.bw, code, h, r.chunked)
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func (r *rawWriter) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.chunked {
		if len(b) == 0 {
			return 0, nil
		}
		r.bw.WriteString(strconv.FormatInt(int64(len(b)), 16))
		r.bw.WriteString("\r\n")
		n, err := r.bw.Write(b)
		r.bw.WriteString("\r\n")
		return n, err
	}
	return r.bw.Write(b)
}

// Flush sends what is buffered (http.Flusher, for streamed bodies).
func (r *rawWriter) Flush() {
	if r.bw != nil {
		r.bw.Flush()
	}
}

// conn returns the hijacked connection, hijacking now if needed.
func (r *rawWriter) conn() (*tunnel.Downstream, error) {
	if err := r.hijack(); err != nil {
		return nil, err
	}
	return r.down, nil
}

// finish ends a refused or failed upgrade: the response is completed and
// the connection closed. It reports whether it closed a connection.
func (r *rawWriter) finish() bool {
	if r.down == nil {
		return false
	}
	if r.chunked {
		r.bw.WriteString("0\r\n\r\n")
	}
	r.bw.Flush()
	if tc, ok := r.down.Conn.(interface{ CloseWrite() error }); ok {
		// Half-close first so the client reads the whole response before
		// the close, rather than a reset for the payload it sent.
		tc.CloseWrite()
		r.down.Conn.SetReadDeadline(time.Now().Add(time.Second))
		drain(r.down.Conn)
	}
	r.down.Conn.Close()
	return true
}

// drain reads until EOF or the deadline so the close does not reset.
func drain(c net.Conn) {
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}
