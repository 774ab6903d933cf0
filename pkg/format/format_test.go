package format

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// stream implements Stream and every optional interface.
type stream struct {
	remote, local, proto, sni, upstream string
	start                               time.Time
	md                                  map[string]string // "ns:k1:k2" → value
}

func (s *stream) DownstreamRemoteAddress() string { return s.remote }
func (s *stream) DownstreamLocalAddress() string  { return s.local }
func (s *stream) Protocol() string                { return s.proto }
func (s *stream) RequestedServerName() string     { return s.sni }
func (s *stream) UpstreamRemoteAddress() string   { return s.upstream }
func (s *stream) StartTime() time.Time            { return s.start }
func (s *stream) DynamicMetadata(ns string, path []string) (string, bool) {
	v, ok := s.md[strings.Join(append([]string{ns}, path...), ":")]
	return v, ok
}

// plain implements Stream only.
type plain struct{ remote, local string }

func (p plain) DownstreamRemoteAddress() string { return p.remote }
func (p plain) DownstreamLocalAddress() string  { return p.local }
func (p plain) Protocol() string                { return "" }

type pseudo map[string]string

func (p pseudo) PseudoHeader(name string) (string, bool) { v, ok := p[name]; return v, ok }

func TestEval(t *testing.T) {
	host, _ := os.Hostname()
	full := &Env{
		Stream: &stream{
			remote: "10.0.0.1:5555", local: "[::1]:10000", proto: "HTTP/2", sni: "www.example.com",
			upstream: "10.9.9.9:443", start: time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600)),
			md: map[string]string{"tunnel:address": "backend:8443", "envoy.filters.network.tcp_proxy:tunnel_request_id": "rid"},
		},
		Header: http.Header{"X-In": {"a", "b"}, "Empty": {""}},
		Pseudo: pseudo{":method": "CONNECT", ":authority": "h:1"},
	}
	bare := &Env{Stream: plain{remote: "1.2.3.4:1", local: "5.6.7.8:80"}}
	tests := []struct {
		in        string
		env       *Env
		omitEmpty bool
		want      string
	}{
		{"plain", nil, false, "plain"},
		{"", full, false, ""},
		{"50%%", nil, false, "50%"},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", full, false, "10.0.0.1:5555"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", full, false, "10.0.0.1"},
		{"%DOWNSTREAM_REMOTE_PORT%", full, false, "5555"},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", full, false, "[::1]:10000"},
		{"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", full, false, "::1"},
		{"%DOWNSTREAM_LOCAL_PORT%", full, false, "10000"},
		{"%PROTOCOL%", full, false, "HTTP/2"},
		{"%REQUESTED_SERVER_NAME%:443", full, false, "www.example.com:443"},
		{"%UPSTREAM_REMOTE_ADDRESS%", full, false, "10.9.9.9:443"},
		{"%START_TIME%", full, false, "2024-05-06T06:08:09.123Z"},
		{"%HOSTNAME%", full, false, host},
		{"%DYNAMIC_METADATA(tunnel:address)%", full, false, "backend:8443"},
		{"%DYNAMIC_METADATA(tunnel:address):7%", full, false, "backend"},
		{"%DYNAMIC_METADATA(envoy.filters.network.tcp_proxy:tunnel_request_id)%", full, true, "rid"},
		{"%REQ(x-in)%", full, false, "a"},
		{"%REQ(:METHOD)% %REQ(:authority)%", full, false, "CONNECT h:1"},
		{"%REQ(missing?x-in):1%", full, false, "a"},
		{"[%REQ(empty)%]", full, false, "[]"}, // present but empty is not absent

		// Absent values: "-" by default, "" with OmitEmpty (header values).
		{"%REQUESTED_SERVER_NAME%:443", bare, false, "-:443"},
		{"%REQUESTED_SERVER_NAME%:443", bare, true, ":443"},
		{"%DYNAMIC_METADATA(tunnel:address)%", bare, false, "-"},
		{"%DYNAMIC_METADATA(tunnel:nope)%", full, false, "-"},
		{"%FILTER_STATE(envoy.tcp_proxy.propagate_response_headers:TYPED)%", full, false, "-"},
		{"%FILTER_STATE(k)%", full, true, ""},
		{"%PROTOCOL%", bare, false, "-"},
		{"%UPSTREAM_REMOTE_ADDRESS%|%START_TIME%", bare, false, "-|-"},
		{"%REQ(x-in)%", bare, false, "-"},
		{"%DOWNSTREAM_LOCAL_PORT%", nil, true, ""},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", &Env{}, false, "-"},
		{"%DOWNSTREAM_LOCAL_PORT%", bare, false, "80"},
	}
	for _, tt := range tests {
		f, err := Parse(tt.in, Options{OmitEmpty: tt.omitEmpty})
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := f.Eval(tt.env); got != tt.want {
			t.Errorf("Eval(%q, omitEmpty %v) = %q, want %q", tt.in, tt.omitEmpty, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	router := []string{"PROTOCOL", "REQ"}
	tests := []struct {
		in       string
		commands []string
		want     string
	}{
		{"100%", nil, `invalid format "100%": no valid command at position 3`},
		{"%PROTOCOL", nil, `invalid format "%PROTOCOL": no valid command at position 0`},
		{"%protocol%", nil, `invalid format "%protocol%": no valid command at position 0`},
		{"a %REQ(x:1%", nil, `invalid format "a %REQ(x:1%": no valid command at position 2`},
		{"%UPSTREAM_HOST%", nil, "%UPSTREAM_HOST%: unsupported command UPSTREAM_HOST (supported: " + strings.Join(AllCommands, ", ") + ")"},
		{"%HOSTNAME%", router, "%HOSTNAME%: unsupported command HOSTNAME (supported: PROTOCOL, REQ)"},
		{"%PROTOCOL(x)%", nil, "%PROTOCOL(x)%: command PROTOCOL does not take parameters"},
		{"%DOWNSTREAM_LOCAL_PORT:2%", nil, "%DOWNSTREAM_LOCAL_PORT:2%: command DOWNSTREAM_LOCAL_PORT does not take a length"},
		{"%REQ%", nil, "%REQ%: command REQ requires a header name"},
		{"%REQ(a?b?c)%", nil, `%REQ(a?b?c)%: more than 1 alternative header specified in "a?b?c"`},
		{"%REQ(a?)%", nil, `%REQ(a?)%: empty header name in "a?"`},
		{"%DYNAMIC_METADATA%", nil, "%DYNAMIC_METADATA%: command DYNAMIC_METADATA requires a metadata namespace"},
		{"%DYNAMIC_METADATA(:k)%", nil, "%DYNAMIC_METADATA(:k)%: command DYNAMIC_METADATA requires a metadata namespace"},
		{"%FILTER_STATE()%", nil, "%FILTER_STATE()%: invalid filter state configuration, key cannot be empty"},
		{"%FILTER_STATE(k:JSON)%", nil, "%FILTER_STATE(k:JSON)%: invalid filter state serialize type, only support PLAIN/TYPED/FIELD"},
		{"%FILTER_STATE(k:FIELD)%", nil, "%FILTER_STATE(k:FIELD)%: invalid filter state configuration, field name cannot be empty"},
		{"%START_TIME(%s)%", nil, `%START_TIME(%s)%: command START_TIME with a format ("%s") is not supported`},
		{"%START_TIME(x)%", nil, `%START_TIME(x)%: command START_TIME with a format ("x") is not supported`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in, Options{Commands: tt.commands})
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q):\n got %v\nwant %s", tt.in, err, tt.want)
		}
	}
}

