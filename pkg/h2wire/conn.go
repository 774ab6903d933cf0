// Package h2wire watches the HTTP/2 frames that cross a connection and
// does the few things an HTTP/2 library does not let its user do per
// connection.
//
// A Conn wraps the net.Conn that golang.org/x/net/http2 serves (or, on the
// client side, dials). It follows the 9-byte frame headers of both
// directions with a small state machine that keeps its place across Read
// and Write boundaries and never allocates per frame; payloads are skipped
// without being looked at, except the few bytes of RST_STREAM, GOAWAY and
// SETTINGS frames it needs. On the way it:
//
//   - counts frames for Envoy's codec stats (http2.rx_reset, tx_reset,
//     goaway_sent, stream_refused_errors) — only what frame headers and
//     those few payload bytes show honestly;
//   - on the server side, optionally removes SETTINGS_ENABLE_CONNECT_PROTOCOL
//     from the first SETTINGS frame the server writes, fixing the frame's
//     length (x/net enables RFC 8441 for the whole process; a connection
//     manager with allow_connect false must not advertise it);
//   - sends GOAWAY(last stream id, PROTOCOL_ERROR) at the next frame
//     boundary and closes the connection (Abort): Envoy's answer to a
//     connection-level protocol error that x/net would only treat as a
//     stream error;
//   - rewrites the error code of a stream reset a handler asked for (see
//     MarkProtocolErrorReset);
//   - on the client side, reports whether the peer's first SETTINGS frame
//     enabled extended CONNECT.
//
// The sub-package xconnect turns x/net's RFC 8441 support on for the
// process.
package h2wire

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hopproxy/hop/pkg/stats"
)

// Counters receive the codec stats a Conn observes; a nil counter is not
// counted. They are shared by every connection of a scope.
type Counters struct {
	RxReset       *stats.Counter // RST_STREAM received
	TxReset       *stats.Counter // RST_STREAM sent
	GoAwaySent    *stats.Counter // GOAWAY with NO_ERROR sent (Envoy counts its own goAway, not protocol-error GOAWAYs)
	StreamRefused *stats.Counter // RST_STREAM(REFUSED_STREAM) sent: a stream over the concurrency limit
}

// Options configure a Conn.
type Options struct {
	Counters Counters
	// StripExtendedConnect (server side) removes
	// SETTINGS_ENABLE_CONNECT_PROTOCOL from the first SETTINGS frame written.
	StripExtendedConnect bool
	// OnFirstWrite, when set, runs once, right before the first bytes are
	// written. A server knows then that the HTTP/2 library has taken the
	// connection on (x/net writes its SETTINGS first thing). It runs with
	// the write side locked: it must not block nor use the Conn.
	OnFirstWrite func()
}

// abortGrace bounds how long Abort waits for the frame being written to
// end before it closes the connection without a GOAWAY, and how long the
// GOAWAY write itself may take.
const abortGrace = time.Second

// Conn is a net.Conn whose HTTP/2 frames are watched. Read must be called
// by one goroutine at a time (as any HTTP/2 library does); Write, Abort,
// MarkProtocolErrorReset and Close are safe from any goroutine.
type Conn struct {
	net.Conn
	o      Options
	client bool

	// Read side: owned by the reading goroutine.
	rd           scanner
	lastStream   atomic.Uint32 // highest client stream whose HEADERS were read (server side)
	peerSettings chan struct{} // closed after the peer's first SETTINGS (client side)
	peerSeen     bool
	peerXConnect atomic.Bool

	// Write side.
	wmu       sync.Mutex // guards the fields below; Abort only tries it
	wr        scanner
	started   bool
	strip     bool   // the first SETTINGS is still to be written, stripped
	stripping bool   // the SETTINGS being written is held in held
	held      []byte // entries kept of the SETTINGS frame being stripped
	rewrite   bool   // the RST_STREAM being written gets its code checked
	out       []byte // output of a Write that edits

	aborted     atomic.Bool  // Abort was called
	goAwayWant  atomic.Bool  // Abort's GOAWAY waits for a frame boundary
	rstRewrites atomic.Int32 // resets to send as PROTOCOL_ERROR (MarkProtocolErrorReset)
	cxRewrites  atomic.Int32 // resets to send as CONNECT_ERROR (MarkConnectErrorReset)
	closed      atomic.Bool  // Close (or Abort) closed the connection: writes fail
}

// Server wraps the server side of an HTTP/2 connection. The client's
// preface is expected first on the read side.
func Server(c net.Conn, o Options) *Conn {
	w := &Conn{Conn: c, o: o, strip: o.StripExtendedConnect}
	w.rd.skip = len(ClientPreface)
	return w
}

// Client wraps the client side of an HTTP/2 connection. The preface is
// expected first on the write side.
func Client(c net.Conn, o Options) *Conn {
	w := &Conn{Conn: c, o: o, client: true, peerSettings: make(chan struct{})}
	w.wr.skip = len(ClientPreface)
	return w
}

// Outer is the connection to hand to the HTTP/2 library: c itself, or,
// when the wrapped connection is TLS, c with a ConnectionState method, so
// that the library still sees the TLS state (x/net checks for it by
// interface, and would take a cleartext connection with such a method for
// TLS of no version).
func (c *Conn) Outer() net.Conn {
	if _, ok := c.Conn.(connectionStater); ok {
		return tlsConn{c}
	}
	return c
}

