//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tcpEcho is the in-process TCP echo upstream of the tunnel cases: every
// connection gets back what it sends, then a half-close after its own.
//
// It copies through a 64 KiB buffer in user space rather than splicing: on
// loopback, data spliced from socket to socket can arrive with far more
// kernel memory per byte than the receiver's window allowed for, and the
// receive queue then drops segments (TcpExtTCPRcvQDrop); the sender
// recovers only after retransmission timeouts, stalling a bulk case for
// seconds. The echo should not be the path that does that.
type tcpEcho struct {
	addr string
	l    net.Listener
	wg   sync.WaitGroup // the accept loop and every connection's echo

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func startTCPEcho() (*tcpEcho, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: tcp echo listen: %w", err)
	}
	e := &tcpEcho{addr: l.Addr().String(), l: l, conns: map[net.Conn]struct{}{}}
	e.wg.Go(e.serve)
	return e, nil
}

func (e *tcpEcho) serve() {
	for {
		c, err := e.l.Accept()
		if err != nil {
			return // closed by stop; anything else would fail the case loudly
		}
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		e.wg.Go(func() {
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			buf := make([]byte, 64<<10)
			// The wrappers hide ReadFrom/WriteTo, which would splice.
			if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf); err == nil {
				c.(*net.TCPConn).CloseWrite()
			}
		})
	}
}

// stop closes the listener and the connections still open, and waits for
// their goroutines, at most 5 s.
func (e *tcpEcho) stop() error {
	e.l.Close()
	e.mu.Lock()
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("bench: tcp echo still running at exit")
	}
}

// tunnelLoad is one tunnel measurement against one target.
type tunnelLoad struct {
	Dial      dialFunc
	Conns     int           // bulk: concurrent tunnels; setups: workers
	Chunk     int           // bulk: bytes per write
	Duration  time.Duration // the timed window
	OpTimeout time.Duration // bound on each setup and dial, and grace after Duration
}

// bulkResult is what a bulk case measured.
type bulkResult struct {
	Echoed  int64         // bytes read back in the timed window, all tunnels
	Elapsed time.Duration // the window
	Total   int64         // bytes echoed in the whole run, the drain after the window included
}

// MBPerSec is the echoed rate in 10^6 bytes per second.
func (r bulkResult) MBPerSec() float64 { return float64(r.Echoed) / r.Elapsed.Seconds() / 1e6 }

// bulkTunnel is one tunnel of a bulk case. sent is owned by the writer
// goroutine and read after it ends; received is read by the sampler.
type bulkTunnel struct {
	t        tunnel
	sent     int64
	received atomic.Int64
}

