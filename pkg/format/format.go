// Package format is Envoy's substitution formatter for the places hop
// evaluates one: header values (route headers_to_add, tcp_proxy
// tunneling_config.headers_to_add) and tcp_proxy tunneling_config.hostname.
//
// A format string is parsed once, at config compile time, into an
// immutable Format of literal text and commands (%NAME%, %NAME(arg)%,
// %NAME(arg):N%, "%%" for a literal '%'), as Envoy's
// SubstitutionFormatParser does. Evaluating it reads the per-stream or
// per-connection values from an Env and allocates nothing for a pure
// literal or a single command.
//
// A command whose value is absent (no SNI, no such header, no such
// metadata) formats as "" when the Format was parsed with OmitEmpty —
// Envoy's header formatter (HeaderParser) — and as "-" otherwise, as
// Envoy's text formatter does for tcp_proxy's hostname.
//
// The package is a leaf: it imports the standard library and
// go-control-plane's core protos only.
package format

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Options tune Parse.
type Options struct {
	// Commands are the command names the caller can evaluate, in the order
	// an "unsupported command" error lists them. Nil means every command
	// of this package (AllCommands).
	Commands []string
	// OmitEmpty formats an absent value as "" instead of "-".
	OmitEmpty bool
}

// Stream supplies the values of one stream or connection. A method
// returning "" means the value is absent.
type Stream interface {
	// DownstreamRemoteAddress is the client address as ip:port
	// ("[::1]:5000" for IPv6).
	DownstreamRemoteAddress() string
	// DownstreamLocalAddress is the address the connection was accepted
	// on, as ip:port.
	DownstreamLocalAddress() string
	// Protocol is the downstream HTTP protocol ("HTTP/1.1", "HTTP/2",
	// "HTTP/3"); "" on a raw TCP connection.
	Protocol() string
}

// The optional interfaces below extend a Stream; a Stream that does not
// implement one has those values absent.

// ServerNamer gives %REQUESTED_SERVER_NAME%: the SNI of the downstream
// TLS handshake (terminated, or read by a tls_inspector).
type ServerNamer interface{ RequestedServerName() string }

// UpstreamAddresser gives %UPSTREAM_REMOTE_ADDRESS% (ip:port).
type UpstreamAddresser interface{ UpstreamRemoteAddress() string }

// StartTimer gives %START_TIME%.
type StartTimer interface{ StartTime() time.Time }

// MetadataSource gives %DYNAMIC_METADATA(namespace:key:...)%: the value
// at path under namespace, formatted as text, and whether it exists.
type MetadataSource interface {
	DynamicMetadata(namespace string, path []string) (string, bool)
}

// PseudoHeaders gives %REQ(:method)%, %REQ(:authority)%, %REQ(:path)%
// and %REQ(:scheme)%. name is one of those four, lower case.
type PseudoHeaders interface {
	PseudoHeader(name string) (string, bool)
}

// Env is what one evaluation reads. Every field may be nil: the values
// it would give are absent. Env is passed by pointer and never retained,
// so a caller can build it on its stack.
type Env struct {
	Stream Stream
	// Header is where %REQ(x)% looks up an ordinary header (the first
	// value; keys in net/http's canonical form).
	Header http.Header
	// Pseudo answers %REQ(:x)%.
	Pseudo PseudoHeaders
}

// Format is a parsed format string. It is immutable and safe for
// concurrent use.
type Format struct {
	literal   string    // the whole value when segs is nil
	segs      []segment // nil for a pure literal
	omitEmpty bool
}

// IsLiteral reports a format without commands: Eval always returns the
// same string.
func (f *Format) IsLiteral() bool { return f.segs == nil }

// Uses reports whether the format contains command name (for callers
// that gather a value only when it is needed).
func (f *Format) Uses(name string) bool {
	k, ok := commandKinds[name]
	if !ok {
		return false
	}
	for i := range f.segs {
		if f.segs[i].kind == k {
			return true
		}
	}
	return false
}

// Parse parses s. Errors do not name a component or field: callers wrap
// them with both ("router: request_headers_to_add[0].header.value: %w").
func Parse(s string, opt Options) (*Format, error) {
	f := &Format{omitEmpty: opt.OmitEmpty}
	if !strings.Contains(s, "%") {
		f.literal = s
		return f, nil
	}
	var segs []segment
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{kind: kindLiteral, text: lit.String()})
			lit.Reset()
		}
	}
	for pos := 0; pos < len(s); {
		c := s[pos]
		if c != '%' {
			lit.WriteByte(c)
			pos++
			continue
		}
		if pos+1 < len(s) && s[pos+1] == '%' {
			lit.WriteByte('%')
			pos += 2
			continue
		}
		cmd, ok := scanCommand(s[pos:])
		if !ok {
			return nil, fmt.Errorf("invalid format %q: no valid command at position %d", s, pos)
		}
		seg, err := newSegment(cmd, opt.Commands)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s[pos:pos+cmd.n], err)
		}
		flush()
		segs = append(segs, seg)
		pos += cmd.n
	}
	flush()
	switch {
	case len(segs) == 0:
	case len(segs) == 1 && segs[0].kind == kindLiteral:
		f.literal = segs[0].text
	default:
		f.segs = segs
	}
	return f, nil
}