type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

type tlsConn struct{ *Conn }

func (t tlsConn) ConnectionState() tls.ConnectionState {
	return t.Conn.Conn.(connectionStater).ConnectionState()
}

// LastStreamID is the highest stream id of the client's HEADERS frames
// read so far (server side).
func (c *Conn) LastStreamID() uint32 { return c.lastStream.Load() }

// PeerSettings is closed once the peer's first SETTINGS frame has been
// read (client side; nil on the server side).
func (c *Conn) PeerSettings() <-chan struct{} { return c.peerSettings }

// PeerExtendedConnect reports whether the peer's first SETTINGS frame set
// SETTINGS_ENABLE_CONNECT_PROTOCOL to 1 (client side). It is false until
// PeerSettings is closed.
func (c *Conn) PeerExtendedConnect() bool { return c.peerXConnect.Load() }

// Read reads from the connection and follows the frames read.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.scanRead(p[:n])
	}
	return n, err
}

func (c *Conn) scanRead(p []byte) {
	s := &c.rd
	for {
		n, ev := s.next(p)
		p = p[n:]
		switch ev {
		case evNone:
			return
		case evHeader:
			switch s.typ {
			case typeHeaders:
				if !c.client && s.sid%2 == 1 && s.sid > c.lastStream.Load() {
					c.lastStream.Store(s.sid)
				}
			case typeRSTStream:
				inc(c.o.Counters.RxReset)
			case typeSettings:
				s.settings = c.client && !c.peerSeen && s.flags&flagAck == 0
			}
		case evSetting:
			if id, v := s.entry(); id == SettingEnableConnectProtocol {
				c.peerXConnect.Store(v == 1)
			}
		case evEnd:
			if s.typ == typeSettings && s.settings {
				c.peerSeen = true
				close(c.peerSettings)
			}
		}
	}
}

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// MarkProtocolErrorReset makes the next RST_STREAM with INTERNAL_ERROR
// written go out with PROTOCOL_ERROR instead. x/net answers a handler that
// panics with http.ErrAbortHandler with INTERNAL_ERROR; a handler that
// aborts a stream because the request was malformed (Envoy's stream error
// on an invalid HTTP message) calls this first. Two handlers aborting at
// once may swap codes between their streams; the count stays right.
func (c *Conn) MarkProtocolErrorReset() { c.rstRewrites.Add(1) }

// MarkConnectErrorReset is MarkProtocolErrorReset for CONNECT_ERROR: a
// handler whose CONNECT (or upgrade) failed to reach its upstream, and
// which aborts the stream after its 503, calls it first, as Envoy resets
// such a stream with CONNECT_ERROR (RFC 9113 §8.5). It is served before
// any pending PROTOCOL_ERROR rewrite, with the same caveat.
func (c *Conn) MarkConnectErrorReset() { c.cxRewrites.Add(1) }

// pendingRewrites is how many INTERNAL_ERROR resets are to be rewritten.
func (c *Conn) pendingRewrites() bool { return c.rstRewrites.Load() > 0 || c.cxRewrites.Load() > 0 }

// Abort sends GOAWAY(last stream id, PROTOCOL_ERROR) and closes the
// connection: at once when no Write is in progress and the writes so far
// end on a frame boundary, otherwise when the frame being written ends
// (the Write that ends it sends the GOAWAY, the rest of its bytes are
// dropped), and without the GOAWAY when that has not happened within
// abortGrace. Abort never waits for a Write. Writes after the GOAWAY fail
// with net.ErrClosed.
func (c *Conn) Abort() {
	if c.closed.Load() || !c.aborted.CompareAndSwap(false, true) {
		return
	}
	c.goAwayWant.Store(true)
	time.AfterFunc(abortGrace, func() { c.Close() })
	if c.wmu.TryLock() {
		c.goAwayAtBoundaryLocked()
		c.wmu.Unlock()
	}
}

// goAwayAtBoundaryLocked sends Abort's GOAWAY and closes when one is
// wanted and the writes end on a frame boundary.
func (c *Conn) goAwayAtBoundaryLocked() {
	if !c.goAwayWant.Load() || c.closed.Load() || !c.wr.atBoundary() || c.stripping {
		return
	}
	c.out = appendGoAway(c.out[:0], c.lastStream.Load(), codeProtocolError)
	c.Conn.SetWriteDeadline(time.Now().Add(abortGrace))
	c.Conn.Write(c.out)
	c.Close()
}

// Close closes the connection. It does not wait for a Write in progress.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func appendGoAway(b []byte, lastStream, code uint32) []byte {
	var f [frameHeaderLen + 8]byte
	putHeader(f[:], 8, typeGoAway, 0, 0)
	f[9], f[10], f[11], f[12] = byte(lastStream>>24)&0x7f, byte(lastStream>>16), byte(lastStream>>8), byte(lastStream)
	f[13], f[14], f[15], f[16] = byte(code>>24), byte(code>>16), byte(code>>8), byte(code)
	return append(b, f[:]...)
}