// runBulk opens cfg.Conns tunnels, checks a 1 KiB echo on each, then runs a
// writer and a reader per tunnel: the writer sends cfg.Chunk-byte writes
// (at least one) until the window ends and half-closes; the reader counts
// what comes back until EOF. The result counts bytes echoed inside the window; afterwards
// every byte sent must come back, then EOF, within cfg.OpTimeout.
func runBulk(parent context.Context, cfg tunnelLoad) (bulkResult, error) {
	ts := make([]*bulkTunnel, cfg.Conns)
	defer func() {
		for _, bt := range ts {
			if bt != nil {
				bt.t.Close()
			}
		}
	}()
	check := makePayload(1 << 10)
	dialCtx, dialCancel := context.WithCancel(parent)
	defer dialCancel()
	err := forEach(dialCtx, dialParallelism, indexes(cfg.Conns), dialCancel, func(i int) error {
		ctx, cancel := context.WithTimeout(dialCtx, cfg.OpTimeout)
		defer cancel()
		t, err := cfg.Dial(ctx)
		if err != nil {
			return err
		}
		ts[i] = &bulkTunnel{t: t}
		stop := context.AfterFunc(ctx, t.Abort)
		buf := make([]byte, len(check))
		if _, err = t.Write(check); err == nil {
			_, err = io.ReadFull(t, buf)
		}
		if !stop() {
			return fmt.Errorf("bench: first echo: %w", context.Cause(ctx))
		}
		if err == nil && !bytes.Equal(buf, check) {
			err = errors.New("echoed bytes differ from the ones sent")
		}
		if err != nil {
			return fmt.Errorf("bench: first echo: %w", err)
		}
		return nil
	})
	if err != nil {
		return bulkResult{}, contextOr(parent, err)
	}

	// From here a failure, an interrupt or the grace running out aborts
	// every tunnel so all goroutines return.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stopAbort := context.AfterFunc(ctx, func() {
		for _, bt := range ts {
			bt.t.Abort()
		}
	})
	defer stopAbort()
	payload := makePayload(cfg.Chunk)
	start := time.Now()
	end := start.Add(cfg.Duration)
	grace := time.AfterFunc(cfg.Duration+cfg.OpTimeout, func() {
		cancel(fmt.Errorf("bench: tunnels not finished %v after the window (echo or half-close lost?)", cfg.OpTimeout))
	})
	defer grace.Stop()

	var wg sync.WaitGroup
	for _, bt := range ts {
		wg.Go(func() {
			for { // at least one chunk, so every tunnel's data path is checked
				n, err := bt.t.Write(payload)
				bt.sent += int64(n)
				if err != nil {
					cancel(fmt.Errorf("bench: bulk write: %w", err))
					return
				}
				if !time.Now().Before(end) {
					break
				}
			}
			if err := bt.t.CloseWrite(); err != nil {
				cancel(fmt.Errorf("bench: half-close: %w", err))
			}
		})
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := bt.t.Read(buf)
				bt.received.Add(int64(n))
				if err == io.EOF {
					return
				}
				if err != nil {
					cancel(fmt.Errorf("bench: bulk read: %w", err))
					return
				}
			}
		})
	}
	sleepErr := sleepCtx(ctx, time.Until(end))
	var res bulkResult
	res.Elapsed = time.Since(start)
	for _, bt := range ts {
		res.Echoed += bt.received.Load()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return bulkResult{}, err
	}
	if sleepErr != nil {
		return bulkResult{}, sleepErr
	}
	for _, bt := range ts {
		got := bt.received.Load()
		if got != bt.sent {
			return bulkResult{}, fmt.Errorf("bench: a tunnel echoed %d of the %d bytes sent before EOF", got, bt.sent)
		}
		res.Total += got
	}
	return res, nil
}

// setupResult is what a setups case measured.
type setupResult struct {
	Setups  int64
	Elapsed time.Duration
}

// PerSec is completed setups per second.
func (r setupResult) PerSec() float64 { return float64(r.Setups) / r.Elapsed.Seconds() }

// runSetups runs cfg.Conns workers, each opening a tunnel, echoing one
// byte, half-closing, waiting for the echo's EOF and closing, in a loop
// until the window ends (at least once). Each setup is bounded by cfg.OpTimeout.
func runSetups(parent context.Context, cfg tunnelLoad) (setupResult, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var count atomic.Int64
	start := time.Now()
	end := start.Add(cfg.Duration)
	err := forEach(ctx, cfg.Conns, indexes(cfg.Conns), cancel, func(int) error {
		var buf [2]byte
		for { // at least one setup per worker
			if err := setupOnce(ctx, cfg, buf[:]); err != nil {
				return err
			}
			count.Add(1)
			if !time.Now().Before(end) {
				return nil
			}
		}
	})
	elapsed := time.Since(start)
	if err != nil {
		return setupResult{}, contextOr(parent, err)
	}
	return setupResult{Setups: count.Load(), Elapsed: elapsed}, nil
}

// setupOnce is one tunnel's whole life; buf holds at least two bytes.
func setupOnce(parent context.Context, cfg tunnelLoad, buf []byte) error {
	ctx, cancel := context.WithTimeout(parent, cfg.OpTimeout)
	defer cancel()
	t, err := cfg.Dial(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, t.Abort)
	err = echoOneAndClose(t, buf)
	if !stop() {
		return fmt.Errorf("bench: setup: %w", context.Cause(ctx))
	}
	if err != nil {
		t.Abort()
		return fmt.Errorf("bench: setup: %w", err)
	}
	return t.Close()
}

// echoOneAndClose writes one byte, reads it back, half-closes, and expects
// EOF next.
func echoOneAndClose(t tunnel, buf []byte) error {
	buf[0] = 'x'
	if _, err := t.Write(buf[:1]); err != nil {
		return err
	}
	if _, err := io.ReadFull(t, buf[1:2]); err != nil {
		return err
	}
	if buf[1] != 'x' {
		return errors.New("echo differs from the byte sent")
	}
	if err := t.CloseWrite(); err != nil {
		return err
	}
	if n, err := t.Read(buf[:1]); n != 0 || err != io.EOF {
		return fmt.Errorf("after half-close read %d bytes, %v; want EOF", n, err)
	}
	return nil
}

// indexes returns 0..n-1.
func indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
