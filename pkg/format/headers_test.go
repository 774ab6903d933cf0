package format

import (
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func hvo(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
}

func TestHeadersToAddApply(t *testing.T) {
	const (
		appendOrAdd = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		ifAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
		overwrite   = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		ifExists    = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
	)
	keepEmpty := hvo("keep", "%REQUESTED_SERVER_NAME%", appendOrAdd)
	keepEmpty.KeepEmptyValue = true
	legacyNoAppend := hvo("legacy", "new", appendOrAdd)
	legacyNoAppend.Append = wrapperspb.Bool(false)
	hs, err := CompileHeadersToAdd([]*corev3.HeaderValueOption{
		hvo("header0", "value0", appendOrAdd),
		hvo("header1", "value1", appendOrAdd),
		hvo("header1", "value2", appendOrAdd),
		hvo("downstream-local-port", "%DOWNSTREAM_LOCAL_PORT%", appendOrAdd),
		hvo("present", "added", ifAbsent),
		hvo("absent", "added", ifAbsent),
		hvo("replace", "new", overwrite),
		hvo("only-if-there", "new", ifExists),
		hvo("dropped", "%REQUESTED_SERVER_NAME%", appendOrAdd), // absent → "" → not added
		hvo("echo", "%REQ(present)%", overwrite),               // reads h before any change
		keepEmpty,
		legacyNoAppend,
	}, "headers_to_add", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Present": {"old"}, "Replace": {"a", "b"}, "Legacy": {"old"}}
	env := &Env{Stream: plain{local: "127.0.0.1:80"}, Header: h}
	hs.Apply(h, env)
	want := http.Header{
		"Header0":               {"value0"},
		"Header1":               {"value1", "value2"},
		"Downstream-Local-Port": {"80"},
		"Present":               {"old"},
		"Absent":                {"added"},
		"Replace":               {"new"},
		"Echo":                  {"old"},
		"Keep":                  {""},
		"Legacy":                {"new"},
	}
	if d := cmp.Diff(want, h); d != "" {
		t.Errorf("headers (-want +got):\n%s", d)
	}

	// The compiled list is reused as is: a second evaluation yields the
	// same headers (Envoy's ConfigReuse).
	h2 := http.Header{"Present": {"old"}, "Replace": {"a", "b"}, "Legacy": {"old"}}
	hs.Apply(h2, &Env{Stream: plain{local: "127.0.0.1:80"}, Header: h2})
	if d := cmp.Diff(want, h2); d != "" {
		t.Errorf("second evaluation (-want +got):\n%s", d)
	}
	if hs.Len() != 12 || !hs.Uses("DOWNSTREAM_LOCAL_PORT") || hs.Uses("PROTOCOL") {
		t.Errorf("Len %d / Uses", hs.Len())
	}
}

func TestCompileHeadersToAddErrors(t *testing.T) {
	both := hvo("x", "v", corev3.HeaderValueOption_ADD_IF_ABSENT)
	both.Append = wrapperspb.Bool(true)
	tests := []struct {
		o    *corev3.HeaderValueOption
		want string
	}{
		{hvo(":authority", "v", 0), `p[0].header.key: ":authority": ":"-prefixed or host headers may not be modified`},
		{hvo("Host", "v", 0), `p[0].header.key: "Host": ":"-prefixed or host headers may not be modified`},
		{both, "p[0]: both append and append_action are set and it's not allowed"},
		{hvo("x", "%NOPE%", 0), "p[0].header.value: %NOPE%: unsupported command NOPE (supported: REQ)"},
	}
	for _, tt := range tests {
		_, err := CompileHeadersToAdd([]*corev3.HeaderValueOption{tt.o}, "p", []string{"REQ"})
		if err == nil || err.Error() != tt.want {
			t.Errorf("got %v\nwant %s", err, tt.want)
		}
	}
}
