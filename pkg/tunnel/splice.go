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

// Splice copies a→b and b→a until both directions end, then closes both
// connections. aPrelude is written to b before anything read from a, and
// bPrelude to a before anything read from b (bytes an HTTP reader buffered).
//
// When a direction reads EOF, the write side of its destination is closed
// (half-close), and the other direction keeps going. A read or write error
// in either direction closes both connections. Between two *net.TCPConn the
// copy is io.Copy, which Linux turns into splice(2): payload never enters
// user space and nothing is allocated per message.
//
// Splice runs one direction on the calling goroutine and the other on a
// goroutine it starts and waits for.
func Splice(a, b net.Conn, aPrelude, bPrelude []byte, opt Options) Result {
	s := &splice{a: a, b: b, idle: opt.IdleTimeout}
	s.lastActive.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	var ba int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		ba = s.copy(a, b, bPrelude) // b → a
	}()
	ab := s.copy(b, a, aPrelude) // a → b
	wg.Wait()
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
	lastActive atomic.Int64 // unix nanos of the latest progress seen, either direction

	mu    sync.Mutex // guards cause and err: the first ending reason wins
	cause Cause
	err   error
}

// fail records why the tunnel ended, once, and closes both connections so
// the other direction returns too.
func (s *splice) fail(c Cause, err error) {
	s.mu.Lock()
	first := s.cause == ""
	if first {
		s.cause, s.err = c, err
	}
	s.mu.Unlock()
	if first {
		s.a.Close()
		s.b.Close()
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy moves bytes from src to dst and returns how many.
func (s *splice) copy(dst, src net.Conn, prelude []byte) int64 {
	var total int64
	if len(prelude) > 0 {
		n, err := dst.Write(prelude)
		total += int64(n)
		if err != nil {
			s.fail(CauseError, err)
			return total
		}
	}
	rdst, rsrc := raw(dst), raw(src)
	_, dstTCP := rdst.(*net.TCPConn)
	_, srcTCP := rsrc.(*net.TCPConn)
	var window time.Duration
	if s.idle > 0 {
		window = max(s.idle/4, time.Millisecond)
	}
	for {
		if window > 0 {
			rsrc.SetReadDeadline(time.Now().Add(window))
		}
		var n int64
		var err error
		if dstTCP && srcTCP {
			n, err = io.Copy(rdst, rsrc) // splice(2) on Linux
		} else {
			bp := copyBufs.Get().(*[]byte)
			n, err = io.CopyBuffer(onlyWriter{rdst}, onlyReader{rsrc}, *bp)
			copyBufs.Put(bp)
		}
		total += n
		now := time.Now()
		if n > 0 {
			s.lastActive.Store(now.UnixNano())
		}
		switch {
		case err == nil: // EOF from src: pass the half-close on.
			if hc, ok := rdst.(halfCloser); ok {
				if err := hc.CloseWrite(); err != nil {
					s.fail(CauseError, err)
				}
			} else {
				s.fail(CausePeerClose, nil)
			}
			return total
		case window > 0 && errors.Is(err, os.ErrDeadlineExceeded):
			if now.Sub(time.Unix(0, s.lastActive.Load())) >= s.idle {
				s.fail(CauseIdleTimeout, nil)
				return total
			}
			continue
		default:
			s.fail(CauseError, err)
			return total
		}
	}
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so CopyBuffer uses the
// pooled buffer instead of allocating one.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }
