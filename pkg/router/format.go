package router

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// format is a header value parsed once at compile time: literal text and
// substitution operators.
type format struct {
	literal string    // the whole value when segs is nil
	segs    []segment // nil for a pure literal
}

type segKind uint8

const (
	segLiteral segKind = iota
	segRemoteAddress
	segRemoteAddressNoPort
	segLocalAddress
	segLocalAddressNoPort
	segLocalPort
	segProtocol
	segRequestHeader
)

type segment struct {
	kind      segKind
	text      string    // segLiteral
	main, alt headerRef // segRequestHeader; alt only when hasAlt
	hasAlt    bool
	maxLen    int // -1 when no :N suffix
}

// evalContext is what formatting reads for one Mutate call.
type evalContext struct {
	f       Formatter
	req     *Request    // nil unless the Formatter is a RequestFormatter
	headers http.Header // where %REQ(x)% looks up ordinary headers
}

var simpleCommands = map[string]segKind{
	"DOWNSTREAM_REMOTE_ADDRESS":              segRemoteAddress,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": segRemoteAddressNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":               segLocalAddress,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":  segLocalAddressNoPort,
	"DOWNSTREAM_LOCAL_PORT":                  segLocalPort,
	"PROTOCOL":                               segProtocol,
}

// parseFormat parses an Envoy substitution format string. "%%" is a
// literal '%'; every other '%' must start a command of the form
// %NAME%, %NAME(arg)% or %NAME(arg):N%, as in Envoy's
// SubstitutionFormatParser.
func parseFormat(s, path string) (format, error) {
	if !strings.Contains(s, "%") {
		return format{literal: s}, nil
	}
	var segs []segment
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{kind: segLiteral, text: lit.String()})
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
		name, arg, hasArg, maxLen, n, ok := scanCommand(s[pos:])
		if !ok {
			return format{}, fmt.Errorf("router: %s: invalid format %q: no valid command at position %d", path, s, pos)
		}
		seg, err := newCommandSegment(name, arg, hasArg, maxLen)
		if err != nil {
			return format{}, fmt.Errorf("router: %s: %s: %w", path, s[pos:pos+n], err)
		}
		flush()
		segs = append(segs, seg)
		pos += n
	}
	flush()
	if len(segs) == 1 && segs[0].kind == segLiteral {
		return format{literal: segs[0].text}, nil
	}
	if len(segs) == 0 {
		return format{}, nil
	}
	return format{segs: segs}, nil
}

// scanCommand matches ^%[A-Z0-9_]+(\([^)]*\))?(:[0-9]+)?% at the start of s
// and returns its parts and length.
func scanCommand(s string) (name, arg string, hasArg bool, maxLen, n int, ok bool) {
	maxLen = -1
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	if i == 1 {
		return "", "", false, 0, 0, false
	}
	name = s[1:i]
	if i < len(s) && s[i] == '(' {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return "", "", false, 0, 0, false
		}
		arg, hasArg = s[i+1:i+end], true
		i += end + 1
	}
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i+1 {
			return "", "", false, 0, 0, false
		}
		v, err := strconv.Atoi(s[i+1 : j])
		if err != nil {
			return "", "", false, 0, 0, false
		}
		maxLen, i = v, j
	}
	if i >= len(s) || s[i] != '%' {
		return "", "", false, 0, 0, false
	}
	return name, arg, hasArg, maxLen, i + 1, true
}

func newCommandSegment(name, arg string, hasArg bool, maxLen int) (segment, error) {
	if kind, ok := simpleCommands[name]; ok {
		if hasArg {
			return segment{}, fmt.Errorf("command %s does not take parameters", name)
		}
		if maxLen >= 0 {
			return segment{}, fmt.Errorf("command %s does not take a length", name)
		}
		return segment{kind: kind, maxLen: -1}, nil
	}
	if name != "REQ" {
		return segment{}, fmt.Errorf("unsupported command %s (supported: DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_PORT, PROTOCOL, REQ)", name)
	}
	if arg == "" {
		return segment{}, fmt.Errorf("command REQ requires a header name")
	}
	mainName, altName, hasAlt := strings.Cut(arg, "?")
	if strings.Contains(altName, "?") {
		return segment{}, fmt.Errorf("more than 1 alternative header specified in %q", arg)
	}
	if mainName == "" || (hasAlt && altName == "") {
		return segment{}, fmt.Errorf("empty header name in %q", arg)
	}
	seg := segment{kind: segRequestHeader, main: newHeaderRef(mainName), maxLen: maxLen, hasAlt: hasAlt}
	if hasAlt {
		seg.alt = newHeaderRef(altName)
	}
	return seg, nil
}

func (f *format) eval(ctx *evalContext) string {
	if f.segs == nil {
		return f.literal
	}
	if len(f.segs) == 1 {
		return f.segs[0].eval(ctx)
	}
	var b strings.Builder
	for i := range f.segs {
		b.WriteString(f.segs[i].eval(ctx))
	}
	return b.String()
}

func (s *segment) eval(ctx *evalContext) string {
	var v string
	switch s.kind {
	case segLiteral:
		return s.text
	case segRequestHeader:
		var ok bool
		v, ok = ctx.requestHeader(s.main)
		if !ok && s.hasAlt {
			v, _ = ctx.requestHeader(s.alt)
		}
		if s.maxLen >= 0 && len(v) > s.maxLen {
			v = v[:s.maxLen]
		}
		return v
	}
	if ctx.f == nil {
		return ""
	}
	switch s.kind {
	case segRemoteAddress:
		v = ctx.f.DownstreamRemoteAddress()
	case segRemoteAddressNoPort:
		v = withoutPort(ctx.f.DownstreamRemoteAddress())
	case segLocalAddress:
		v = ctx.f.DownstreamLocalAddress()
	case segLocalAddressNoPort:
		v = withoutPort(ctx.f.DownstreamLocalAddress())
	case segLocalPort:
		if _, port, err := net.SplitHostPort(ctx.f.DownstreamLocalAddress()); err == nil {
			v = port
		}
	case segProtocol:
		v = ctx.f.Protocol()
	}
	return v
}

// requestHeader reads the first value of a request header for %REQ(x)%,
// like Envoy's RequestHeaderFormatter.
func (ctx *evalContext) requestHeader(ref headerRef) (string, bool) {
	if ref.src != srcHeader {
		if ctx.req == nil {
			return "", false
		}
		return ref.lookup(ctx.req)
	}
	vs := ctx.headers[ref.key]
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
