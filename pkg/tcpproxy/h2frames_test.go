package tcpproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frameServer is an HTTP/2 server (prior knowledge) that hands every new
// stream to the test, which answers it frame by frame: it sees the exact
// header fields, pseudo-headers included, and can end its side of a
// stream while the client keeps sending, which net/http handlers cannot.
type frameServer struct {
	addr    string
	streams chan *frameStream
}

// frameStream is one request stream.
type frameStream struct {
	id     uint32
	fields []hpack.HeaderField
	fc     *frameConn
	data   chan []byte // DATA payloads; closed at END_STREAM or RST_STREAM
	reset  chan struct{}
}

// frameConn is one connection; mu serialises writes.
type frameConn struct {
	mu   sync.Mutex
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func serveFrames(t *testing.T) *frameServer {
	t.Helper()
	s := &frameServer{streams: make(chan *frameStream, 16)}
	s.addr = serve(t, func(c *net.TCPConn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
			return
		}
		fc := &frameConn{fr: http2.NewFramer(c, c)}
		fc.enc = hpack.NewEncoder(&fc.hbuf)
		fc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fc.write(func() error { return fc.fr.WriteSettings() })
		live := map[uint32]*frameStream{}
		end := func(st *frameStream) {
			if _, ok := live[st.id]; ok {
				delete(live, st.id)
				close(st.data)
			}
		}
		for {
			f, err := fc.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fc.write(func() error { return fc.fr.WriteSettingsAck() })
				}
			case *http2.MetaHeadersFrame:
				st := &frameStream{id: f.StreamID, fields: f.Fields, fc: fc, data: make(chan []byte, 4096), reset: make(chan struct{})}
				live[st.id] = st
				s.streams <- st
				if f.StreamEnded() {
					end(st)
				}
			case *http2.DataFrame:
				st := live[f.StreamID]
				if n := len(f.Data()); n > 0 {
					fc.write(func() error {
						fc.fr.WriteWindowUpdate(0, uint32(n))
						return fc.fr.WriteWindowUpdate(f.StreamID, uint32(n))
					})
					if st != nil {
						st.data <- bytes.Clone(f.Data())
					}
				}
				if st != nil && f.StreamEnded() {
					end(st)
				}
			case *http2.RSTStreamFrame:
				if st := live[f.StreamID]; st != nil {
					close(st.reset)
					end(st)
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					fc.write(func() error { return fc.fr.WritePing(true, f.Data) })
				}
			case *http2.GoAwayFrame:
				return
			}
		}
	})
	return s
}

func (fc *frameConn) write(f func() error) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return f()
}

// next waits for the next stream.
func (s *frameServer) next(ctx context.Context, t *testing.T) *frameStream {
	t.Helper()
	select {
	case st := <-s.streams:
		return st
	case <-ctx.Done():
		t.Fatal("no stream reached the upstream")
		return nil
	}
}

// header returns the value of a field ("" if absent) and how many times
// it appears.
func (st *frameStream) header(name string) (string, int) {
	v, n := "", 0
	for _, f := range st.fields {
		if f.Name == name {
			if n == 0 {
				v = f.Value
			}
			n++
		}
	}
	return v, n
}

// pseudo lists the pseudo-header names in order.
func (st *frameStream) pseudo() []string {
	var p []string
	for _, f := range st.fields {
		if f.IsPseudo() {
			p = append(p, f.Name)
		}
	}
	return p
}

func (st *frameStream) respond(status int, endStream bool) error {
	fc := st.fc
	return fc.write(func() error {
		fc.hbuf.Reset()
		fc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
		return fc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: fc.hbuf.Bytes(), EndStream: endStream, EndHeaders: true})
	})
}

func (st *frameStream) send(p []byte, endStream bool) error {
	return st.fc.write(func() error { return st.fc.fr.WriteData(st.id, endStream, p) })
}

func (st *frameStream) rst() error {
	return st.fc.write(func() error { return st.fc.fr.WriteRSTStream(st.id, http2.ErrCodeCancel) })
}

// readAll collects DATA until END_STREAM (ok) or RST_STREAM or ctx's end
// (not ok).
func (st *frameStream) readAll(ctx context.Context) ([]byte, bool) {
	var b []byte
	for {
		select {
		case p, open := <-st.data:
			if !open {
				select {
				case <-st.reset:
					return b, false
				default:
					return b, true
				}
			}
			b = append(b, p...)
		case <-ctx.Done():
			return b, false
		}
	}
}

// readN collects n bytes of DATA.
func (st *frameStream) readN(ctx context.Context, n int) ([]byte, bool) {
	var b []byte
	for len(b) < n {
		select {
		case p, open := <-st.data:
			if !open {
				return b, false
			}
			b = append(b, p...)
		case <-ctx.Done():
			return b, false
		}
	}
	return b, true
}

// wasReset waits for the client's RST_STREAM.
func (st *frameStream) wasReset(ctx context.Context) bool {
	select {
	case <-st.reset:
		return true
	case <-ctx.Done():
		return false
	}
}
