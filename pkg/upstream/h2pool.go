package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/net/http2"

	"github.com/hopproxy/hop/pkg/h2wire"
)

// dialCapacity is how many requests may wait for one connection being
// established before another is started, when max_concurrent_streams does
// not say: x/net's stream limit until the server's SETTINGS arrive.
const dialCapacity = 100

// maxH2Attempts bounds how often one request looks for a connection
// again after a new connection turned out unable to take it (for example
// the server sent GOAWAY at once).
const maxH2Attempts = 3

// errNegotiatedH1 reports that auto_config's ALPN chose HTTP/1.1 for the
// connection a request waited for; the request goes to the HTTP/1.1 pool.
var errNegotiatedH1 = errors.New("upstream: ALPN negotiated http/1.1")

// h2Pool is one host's HTTP/2 connections. Each connection multiplexes
// many streams (x/net/http2's ClientConn); a request takes a stream on the
// oldest connection with room (fewer open streams than
// max_concurrent_streams and than the server's
// SETTINGS_MAX_CONCURRENT_STREAMS), else joins a connection being
// established, else starts one, as Envoy's pool does. Connections are
// dialled through Cluster.connect, so they count like HTTP/1.1 ones, and
// closed by x/net after idle_timeout.
type h2Pool struct {
	// Immutable after newH2Pool.
	c *Cluster
	h *host
	t *http2.Transport // builds ClientConns with the cluster's settings; its ConnPool is the h2Pool

	mu    sync.Mutex
	conns []*h2Conn // open connections, oldest first
	dials []*h2Dial // connections being established
}

// h2Conn is one pooled HTTP/2 connection. The pool keeps its own count of
// streams rather than asking ClientConn.State, which takes x/net's write
// lock and so would stall the whole pool behind one blocked connection.
type h2Conn struct {
	cc *http2.ClientConn // immutable
	w  *h2wire.Conn      // immutable: the frame watcher under cc

	// Guarded by h2Pool.mu. streams counts streams ever reserved (for
	// max_requests_per_connection); active those not yet ended (see
	// streamEnd). A retired connection takes no new stream and is closed
	// when active drops to zero.
	streams uint32
	active  int
	retired bool
}

// h2Dial is a connection being established, which requests wait for.
type h2Dial struct {
	done chan struct{}
	err  error // set before done is closed

	// Guarded by h2Pool.mu: requests waiting, and how many of them are
	// ordinary requests (not extended CONNECT), which could use an
	// HTTP/1.1 connection that auto_config negotiated.
	waiting, plain int
}

func (c *Cluster) newH2Pool(h *host) *h2Pool {
	p := &h2Pool{c: c, h: h}
	o := c.s.h2
	t1 := &http.Transport{
		DisableCompression:     true,
		IdleConnTimeout:        c.s.idleTimeout,
		MaxResponseHeaderBytes: c.s.maxResponseHeaders,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream: int(o.streamWindow),
		},
	}
	if o.connWindow > 0 {
		// x/net opens the connection window by this much beyond the
		// initial 65535; Envoy's value is the whole window.
		t1.HTTP2.MaxReceiveBufferPerConnection = int(max(o.connWindow-65535, 65535))
	}
	// ConfigureTransports is the only way to hand x/net the flow-control
	// settings; t1 itself is never used for requests.
	t, err := http2.ConfigureTransports(t1)
	if err != nil { // only when t1 was configured before, which it was not
		c.log.Error("HTTP/2 flow-control settings not applied", "error", err)
		t = &http2.Transport{}
	}
	t.ConnPool = p
	t.CountError = func(errType string) {
		if errType == "conn_close_lost_ping" { // connection_keepalive's PING went unanswered
			c.st.h2KeepaliveTimeout.Inc()
		}
	}
	t.DisableCompression = true
	t.IdleConnTimeout = c.s.idleTimeout
	t.ReadIdleTimeout = o.pingInterval
	t.PingTimeout = o.pingTimeout
	if o.hpackSet {
		size := max(o.hpackSize, 1) // x/net reads 0 as its default; 1 holds no entry
		t.MaxDecoderHeaderTableSize = size
		t.MaxEncoderHeaderTableSize = size
	}
	p.t = t
	return p
}

// get returns a connection with a stream reserved for the caller, who
// must call RoundTrip on it and release the stream when it ends (see
// streamEnd). ext says the request is an extended CONNECT. Errors: the
// *ConnectError of the connection it waited for, errNegotiatedH1, or ctx's
// error wrapped.
func (p *h2Pool) get(ctx context.Context, ext bool) (*h2Conn, error) {
	for attempt := 1; ; attempt++ {
		p.mu.Lock()
		if hc := p.reserveLocked(); hc != nil {
			p.mu.Unlock()
			return hc, nil
		}
		if attempt > maxH2Attempts {
			p.mu.Unlock()
			return nil, &ResetError{ResetReason: ResetConnectionTermination,
				Err: errors.New("new HTTP/2 connections refused the request")}
		}
		d := p.joinableLocked()
		if d == nil {
			d = &h2Dial{done: make(chan struct{})}
			p.dials = append(p.dials, d)
			go p.dial(d)
		}
		d.waiting++
		if !ext {
			d.plain++
		}
		p.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			p.mu.Lock()
			d.waiting--
			if !ext {
				d.plain--
			}
			p.mu.Unlock()
			return nil, fmt.Errorf("upstream: cluster %q: connect to %s: %w", p.c.s.name, p.h.key, ctx.Err())
		}
		if d.err != nil {
			return nil, d.err
		}
	}
}

