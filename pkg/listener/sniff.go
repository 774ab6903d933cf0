package listener

import (
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/hopproxy/hop/pkg/tunnel"
)

// peekedConn replays bytes read while sniffing before reading the socket.
type peekedConn struct {
	socketConn
	buf []byte
}

func newPeeked(c socketConn, buf []byte) *peekedConn {
	return &peekedConn{socketConn: c, buf: buf}
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.socketConn.Read(p)
}

// TCP hands the raw TCP connection to tunnel.Splice once the replayed
// bytes are consumed (tunnel.Unwrapper); nil for an internal connection.
func (c *peekedConn) TCP() *net.TCPConn {
	if len(c.buf) > 0 {
		return nil
	}
	tc, _ := c.socketConn.(*net.TCPConn)
	return tc
}

// recorder records what crypto/tls reads and refuses to write.
type recorder struct {
	net.Conn
	got []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.got = append(r.got, p[:n]...)
	return n, err
}

func (r *recorder) Write(p []byte) (int, error) { return 0, errSniffDone }

var errSniffDone = errors.New("listener: sniff done")

// sniffTLS reads the start of a connection as Envoy's tls_inspector does.
// For a TLS ClientHello it returns "tls", the SNI and the ALPN list;
// otherwise "raw_buffer". The returned conn replays every byte read.
func sniffTLS(c socketConn, timeout time.Duration) (net.Conn, string, string, []string) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	first := make([]byte, 1)
	if _, err := c.Read(first); err != nil {
		return newPeeked(c, nil), "raw_buffer", "", nil
	}
	if first[0] != 0x16 { // not a TLS handshake record
		return newPeeked(c, first), "raw_buffer", "", nil
	}
	rec := &recorder{Conn: newPeeked(c, first)}
	var hello *tls.ClientHelloInfo
	tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = h
		return nil, errSniffDone
	}}).Handshake()
	pc := newPeeked(c, rec.got)
	if hello == nil {
		return pc, "raw_buffer", "", nil
	}
	return pc, "tls", hello.ServerName, hello.SupportedProtos
}

var _ tunnel.Unwrapper = (*peekedConn)(nil)
