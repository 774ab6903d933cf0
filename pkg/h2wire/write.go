package h2wire

import (
	"net"
	"time"
)

// Write follows the frames written and writes them, edited when an edit
// is pending (the first SETTINGS to strip, a reset code to rewrite, a
// GOAWAY to send at the next boundary). A Write that edits returns
// len(p) once its output is written: bytes held back (a SETTINGS frame
// split across writes) count as written.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if !c.started {
		c.started = true
		if c.o.OnFirstWrite != nil {
			c.o.OnFirstWrite()
		}
	}
	edit := c.strip || c.stripping || c.rewrite || c.goAwayWant.Load() || c.pendingRewrites()
	if !edit {
		c.scanWrite(p, false)
		n, err := c.Conn.Write(p)
		c.goAwayAtBoundaryLocked() // Abort came while this Write was on
		return n, err
	}
	c.out = c.out[:0]
	abort := c.scanWrite(p, true)
	if abort {
		c.Conn.SetWriteDeadline(time.Now().Add(abortGrace))
	}
	if len(c.out) > 0 {
		if _, err := c.Conn.Write(c.out); err != nil {
			return 0, err
		}
	}
	if abort {
		c.Close()
		return len(p), net.ErrClosed
	}
	c.goAwayAtBoundaryLocked()
	return len(p), nil
}

// scanWrite follows the frames of p and counts them. With edit, it builds
// the bytes to send in c.out; it returns true when a GOAWAY was appended
// for Abort (the rest of p is dropped and the connection is to close).
func (c *Conn) scanWrite(p []byte, edit bool) (abort bool) {
	s := &c.wr
	if edit && c.goAwayWant.Load() && s.atBoundary() && !c.stripping {
		c.out = appendGoAway(c.out, c.lastStream.Load(), codeProtocolError)
		return true
	}
	for {
		n, ev := s.next(p)
		chunk := p[:n]
		p = p[n:]
		switch ev {
		case evNone:
			return false
		case evPreface:
			c.emit(edit, chunk)
		case evHeaderPart:
			if !c.strip {
				c.emit(edit, chunk)
			} // else held in s.hdr until the type is known
		case evHeader:
			c.onWriteHeader(edit, chunk)
		case evPayload:
			if !c.stripping && !c.rewrite { // else held or captured
				c.emit(edit, chunk)
			}
		case evSetting:
			if c.stripping {
				if id, _ := s.entry(); id != SettingEnableConnectProtocol {
					c.held = append(c.held, s.ent[:]...)
				}
			} else {
				c.emit(edit, chunk)
			}
		case evEnd:
			c.onWriteEnd(edit, chunk)
			if edit && c.goAwayWant.Load() {
				c.out = appendGoAway(c.out, c.lastStream.Load(), codeProtocolError)
				return true
			}
		}
	}
}

func (c *Conn) emit(edit bool, b []byte) {
	if edit {
		c.out = append(c.out, b...)
	}
}

// onWriteHeader decides what to do with the frame whose header is complete.
// chunk holds the header bytes consumed by this step.
func (c *Conn) onWriteHeader(edit bool, chunk []byte) {
	s := &c.wr
	switch s.typ {
	case typeRSTStream:
		s.want = 4
		c.rewrite = edit && c.pendingRewrites() && s.length == 4
	case typeGoAway:
		s.want = 8
	case typeSettings:
		if c.strip && s.flags&flagAck == 0 {
			c.strip = false
			c.stripping = true
			s.settings = true
			c.held = c.held[:0]
			return // the header goes out with the new length at evEnd
		}
	}
	if c.strip {
		c.emit(edit, s.hdr[:]) // held until now
		return
	}
	c.emit(edit, chunk)
}

// onWriteEnd ends a frame: counts it and sends what was held back.
func (c *Conn) onWriteEnd(edit bool, chunk []byte) {
	s := &c.wr
	switch s.typ {
	case typeRSTStream:
		inc(c.o.Counters.TxReset)
		code, ok := s.code(0)
		if ok && code == codeRefusedStream {
			inc(c.o.Counters.StreamRefused)
		}
		if c.rewrite {
			c.rewrite = false
			switch {
			case !ok || code != codeInternalError:
			case c.cxRewrites.Load() > 0:
				c.cxRewrites.Add(-1)
				code = codeConnectError
			case c.rstRewrites.Load() > 0:
				c.rstRewrites.Add(-1)
				code = codeProtocolError
			}
			var b [4]byte
			b[0], b[1], b[2], b[3] = byte(code>>24), byte(code>>16), byte(code>>8), byte(code)
			c.emit(edit, b[:])
			return
		}
	case typeGoAway:
		if code, ok := s.code(4); ok && code == codeNoError {
			inc(c.o.Counters.GoAwaySent)
		}
	case typeSettings:
		if c.stripping {
			c.stripping = false
			var h [frameHeaderLen]byte
			putHeader(h[:], uint32(len(c.held)), s.typ, s.flags, s.sid)
			c.emit(edit, h[:])
			c.emit(edit, c.held)
			return
		}
	}
	c.emit(edit, chunk)
}
