package hcm_test

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3" // an Envoy filter hop does not implement

	"github.com/hopproxy/hop/pkg/dataplane"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/stats"
)

const (
	router = `{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`
	buffer = `{name: envoy.filters.http.buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 10}}`
)

func compile(t *testing.T, y string) error {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte("stat_prefix: t\nroute_config: {name: r}\n" + y))
	if err != nil {
		t.Fatal(err)
	}
	var p hcmv3.HttpConnectionManager
	if err := protojson.Unmarshal(j, &p); err != nil {
		t.Fatal(err)
	}
	_, err = hcm.Compile(&p, dataplane.Registry(), stats.New(), nil)
	return err
}

func TestCompileFilterChains(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // substring; "" = no error
	}{
		{"router only", "http_filters: [" + router + "]", ""},
		{"buffer then router", "http_filters: [" + buffer + ", " + router + "]", ""},
		{"router not last", "http_filters: [" + router + ", " + buffer + "]",
			"http_filters[0]: Error: terminal filter named envoy.filters.http.router of type envoy.extensions.filters.http.router.v3.Router must be the last filter in a http filter chain."},
		{"no terminal filter", "http_filters: [" + buffer + "]",
			"http_filters[0]: Error: non-terminal filter named envoy.filters.http.buffer of type envoy.extensions.filters.http.buffer.v3.Buffer is the last filter in a http filter chain."},
		{"upgrade chain router not last", "http_filters: [" + router + "]\nupgrade_configs: [{upgrade_type: foo, filters: [" + router + ", " + buffer + "]}]",
			"upgrade_configs[0].filters[0]: Error: terminal filter named envoy.filters.http.router of type envoy.extensions.filters.http.router.v3.Router must be the last filter in a http upgrade filter chain."},
		{"duplicate upgrade types", "http_filters: [" + router + "]\nupgrade_configs: [{upgrade_type: WEBSOCKET}, {upgrade_type: websocket}]",
			"upgrade_configs[1]: Error: multiple upgrade configs with the same name: 'websocket'"},
		{"unsupported filter", "http_filters: [{name: x, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}, " + router + "]",
			`http_filters[0].typed_config: unsupported HTTP filter type "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"`},
		{"optional unsupported filter skipped", "http_filters: [{name: x, is_optional: true, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}, " + router + "]", ""},
		{"http2 codec", "codec_type: HTTP2\nhttp_filters: [" + router + "]", ""},
		{"unsupported shared option", "common_http_protocol_options: {max_stream_duration: 1s}\nhttp_filters: [" + router + "]",
			"common_http_protocol_options.max_stream_duration: unsupported field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := compile(t, tc.yaml)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
