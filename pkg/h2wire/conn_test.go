package h2wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/hopproxy/hop/pkg/stats"
)

// fakeConn records what is written and serves reads from a buffer.
type fakeConn struct {
	net.Conn // nil: unused methods panic
	mu       sync.Mutex
	wrote    bytes.Buffer
	writes   int
	rd       io.Reader
	closed   chan struct{}
	once     sync.Once
}

func newFake(in []byte) *fakeConn {
	return &fakeConn{rd: bytes.NewReader(in), closed: make(chan struct{})}
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	return f.wrote.Write(p)
}
func (f *fakeConn) Read(p []byte) (int, error)         { return f.rd.Read(p) }
func (f *fakeConn) Close() error                       { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
func (f *fakeConn) output() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.wrote.Bytes())
}

func newCounters(st *stats.Store) Counters {
	sc := st.Root().Sub("http2")
	return Counters{RxReset: sc.Counter("rx_reset"), TxReset: sc.Counter("tx_reset"), GoAwaySent: sc.Counter("goaway_sent"), StreamRefused: sc.Counter("stream_refused_errors")}
}

func value(t *testing.T, st *stats.Store, name string) int64 {
	t.Helper()
	v, ok := st.Get(name)
	if !ok {
		t.Fatalf("stat %s does not exist", name)
	}
	return v
}

// frames builds HTTP/2 frames with x/net's Framer.
func frames(t *testing.T, write func(fr *http2.Framer)) []byte {
	t.Helper()
	var b bytes.Buffer
	write(http2.NewFramer(&b, nil))
	return b.Bytes()
}

// parse reads every frame of b; settings are returned per SETTINGS frame.
type parsed struct {
	types    []http2.FrameType
	settings [][]http2.Setting
	rst      []http2.ErrCode
	goaway   []*http2.GoAwayFrame
}

func parse(t *testing.T, b []byte) parsed {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	var p parsed
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return p
		}
		if err != nil {
			t.Fatalf("output does not parse as frames after %v: %v", p.types, err)
		}
		p.types = append(p.types, f.Header().Type)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			var ss []http2.Setting
			f.ForeachSetting(func(s http2.Setting) error { ss = append(ss, s); return nil })
			p.settings = append(p.settings, ss)
		case *http2.RSTStreamFrame:
			p.rst = append(p.rst, f.ErrCode)
		case *http2.GoAwayFrame:
			g := *f
			p.goaway = append(p.goaway, &g)
		}
	}
}

// writeSplit writes b in pieces of the given sizes (cycled).
func writeSplit(t *testing.T, c *Conn, b []byte, sizes []int) {
	t.Helper()
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		if m, err := c.Write(b[:n]); err != nil || m != n {
			t.Fatalf("Write = %d, %v; want %d", m, err, n)
		}
		b = b[n:]
	}
}

var splits = [][]int{{1}, {2}, {3}, {5}, {7}, {9}, {13}, {4, 17}, {1 << 20}}

// serverOutput is what an x/net server might write: its SETTINGS with
// ENABLE_CONNECT_PROTOCOL, a window update, a response, resets and a
// graceful GOAWAY, then a second SETTINGS.
func serverOutput(t *testing.T) []byte {
	return frames(t, func(fr *http2.Framer) {
		fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100},
			http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20},
		)
		fr.WriteWindowUpdate(0, 1<<20)
		fr.WriteSettingsAck()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
		fr.WriteData(1, true, bytes.Repeat([]byte("x"), 100))
		fr.WriteRSTStream(3, http2.ErrCodeRefusedStream)
		fr.WriteRSTStream(5, http2.ErrCodeInternal)
		fr.WriteGoAway(5, http2.ErrCodeNo, nil)
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1})
	})
}

func TestWriteStripsFirstSettings(t *testing.T) {
	in := serverOutput(t)
	for _, strip := range []bool{false, true} {
		for _, sizes := range splits {
			st := stats.New()
			f := newFake(nil)
			c := Server(f, Options{Counters: newCounters(st), StripExtendedConnect: strip})
			writeSplit(t, c, in, sizes)
			out := f.output()
			if !strip {
				if !bytes.Equal(out, in) {
					t.Fatalf("sizes %v: output differs from input without an edit", sizes)
				}
			} else {
				if len(out) != len(in)-settingLen {
					t.Fatalf("sizes %v: output has %d bytes, want %d", sizes, len(out), len(in)-settingLen)
				}
				p := parse(t, out)
				want := []http2.Setting{{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, {ID: http2.SettingMaxConcurrentStreams, Val: 100}, {ID: http2.SettingInitialWindowSize, Val: 1 << 20}}
				if got := p.settings[0]; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
					t.Fatalf("sizes %v: first SETTINGS = %v, want %v", sizes, got, want)
				}
				if got := p.settings[2]; len(got) != 1 || got[0].ID != http2.SettingEnableConnectProtocol {
					t.Fatalf("sizes %v: a later SETTINGS was edited: %v", sizes, got)
				}
			}
			for name, want := range map[string]int64{"http2.tx_reset": 2, "http2.stream_refused_errors": 1, "http2.goaway_sent": 1, "http2.rx_reset": 0} {
				if got := value(t, st, name); got != want {
					t.Errorf("strip %v sizes %v: %s = %d, want %d", strip, sizes, name, got, want)
				}
			}
		}
	}
}

