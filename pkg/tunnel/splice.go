package tunnel

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Cause says why a tunnel ended.
type Cause string

const (
	CausePeerClose   Cause = "peer_close"   // both directions reached EOF
	CauseIdleTimeout Cause = "idle_timeout" // no byte either way for the idle timeout
	CauseError       Cause = "error"        // a read or write failed (reset, ...)
	CauseAborted     Cause = "aborted"      // Abort was called (drain, shutdown)
	CauseDeadline    Cause = "deadline"     // Options.Deadline passed
)

// Result describes a finished splice.
type Result struct {
	// AtoB and BtoA count bytes copied in each direction, preludes included.
	AtoB, BtoA int64
	Cause      Cause
	Err        error // the first error, when Cause is CauseError
}

// Options tune Splice.
type Options struct {
	// IdleTimeout closes the tunnel when no byte has moved in either
	// direction for this long. Zero disables it. The check runs every
	// IdleTimeout/4, so the tunnel closes between IdleTimeout and
	// 1.25×IdleTimeout after the last byte, and never earlier.
	IdleTimeout time.Duration
	// Deadline, when not zero, cuts the tunnel (both ends aborted) at that
	// time whatever it is doing: tcp_proxy's
	// max_downstream_connection_duration.
	Deadline time.Time
}

// Unwrapper is implemented by net.Conn wrappers that can hand out the
// *net.TCPConn below them for copying. Closing still goes through the wrapper.
type Unwrapper interface {
	// TCP returns the raw connection, or nil if reads must keep going
	// through the wrapper (for example because it still holds bytes).
	TCP() *net.TCPConn
}

func raw(c net.Conn) net.Conn {
	if u, ok := c.(Unwrapper); ok {
		if tc := u.TCP(); tc != nil {
			return tc
		}
	}
	return c
}

// halfCloser is implemented by *net.TCPConn and friends.
type halfCloser interface{ CloseWrite() error }

// Aborter is implemented by tunnel ends whose Close ends them cleanly (an
// HTTP/2 or HTTP/3 stream: Close lets the response finish) but which can
// also be cut (the stream is reset). Splice aborts both ends when a
// direction fails or the idle timeout fires, and the Tracker aborts them
// when it cuts tunnels; a tunnel that ended cleanly is only closed.
type Aborter interface{ Abort() }

// Abort cuts c: an Aborter is aborted (a stream reset), anything else
// closed.
func Abort(c net.Conn) {
	if a, ok := c.(Aborter); ok {
		a.Abort()
		return
	}
	c.Close()
}

// Splice copies a→b and b→a until both directions end, then closes both
// connections. aPrelude is written to b before anything read from a, and
// bPrelude to a before anything read from b (bytes an HTTP reader buffered).
//
// When a direction reads EOF, the write side of its destination is closed
// (half-close), and the other direction keeps going. A read or write error
// in either direction aborts both ends. Between two *net.TCPConn the copy
// is io.Copy, which Linux turns into splice(2): payload never enters user
// space and nothing is allocated per message. Any other pair (TLS, HTTP/2
// and HTTP/3 streams) is copied through a pooled buffer.
//
// Splice runs one direction on the calling goroutine and the other on a
// goroutine it starts and waits for.
func Splice(a, b net.Conn, aPrelude, bPrelude []byte, opt Options) Result {
	s := &splice{a: a, b: b, idle: opt.IdleTimeout}
	s.lastActive.Store(time.Now().UnixNano())
	// Each end's raw connection is asked for once, here: a wrapper still
	// replaying buffered bytes is read through by both directions' setup
	// otherwise, racing with the reads that drain it.
	ra, rb := raw(a), raw(b)
	_, aTCP := ra.(*net.TCPConn)
	_, bTCP := rb.(*net.TCPConn)
	s.kernel = aTCP && bTCP
	if s.idle > 0 && !s.kernel {
		// Streams cannot always resume a read after a deadline (an HTTP/2
		// stream is reset by one), so idleness is watched by a timer.
		s.watchdog = time.AfterFunc(s.idle, s.checkIdle)
	}
	var deadline *time.Timer
	if !opt.Deadline.IsZero() {
		deadline = time.AfterFunc(time.Until(opt.Deadline), func() { s.fail(CauseDeadline, nil) })
	}
	var wg sync.WaitGroup
	var ba int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		ba = s.copy(a, ra, rb, bPrelude) // b → a
	}()
	ab := s.copy(b, rb, ra, aPrelude) // a → b
	wg.Wait()
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	if deadline != nil {
		deadline.Stop()
	}
	a.Close()
	b.Close()
	res := Result{AtoB: ab, BtoA: ba, Cause: CausePeerClose}
	s.mu.Lock()
	if s.cause != "" {
		res.Cause, res.Err = s.cause, s.err
	}
	s.mu.Unlock()
	return res
}