func TestLiteralAndUses(t *testing.T) {
	for in, lit := range map[string]bool{"a": true, "": true, "%%": true, "a%PROTOCOL%": false} {
		f, err := Parse(in, Options{})
		if err != nil || f.IsLiteral() != lit {
			t.Errorf("%q: literal %v err %v, want %v", in, f.IsLiteral(), err, lit)
		}
	}
	f, _ := Parse("x%REQUESTED_SERVER_NAME%y", Options{})
	if !f.Uses("REQUESTED_SERVER_NAME") || f.Uses("PROTOCOL") || f.Uses("NOPE") {
		t.Error("Uses")
	}
}

// Evaluating a single command allocates nothing: the value is returned
// as the Stream gave it.
func TestEvalAllocs(t *testing.T) {
	f, _ := Parse("%DOWNSTREAM_LOCAL_ADDRESS%", Options{})
	lit, _ := Parse("literal", Options{})
	env := &Env{Stream: &stream{local: "1.2.3.4:5"}}
	if n := testing.AllocsPerRun(100, func() { f.Eval(env); lit.Eval(env) }); n != 0 {
		t.Errorf("%v allocations per run", n)
	}
}

func BenchmarkEval(b *testing.B) {
	f, _ := Parse("%REQUESTED_SERVER_NAME%:%DOWNSTREAM_LOCAL_PORT%", Options{})
	env := &Env{Stream: &stream{local: "1.2.3.4:5", sni: "example.com"}}
	b.ReportAllocs()
	for b.Loop() {
		f.Eval(env)
	}
}