func TestReadFollowsClientFrames(t *testing.T) {
	in := append([]byte(ClientPreface), frames(t, func(fr *http2.Framer) {
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndHeaders: true})
		fr.WriteData(1, false, bytes.Repeat([]byte("y"), 300))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: []byte{0x82}, EndHeaders: true})
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteRSTStream(7, http2.ErrCodeCancel)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true}) // trailers-like: not a new stream
	})...)
	for _, sizes := range splits {
		st := stats.New()
		c := Server(newFake(in), Options{Counters: newCounters(st)})
		buf := make([]byte, 1<<16)
		for i := 0; ; i++ {
			n, err := c.Read(buf[:min(len(buf), sizes[i%len(sizes)])])
			if n == 0 && err != nil {
				break
			}
		}
		if got := c.LastStreamID(); got != 7 {
			t.Errorf("sizes %v: LastStreamID = %d, want 7", sizes, got)
		}
		if got := value(t, st, "http2.rx_reset"); got != 2 {
			t.Errorf("sizes %v: rx_reset = %d, want 2", sizes, got)
		}
	}
}

func TestClientLearnsPeerSettings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings []http2.Setting
		want     bool
	}{
		{"enabled", []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 10}, {ID: http2.SettingEnableConnectProtocol, Val: 1}}, true},
		{"zero", []http2.Setting{{ID: http2.SettingEnableConnectProtocol, Val: 0}}, false},
		{"absent", []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 10}}, false},
	} {
		in := frames(t, func(fr *http2.Framer) {
			fr.WriteSettings(tc.settings...)
			fr.WriteSettingsAck()
			fr.WriteSettings(http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1}) // too late to count
		})
		for _, sizes := range splits {
			c := Client(newFake(in), Options{})
			if c.PeerExtendedConnect() {
				t.Fatal("extended CONNECT known before any SETTINGS")
			}
			buf := make([]byte, 64)
			for i := 0; ; i++ {
				n, err := c.Read(buf[:min(len(buf), sizes[i%len(sizes)])])
				if n == 0 && err != nil {
					break
				}
			}
			select {
			case <-c.PeerSettings():
			default:
				t.Fatalf("%s sizes %v: PeerSettings not closed", tc.name, sizes)
			}
			if got := c.PeerExtendedConnect(); got != tc.want {
				t.Errorf("%s sizes %v: PeerExtendedConnect = %v, want %v", tc.name, sizes, got, tc.want)
			}
		}
	}
	// The client's own writes start with the preface, which is passed on.
	st := stats.New()
	f := newFake(nil)
	c := Client(f, Options{Counters: newCounters(st)})
	out := append([]byte(ClientPreface), frames(t, func(fr *http2.Framer) { fr.WriteRSTStream(1, http2.ErrCodeCancel) })...)
	writeSplit(t, c, out, []int{5})
	if !bytes.Equal(f.output(), out) || value(t, st, "http2.tx_reset") != 1 {
		t.Errorf("client writes: output changed or reset not counted")
	}
}

func TestAbortAtBoundary(t *testing.T) {
	f := newFake(append([]byte(ClientPreface), frames(t, func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x82}, EndHeaders: true})
	})...))
	c := Server(f, Options{})
	io.ReadAll(c)
	head := frames(t, func(fr *http2.Framer) { fr.WriteSettings() })
	writeSplit(t, c, head, []int{100})
	c.Abort()
	select {
	case <-f.closed:
	default:
		t.Fatal("Abort at a frame boundary did not close the connection")
	}
	p := parse(t, f.output())
	if len(p.goaway) != 1 || p.goaway[0].LastStreamID != 3 || p.goaway[0].ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("frames after Abort: %v %+v", p.types, p.goaway)
	}
	if _, err := c.Write(head); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Abort: %v, want net.ErrClosed", err)
	}
}