type splice struct {
	a, b       net.Conn
	idle       time.Duration
	kernel     bool         // both ends are *net.TCPConn: io.Copy, deadline-windowed idle check
	watchdog   *time.Timer  // the idle check of the buffered copy
	lastActive atomic.Int64 // unix nanos of the latest progress seen, either direction

	mu    sync.Mutex // guards cause and err: the first ending reason wins
	cause Cause
	err   error
}

// fail records why the tunnel ended, once, and aborts both ends so the
// other direction returns too.
func (s *splice) fail(c Cause, err error) {
	s.mu.Lock()
	first := s.cause == ""
	if first {
		s.cause, s.err = c, err
	}
	s.mu.Unlock()
	if first {
		Abort(s.a)
		Abort(s.b)
	}
}

// checkIdle runs on the watchdog timer: it ends the tunnel once nothing has
// moved for the idle timeout, or sets the timer for the next check.
func (s *splice) checkIdle() {
	quiet := time.Since(time.Unix(0, s.lastActive.Load()))
	if quiet >= s.idle {
		s.fail(CauseIdleTimeout, nil)
		return
	}
	s.watchdog.Reset(s.idle - quiet)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy moves bytes from src to dst and returns how many. The prelude is
// written through dst; rdst and rsrc are what raw gave for dst and src.
func (s *splice) copy(dst, rdst, rsrc net.Conn, prelude []byte) int64 {
	var total int64
	if len(prelude) > 0 {
		n, err := dst.Write(prelude)
		total += int64(n)
		if err != nil {
			s.fail(CauseError, err)
			return total
		}
	}
	var n int64
	var err error
	if s.kernel {
		n, err = s.copyKernel(rdst, rsrc)
	} else {
		n, err = s.copyBuffered(rdst, rsrc)
	}
	total += n
	if err != nil {
		return total // fail was called
	}
	// EOF from src: pass the half-close on.
	if hc, ok := rdst.(halfCloser); ok {
		if err := hc.CloseWrite(); err != nil {
			s.fail(CauseError, err)
		}
	} else {
		s.fail(CausePeerClose, nil)
	}
	return total
}

// copyKernel copies between two TCP connections with io.Copy (splice(2) on
// Linux). With an idle timeout the read side gets a deadline every
// IdleTimeout/4 so that progress can be observed between copies.
func (s *splice) copyKernel(dst, src net.Conn) (int64, error) {
	var total int64
	var window time.Duration
	if s.idle > 0 {
		window = max(s.idle/4, time.Millisecond)
	}
	for {
		if window > 0 {
			src.SetReadDeadline(time.Now().Add(window))
		}
		n, err := io.Copy(dst, src)
		total += n
		now := time.Now()
		if n > 0 {
			s.lastActive.Store(now.UnixNano())
		}
		switch {
		case err == nil:
			return total, nil
		case window > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			if now.Sub(time.Unix(0, s.lastActive.Load())) >= s.idle {
				s.fail(CauseIdleTimeout, nil)
				return total, err
			}
		default:
			s.fail(CauseError, err)
			return total, err
		}
	}
}

// copyBuffered copies through a pooled buffer, noting progress for the
// watchdog after every read. Each read is written out at once: an HTTP/2 or
// HTTP/3 stream flushes it as one DATA frame, so messages are not held back.
func (s *splice) copyBuffered(dst, src net.Conn) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if s.watchdog != nil {
				s.lastActive.Store(time.Now().UnixNano())
			}
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr == nil && w < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				s.fail(CauseError, werr)
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			s.fail(CauseError, rerr)
			return total, rerr
		}
	}
}
