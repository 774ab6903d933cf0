//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// dialParallelism bounds how many WebSocket handshakes are in flight at once,
// so opening a thousand connections does not overflow accept backlogs.
const dialParallelism = 32

// loadConfig is one throughput case against one target.
type loadConfig struct {
	URL       string        // ws://host:port/path of the echo, direct or through hop
	Conns     int           // concurrent connections, each with one message in flight
	MsgSize   int           // payload bytes per binary message
	Duration  time.Duration // how long the timed loop runs
	OpTimeout time.Duration // bound on each handshake, and grace after Duration for the last round trip
}

// loadResult is what one throughput case measured.
type loadResult struct {
	Messages int64         // completed round trips in the timed window
	Elapsed  time.Duration // from the start of the window until the last worker stopped
	P50, P99 time.Duration // round-trip latency
}

// MsgPerSec is round trips per second.
func (r loadResult) MsgPerSec() float64 { return float64(r.Messages) / r.Elapsed.Seconds() }

// MBPerSec is echoed payload per second, one direction, in 10^6 bytes.
func (r loadResult) MBPerSec(msgSize int) float64 { return r.MsgPerSec() * float64(msgSize) / 1e6 }

// runThroughput opens cfg.Conns connections, checks one full echo on each,
// then lets every connection send a message and wait for its echo in a loop
// until cfg.Duration has passed. The loop reuses one payload and one receive
// buffer per connection and records latencies in a fixed-size histogram, so
// the client allocates little beyond what gorilla does per message.
func runThroughput(parent context.Context, cfg loadConfig) (loadResult, error) {
	bufSize := max(cfg.MsgSize, 4096)
	conns, err := dialAll(parent, newDialer(cfg.OpTimeout, bufSize), cfg.URL, cfg.Conns)
	if err != nil {
		return loadResult{}, err
	}
	defer closeAll(conns)
	// A failed worker or an interrupt closes every socket so blocked reads
	// and writes return at once.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { abortAll(conns) })
	defer stop()

	payload := makePayload(cfg.MsgSize)
	workers := make([]*loadWorker, len(conns))
	for i, c := range conns {
		workers[i] = &loadWorker{conn: c, payload: payload, rbuf: make([]byte, cfg.MsgSize)}
	}

	warmDeadline := time.Now().Add(cfg.OpTimeout)
	if err := forEach(ctx, len(workers), workers, cancel, func(w *loadWorker) error {
		w.setDeadline(warmDeadline)
		if err := w.roundTrip(); err != nil {
			return err
		}
		if !bytes.Equal(w.rbuf, payload) {
			return errors.New("bench: echoed payload differs from the one sent")
		}
		return nil
	}); err != nil {
		return loadResult{}, contextOr(parent, fmt.Errorf("bench: warm-up: %w", err))
	}

	start := time.Now()
	end := start.Add(cfg.Duration)
	for _, w := range workers {
		w.setDeadline(end.Add(cfg.OpTimeout))
	}
	err = forEach(ctx, len(workers), workers, cancel, func(w *loadWorker) error { return w.loop(end) })
	elapsed := time.Since(start)
	if err != nil {
		return loadResult{}, contextOr(parent, err)
	}

	var all histogram
	for _, w := range workers {
		all.merge(&w.hist)
	}
	return loadResult{
		Messages: int64(all.n),
		Elapsed:  elapsed,
		P50:      time.Duration(all.quantile(0.50)),
		P99:      time.Duration(all.quantile(0.99)),
	}, nil
}

// loadWorker drives one connection. It is owned by one goroutine at a time.
type loadWorker struct {
	conn    *websocket.Conn
	payload []byte // shared, read-only
	rbuf    []byte // receives each echo
	extra   [1]byte
	hist    histogram
}

func (w *loadWorker) setDeadline(t time.Time) {
	w.conn.SetReadDeadline(t)
	w.conn.SetWriteDeadline(t)
}

// loop runs round trips until end, recording each one's latency.
func (w *loadWorker) loop(end time.Time) error {
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			return nil
		}
		if err := w.roundTrip(); err != nil {
			return err
		}
		w.hist.record(uint64(time.Since(t0)))
	}
}

// roundTrip sends the payload as one binary message and reads its echo into
// rbuf, checking type and length.
func (w *loadWorker) roundTrip() error {
	wr, err := w.conn.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return fmt.Errorf("bench: next writer: %w", err)
	}
	if _, err := wr.Write(w.payload); err != nil {
		return fmt.Errorf("bench: write: %w", err)
	}
	if err := wr.Close(); err != nil {
		return fmt.Errorf("bench: flush: %w", err)
	}
	mt, rd, err := w.conn.NextReader()
	if err != nil {
		return fmt.Errorf("bench: next reader: %w", err)
	}
	if mt != websocket.BinaryMessage {
		return fmt.Errorf("bench: echo has message type %d, want binary", mt)
	}
	if _, err := io.ReadFull(rd, w.rbuf); err != nil {
		return fmt.Errorf("bench: read echo: %w", err)
	}
	if n, err := rd.Read(w.extra[:]); n != 0 || err != io.EOF {
		return fmt.Errorf("bench: echo is longer than the %d bytes sent", len(w.rbuf))
	}
	return nil
}

// idleResult is what opening the idle connections measured.
type idleResult struct {
	Open time.Duration // wall time to open all of them, handshake and first echo included
}