func TestAbortMidFrame(t *testing.T) {
	f := newFake(nil)
	c := Server(f, Options{})
	data := frames(t, func(fr *http2.Framer) { fr.WriteData(1, false, bytes.Repeat([]byte("z"), 50)) })
	more := frames(t, func(fr *http2.Framer) { fr.WriteData(1, true, []byte("after")) })
	c.Write(data[:20])
	c.Abort()
	select {
	case <-f.closed:
		t.Fatal("Abort closed the connection in the middle of a frame")
	default:
	}
	c.Write(append(data[20:], more...))
	<-f.closed
	p := parse(t, f.output())
	if len(p.types) != 2 || p.types[0] != http2.FrameData || len(p.goaway) != 1 || p.goaway[0].ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("frames: %v, want the DATA frame then GOAWAY only", p.types)
	}
}

func TestAbortGivesUpWithoutBoundary(t *testing.T) {
	f := newFake(nil)
	c := Server(f, Options{})
	c.Write(frames(t, func(fr *http2.Framer) { fr.WriteData(1, false, []byte("half")) })[:11])
	c.Abort()
	select {
	case <-f.closed:
	case <-time.After(abortGrace + 5*time.Second):
		t.Fatal("Abort never closed a connection stuck in a frame")
	}
}

func TestMarkProtocolErrorReset(t *testing.T) {
	st := stats.New()
	f := newFake(nil)
	c := Server(f, Options{Counters: newCounters(st)})
	c.MarkProtocolErrorReset()
	in := frames(t, func(fr *http2.Framer) {
		fr.WriteRSTStream(1, http2.ErrCodeCancel) // not INTERNAL_ERROR: kept
		fr.WriteRSTStream(3, http2.ErrCodeInternal)
		fr.WriteRSTStream(5, http2.ErrCodeInternal) // one rewrite only
	})
	writeSplit(t, c, in, []int{3, 11})
	p := parse(t, f.output())
	want := []http2.ErrCode{http2.ErrCodeCancel, http2.ErrCodeProtocol, http2.ErrCodeInternal}
	if len(p.rst) != 3 || p.rst[0] != want[0] || p.rst[1] != want[1] || p.rst[2] != want[2] {
		t.Fatalf("reset codes %v, want %v", p.rst, want)
	}
	if got := value(t, st, "http2.tx_reset"); got != 3 {
		t.Errorf("tx_reset = %d, want 3", got)
	}
}

func TestMarkConnectErrorReset(t *testing.T) {
	f := newFake(nil)
	c := Server(f, Options{})
	c.MarkProtocolErrorReset()
	c.MarkConnectErrorReset()
	in := frames(t, func(fr *http2.Framer) {
		fr.WriteRSTStream(1, http2.ErrCodeNo) // not INTERNAL_ERROR: kept
		fr.WriteRSTStream(3, http2.ErrCodeInternal)
		fr.WriteRSTStream(5, http2.ErrCodeInternal)
		fr.WriteRSTStream(7, http2.ErrCodeInternal)
	})
	writeSplit(t, c, in, []int{5, 20})
	p := parse(t, f.output())
	want := []http2.ErrCode{http2.ErrCodeNo, http2.ErrCodeConnect, http2.ErrCodeProtocol, http2.ErrCodeInternal}
	if len(p.rst) != len(want) {
		t.Fatalf("reset codes %v, want %v", p.rst, want)
	}
	for i := range want {
		if p.rst[i] != want[i] {
			t.Fatalf("reset codes %v, want %v", p.rst, want)
		}
	}
}

// TestNoAllocations: following frames costs no allocation once the
// connection is past its first SETTINGS.
func TestNoAllocations(t *testing.T) {
	st := stats.New()
	f := newFake(nil)
	c := Server(f, Options{Counters: newCounters(st), StripExtendedConnect: true})
	c.Write(frames(t, func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1})
	}))
	out := frames(t, func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
		fr.WriteData(1, true, bytes.Repeat([]byte("x"), 1000))
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
	})
	discard := &countConn{}
	c.Conn = discard
	if n := testing.AllocsPerRun(100, func() { c.Write(out[:17]); c.Write(out[17:]) }); n != 0 {
		t.Errorf("Write allocates %v times per run", n)
	}
	rd := &loopReader{b: out}
	r := Server(rd, Options{Counters: newCounters(st)})
	r.rd.skip = 0
	buf := make([]byte, 700)
	if n := testing.AllocsPerRun(100, func() { r.Read(buf); r.Read(buf) }); n != 0 {
		t.Errorf("Read allocates %v times per run", n)
	}
}

type countConn struct{ net.Conn }

func (c *countConn) Write(p []byte) (int, error) { return len(p), nil }

// loopReader serves b over and over.
type loopReader struct {
	net.Conn
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}