// command is one scanned %NAME(arg):N%.
type command struct {
	name, arg string
	hasArg    bool
	maxLen    int // -1 without :N
	n         int // bytes of the command, both '%' included
}

// scanCommand matches ^%[A-Z0-9_]+(\([^)]*\))?(:[0-9]+)?% at the start of
// s, Envoy's command syntax.
func scanCommand(s string) (command, bool) {
	c := command{maxLen: -1}
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	if i == 1 {
		return c, false
	}
	c.name = s[1:i]
	if i < len(s) && s[i] == '(' {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return c, false
		}
		c.arg, c.hasArg = s[i+1:i+end], true
		i += end + 1
	}
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return c, false
		}
		v, err := strconv.Atoi(s[i+1 : j])
		if err != nil {
			return c, false
		}
		c.maxLen, i = v, j
	}
	if i >= len(s) || s[i] != '%' {
		return c, false
	}
	c.n = i + 1
	return c, true
}

// Eval formats f against env (which may be nil).
func (f *Format) Eval(env *Env) string {
	if f.segs == nil {
		return f.literal
	}
	if len(f.segs) == 1 {
		return f.segs[0].eval(env, f.omitEmpty)
	}
	var b strings.Builder
	for i := range f.segs {
		b.WriteString(f.segs[i].eval(env, f.omitEmpty))
	}
	return b.String()
}

// absent is the text of an absent value.
func absent(omitEmpty bool) string {
	if omitEmpty {
		return ""
	}
	return "-"
}

func (s *segment) eval(env *Env, omitEmpty bool) string {
	if s.kind == kindLiteral {
		return s.text
	}
	v, ok := s.value(env)
	if !ok {
		return absent(omitEmpty)
	}
	if s.maxLen >= 0 && len(v) > s.maxLen {
		v = v[:s.maxLen]
	}
	return v
}

// value is the command's value and whether it is present.
func (s *segment) value(env *Env) (string, bool) {
	switch s.kind {
	case kindHostname:
		return s.text, s.text != ""
	case kindFilterState:
		return "", false // hop keeps no filter state a formatter can read
	}
	if env == nil {
		return "", false
	}
	if s.kind == kindRequestHeader {
		v, ok := env.requestHeader(&s.main)
		if !ok && s.hasAlt {
			v, ok = env.requestHeader(&s.alt)
		}
		return v, ok
	}
	st := env.Stream
	if st == nil {
		return "", false
	}
	var v string
	switch s.kind {
	case kindRemoteAddress:
		v = st.DownstreamRemoteAddress()
	case kindRemoteAddressNoPort:
		v = withoutPort(st.DownstreamRemoteAddress())
	case kindRemotePort:
		v = portOf(st.DownstreamRemoteAddress())
	case kindLocalAddress:
		v = st.DownstreamLocalAddress()
	case kindLocalAddressNoPort:
		v = withoutPort(st.DownstreamLocalAddress())
	case kindLocalPort:
		v = portOf(st.DownstreamLocalAddress())
	case kindProtocol:
		v = st.Protocol()
	case kindServerName:
		if sn, ok := st.(ServerNamer); ok {
			v = sn.RequestedServerName()
		}
	case kindUpstreamAddress:
		if ua, ok := st.(UpstreamAddresser); ok {
			v = ua.UpstreamRemoteAddress()
		}
	case kindStartTime:
		if t, ok := st.(StartTimer); ok {
			if ts := t.StartTime(); !ts.IsZero() {
				v = ts.UTC().Format(startTimeLayout)
			}
		}
	case kindDynamicMetadata:
		if md, ok := st.(MetadataSource); ok {
			return md.DynamicMetadata(s.text, s.path)
		}
	}
	return v, v != ""
}

// startTimeLayout is Envoy's default START_TIME format,
// %Y-%m-%dT%H:%M:%E3SZ.
const startTimeLayout = "2006-01-02T15:04:05.000Z"

// requestHeader reads a request header for %REQ(x)%, like Envoy's
// RequestHeaderFormatter: the first value of an ordinary header.
func (env *Env) requestHeader(h *headerName) (string, bool) {
	if h.pseudo != "" {
		if env.Pseudo == nil {
			return "", false
		}
		return env.Pseudo.PseudoHeader(h.pseudo)
	}
	vs := env.Header[h.key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// withoutPort turns "1.2.3.4:80" into "1.2.3.4" and "[::1]:80" into "::1".
func withoutPort(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// portOf is the port of ip:port, or "" when addr has none.
func portOf(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		return port
	}
	return ""
}