// openIdle opens n connections, each completing its handshake and one small
// echo so both directions of any proxy in between have carried data. The
// caller closes the returned connections.
func openIdle(parent context.Context, url string, n int, opTimeout time.Duration) ([]*websocket.Conn, idleResult, error) {
	start := time.Now()
	// Small buffers: these connections only ever carry one 16-byte message.
	conns, err := dialAll(parent, newDialer(opTimeout, 1024), url, n)
	if err != nil {
		return nil, idleResult{}, err
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { abortAll(conns) })

	ping := []byte("idle-connection!")
	err = forEach(ctx, dialParallelism, conns, cancel, func(c *websocket.Conn) error {
		c.SetReadDeadline(time.Now().Add(opTimeout))
		c.SetWriteDeadline(time.Now().Add(opTimeout))
		if err := c.WriteMessage(websocket.BinaryMessage, ping); err != nil {
			return fmt.Errorf("bench: idle write: %w", err)
		}
		if _, got, err := c.ReadMessage(); err != nil {
			return fmt.Errorf("bench: idle read: %w", err)
		} else if !bytes.Equal(got, ping) {
			return errors.New("bench: idle echo differs from the message sent")
		}
		c.SetReadDeadline(time.Time{})
		c.SetWriteDeadline(time.Time{})
		return nil
	})
	if !stop() && err == nil {
		err = errors.New("bench: interrupted while opening idle connections")
	}
	if err != nil {
		closeAll(conns)
		return nil, idleResult{}, contextOr(parent, err)
	}
	return conns, idleResult{Open: time.Since(start)}, nil
}

// newDialer returns a dialer that never uses a proxy from the environment
// and bounds the TCP connect and the handshake by opTimeout.
func newDialer(opTimeout time.Duration, bufSize int) *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:   (&net.Dialer{Timeout: opTimeout}).DialContext,
		HandshakeTimeout: opTimeout,
		ReadBufferSize:   bufSize,
		WriteBufferSize:  bufSize,
	}
}

// dialAll opens n connections to url, dialParallelism at a time. On error it
// closes the ones it opened.
func dialAll(parent context.Context, d *websocket.Dialer, url string, n int) ([]*websocket.Conn, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	conns := make([]*websocket.Conn, n)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	err := forEach(ctx, dialParallelism, idx, cancel, func(i int) error {
		c, resp, err := d.DialContext(ctx, url, nil)
		if err != nil {
			if resp != nil {
				return fmt.Errorf("bench: dial %s: %w (HTTP status %d)", url, err, resp.StatusCode)
			}
			return fmt.Errorf("bench: dial %s: %w", url, err)
		}
		conns[i] = c
		return nil
	})
	if err != nil {
		closeAll(conns)
		return nil, contextOr(parent, err)
	}
	return conns, nil
}

// forEach calls fn on every item from at most par goroutines and returns
// the first error. After the first error it calls abort (when not nil), so
// the caller can unblock calls in flight, and it starts no new call; nor
// does it once ctx is done, which is then the error.
func forEach[T any](ctx context.Context, par int, items []T, abort func(), fn func(T) error) error {
	var (
		next, done atomic.Int64
		failed     atomic.Bool
		once       sync.Once
		first      error
		wg         sync.WaitGroup
	)
	for range min(par, len(items)) {
		wg.Go(func() {
			for !failed.Load() && ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(items)) {
					return
				}
				if err := fn(items[i]); err != nil {
					once.Do(func() {
						first = err
						failed.Store(true)
						if abort != nil {
							abort()
						}
					})
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if done.Load() < int64(len(items)) {
		return fmt.Errorf("bench: %w", context.Cause(ctx))
	}
	return nil
}

// closeAll sends a close frame on each connection (best effort, short
// deadline) and closes it. Nil entries are skipped.
func closeAll(conns []*websocket.Conn) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	deadline := time.Now().Add(100 * time.Millisecond)
	for _, c := range conns {
		if c == nil {
			continue
		}
		c.WriteControl(websocket.CloseMessage, msg, deadline)
		c.Close()
	}
}

// abortAll closes the sockets under conns without a close frame, to unblock
// reads and writes in progress.
func abortAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.NetConn().Close()
		}
	}
}

// contextOr returns ctx's error when ctx is done (the real reason a socket
// operation failed), else err.
func contextOr(ctx context.Context, err error) error {
	if ctxErr := context.Cause(ctx); ctxErr != nil {
		return fmt.Errorf("bench: %w", ctxErr)
	}
	return err
}

// makePayload returns n bytes of a fixed, non-repeating-looking pattern.
func makePayload(n int) []byte {
	p := make([]byte, n)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

// histogram is a log-linear latency histogram in nanoseconds: exact below
// 2^histSubBits, then 2^histSubBits buckets per power of two, so any value
// is reported within 1/2^(histSubBits+1) of itself. Fixed size, no
// allocation per record. Owned by one goroutine.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 6
	histBuckets = (64 - histSubBits + 1) << histSubBits
)

func (h *histogram) record(v uint64) {
	h.counts[histBucket(v)]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the midpoint of the bucket holding the value of rank
// ceil(q·n), or 0 for an empty histogram.
func (h *histogram) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, width := histBucketRange(i)
			return lo + (width-1)/2
		}
	}
	return 0 // unreachable: the counts sum to n
}

// histBucket maps v to its bucket index.
func histBucket(v uint64) int {
	if v < 1<<histSubBits {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	mant := v >> shift // in [2^histSubBits, 2^(histSubBits+1))
	return (shift+1)<<histSubBits + int(mant-1<<histSubBits)
}

// histBucketRange returns the lowest value in bucket i and how many values
// the bucket holds.
func histBucketRange(i int) (lo, width uint64) {
	if i < 1<<histSubBits {
		return uint64(i), 1
	}
	shift := i>>histSubBits - 1
	mant := uint64(i&(1<<histSubBits-1)) | 1<<histSubBits
	return mant << shift, 1 << shift
}