// reserveLocked reserves a stream on the oldest connection with room.
// x/net's ReserveNewRequest adds the server's limits (its
// SETTINGS_MAX_CONCURRENT_STREAMS, GOAWAY, a closed connection).
func (p *h2Pool) reserveLocked() *h2Conn {
	for _, hc := range p.conns {
		if p.roomy(hc) && hc.cc.ReserveNewRequest() {
			hc.streams++
			hc.active++
			if m := p.c.s.maxRequestsPerConn; m > 0 && hc.streams >= m {
				hc.retired = true // closed when this last stream ends
			}
			return hc
		}
	}
	return nil
}

// roomy reports whether hc may take another stream as far as the cluster's
// limits go. Callers hold mu.
func (p *h2Pool) roomy(hc *h2Conn) bool {
	if hc.retired {
		return false
	}
	if l := int(p.c.s.h2.maxStreams); l > 0 && hc.active >= l {
		return false
	}
	return true
}

// hasRoom reports whether some connection could take a stream now.
func (p *h2Pool) hasRoom() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, hc := range p.conns {
		if p.roomy(hc) && hc.cc.CanTakeNewRequest() {
			return true
		}
	}
	return false
}

// release ends a stream reserved by get; the last stream of a retired
// connection closes it.
func (p *h2Pool) release(hc *h2Conn) {
	p.mu.Lock()
	hc.active--
	closeIt := hc.retired && hc.active == 0
	p.mu.Unlock()
	if closeIt {
		hc.cc.Close()
	}
}

// joinableLocked returns a connection being established that can still
// take another waiting request.
func (p *h2Pool) joinableLocked() *h2Dial {
	capacity := dialCapacity
	if l := int(p.c.s.h2.maxStreams); l > 0 {
		capacity = l
	}
	for _, d := range p.dials {
		if d.waiting < capacity {
			return d
		}
	}
	return nil
}

// dial establishes a connection for d. It runs on its own goroutine so
// that waiting requests can give up (their context) without failing the
// others; connect_timeout and the cluster's removal bound it.
func (p *h2Pool) dial(d *h2Dial) {
	c, h := p.c, p.h
	conf := c.s.tlsH2
	if c.s.mode == modeAuto {
		conf = c.s.tlsAuto
	}
	var hc *h2Conn
	nc, sock, err := c.connect(context.Background(), h, conf)
	if err == nil {
		pc := c.newPoolConn(nc, sock, h)
		if c.s.mode == modeAuto && negotiated(nc) != alpnH2 {
			h.alpnH1.Store(true)
			c.st.cxHTTP1.Inc()
			p.mu.Lock()
			plain := d.plain
			p.mu.Unlock()
			if plain == 0 || !h.handOff(pc) {
				pc.Close() // only extended CONNECTs were waiting: nobody needs it
			}
			err = errNegotiatedH1
		} else {
			if c.s.mode == modeAuto {
				h.alpnH1.Store(false)
			}
			hc, err = p.newConn(pc)
		}
	}
	p.mu.Lock()
	for i, x := range p.dials {
		if x == d {
			p.dials = append(p.dials[:i], p.dials[i+1:]...)
			break
		}
	}
	if hc != nil {
		p.conns = append(p.conns, hc)
	}
	d.err = err
	close(d.done)
	p.mu.Unlock()
}

// add pools a connection that auto_config's HTTP/1.1 pool dialled but
// that negotiated h2.
func (p *h2Pool) add(pc *poolConn) error {
	hc, err := p.newConn(pc)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.conns = append(p.conns, hc)
	p.mu.Unlock()
	return nil
}

// newConn starts HTTP/2 on an established connection: the preface and
// SETTINGS go out at once. pkg/h2wire watches the frames for the
// cluster.<name>.http2.* codec stats and the peer's SETTINGS.
func (p *h2Pool) newConn(pc *poolConn) (*h2Conn, error) {
	w := h2wire.Client(pc, h2wire.Options{Counters: p.c.st.h2Codec})
	cc, err := p.t.NewClientConn(w.Outer())
	if err != nil {
		w.Close()
		return nil, &ResetError{ResetReason: ResetConnectionTermination, Err: err}
	}
	p.c.st.cxHTTP2.Inc()
	return &h2Conn{cc: cc, w: w}, nil
}

// closeIdle retires every connection: those without streams close now,
// the others when their last stream ends.
func (p *h2Pool) closeIdle() {
	var idle []*http2.ClientConn
	p.mu.Lock()
	for _, hc := range p.conns {
		hc.retired = true
		if hc.active == 0 {
			idle = append(idle, hc.cc)
		}
	}
	p.mu.Unlock()
	for _, cc := range idle {
		cc.Close()
	}
}

// GetClientConn implements http2.ClientConnPool; requests never go through
// http2.Transport.RoundTrip, so it is not called.
func (p *h2Pool) GetClientConn(*http.Request, string) (*http2.ClientConn, error) {
	return nil, errors.New("upstream: HTTP/2 connections are taken through the cluster")
}

// MarkDead implements http2.ClientConnPool: x/net calls it when a
// connection closes or receives GOAWAY.
func (p *h2Pool) MarkDead(cc *http2.ClientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, hc := range p.conns {
		if hc.cc == cc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			return
		}
	}
}

var _ http2.ClientConnPool = (*h2Pool)(nil)
