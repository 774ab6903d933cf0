package h2wire

import "encoding/binary"

// HTTP/2 wire constants (RFC 9113 §6, §7, §11; RFC 8441 §3).
const (
	// ClientPreface is what an HTTP/2 client sends before its first frame.
	ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	frameHeaderLen = 9
	settingLen     = 6

	typeHeaders   = 0x1
	typeRSTStream = 0x3
	typeSettings  = 0x4
	typeGoAway    = 0x7

	flagAck = 0x1

	// SettingEnableConnectProtocol is SETTINGS_ENABLE_CONNECT_PROTOCOL.
	SettingEnableConnectProtocol = 0x8

	codeNoError       = 0x0
	codeProtocolError = 0x1
	codeInternalError = 0x2
	codeRefusedStream = 0x7
	codeConnectError  = 0xa
)

// event is what one step of a scanner found.
type event uint8

const (
	evNone       event = iota // nothing consumed: the input is empty
	evPreface                 // preface bytes passed
	evHeaderPart              // some bytes of a frame header, not yet complete
	evHeader                  // a frame header is complete: typ, flags, sid, length are set
	evPayload                 // payload bytes, the frame goes on
	evSetting                 // a SETTINGS entry is complete in ent (only when settings is set)
	evEnd                     // the frame's payload is complete (possibly with the last bytes)
)

// scanner follows the frame boundaries of one direction of a connection,
// a few bytes at a time or a whole payload at once. It never allocates:
// a frame header is collected in hdr, the first payload bytes the owner
// asks for in capture, a SETTINGS entry in ent.
//
// A scanner is owned by the goroutine reading (or writing) its direction.
type scanner struct {
	skip int // preface bytes still to pass before the first frame

	hdr     [frameHeaderLen]byte
	nh      int  // header bytes collected
	inFrame bool // the header is complete; payload follows
	left    uint32

	length uint32
	typ    byte
	flags  byte
	sid    uint32

	// Set by the owner at evHeader:
	want     int  // payload bytes to collect in capture (≤ len(capture))
	settings bool // report the payload as SETTINGS entries (evSetting)

	capture [8]byte
	ncap    int
	ent     [settingLen]byte
	nent    int
}

// next consumes the start of p and says what it was. It consumes nothing
// only for an empty p, except that a frame whose payload is complete
// reports evEnd without consuming (a zero-length frame right after its
// header). The caller loops until evNone.
func (s *scanner) next(p []byte) (int, event) {
	if s.skip > 0 {
		if len(p) == 0 {
			return 0, evNone
		}
		n := min(s.skip, len(p))
		s.skip -= n
		return n, evPreface
	}
	if !s.inFrame {
		if len(p) == 0 {
			return 0, evNone
		}
		n := copy(s.hdr[s.nh:], p)
		s.nh += n
		if s.nh < frameHeaderLen {
			return n, evHeaderPart
		}
		h := s.hdr[:]
		s.length = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
		s.typ, s.flags = h[3], h[4]
		s.sid = binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
		s.left = s.length
		s.inFrame = true
		s.want, s.settings, s.ncap, s.nent = 0, false, 0, 0
		return n, evHeader
	}
	if s.nent == settingLen {
		s.nent = 0 // the owner has read the entry
	}
	if s.left == 0 {
		s.endFrame()
		return 0, evEnd
	}
	if len(p) == 0 {
		return 0, evNone
	}
	var n int
	ev := evPayload
	switch {
	case s.settings:
		n = copy(s.ent[s.nent:], p[:min(len(p), int(s.left))])
		s.nent += n
		if s.nent == settingLen {
			ev = evSetting
		}
	case s.ncap < s.want:
		n = copy(s.capture[s.ncap:s.want], p[:min(len(p), int(s.left))])
		s.ncap += n
	default:
		n = int(min(uint32(len(p)), s.left))
	}
	s.left -= uint32(n)
	if s.left == 0 && ev != evSetting {
		s.endFrame()
		return n, evEnd
	}
	return n, ev
}

func (s *scanner) endFrame() {
	s.inFrame = false
	s.nh = 0
}

// atBoundary reports whether the bytes seen so far end on a frame
// boundary.
func (s *scanner) atBoundary() bool { return s.skip == 0 && !s.inFrame && s.nh == 0 }

// code returns the 32-bit value at off in capture (an error code), or
// ok=false when the payload was too short to hold it.
func (s *scanner) code(off int) (uint32, bool) {
	if s.ncap < off+4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(s.capture[off:]), true
}

// entry decodes the SETTINGS entry in ent.
func (s *scanner) entry() (id uint16, val uint32) {
	return binary.BigEndian.Uint16(s.ent[:]), binary.BigEndian.Uint32(s.ent[2:])
}

// putHeader writes a frame header into b.
func putHeader(b []byte, length uint32, typ, flags byte, sid uint32) {
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
	b[3], b[4] = typ, flags
	binary.BigEndian.PutUint32(b[5:], sid&(1<<31-1))
}
