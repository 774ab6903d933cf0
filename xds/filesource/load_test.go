package filesource

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hopproxy/hop/xds/client"
)

const listenersYAML = `
version_info: "v1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l1
  address:
    socket_address: {address: 127.0.0.1, port_value: 10000}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: demo
        rds: {route_config_name: r1, config_source: {ads: {}}}
- "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
  name: l2
  resource:
    "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: l2
`

// listenersResponse is listenersYAML as a message, for the binary and text
// formats.
func listenersResponse(t *testing.T) *discoveryv3.DiscoveryResponse {
	t.Helper()
	u, _, err := decodeFile("x.yaml", []byte(listenersYAML), client.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "v1"}
	for _, r := range u.Resources {
		a, err := anypb.New(r.Message)
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	return resp
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFormats(t *testing.T) {
	resp := listenersResponse(t)
	bin, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	text, err := prototext.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "[type.googleapis.com/envoy.config.listener.v3.Listener]") {
		t.Fatalf("text proto does not use the expanded Any form:\n%s", text)
	}
	js := `{"version_info": "v1", "resources": [
	  {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "l1"},
	  {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "l2"}]}`
	tests := []struct {
		name string
		data []byte
	}{
		{"lds.yaml", []byte(listenersYAML)},
		{"lds.yml", []byte(listenersYAML)},
		{"LDS.YAML", []byte(listenersYAML)},
		{"lds.json", []byte(js)},
		{"lds.conf", []byte(js)}, // anything else is JSON
		{"lds.pb", bin},
		{"lds.PB", bin},
		{"lds.pb_text", text},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tc.name, tc.data)
			u, err := Load(p, client.ListenerType)
			if err != nil {
				t.Fatal(err)
			}
			if u.TypeURL != client.ListenerType || u.Version != "v1" || !u.FullState || u.Removed != nil {
				t.Errorf("update = {%s %s full=%v removed=%v}", u.TypeURL, u.Version, u.FullState, u.Removed)
			}
			if len(u.Resources) != 2 {
				t.Fatalf("got %d resources, want 2", len(u.Resources))
			}
			for i, want := range []string{"l1", "l2"} {
				r := u.Resources[i]
				if r.Err != nil || r.Name != want {
					t.Fatalf("resource %d = %q, %v; want %q", i, r.Name, r.Err, want)
				}
				if l, ok := r.Message.(*listenerv3.Listener); !ok || l.GetName() != want {
					t.Fatalf("resource %d message = %v", i, r.Message)
				}
			}
		})
	}
	// The HTTP connection manager inside the YAML listener was resolved.
	u, err := Load(writeFile(t, t.TempDir(), "lds.yaml", []byte(listenersYAML)), client.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	tc := u.Resources[0].Message.(*listenerv3.Listener).GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := tc.UnmarshalTo(hcm); err != nil || hcm.GetRds().GetRouteConfigName() != "r1" {
		t.Fatalf("typed_config = %v, %v", hcm, err)
	}
}

func TestLoadNames(t *testing.T) {
	const eds = `
version_info: e1
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: echo
`
	u, err := Load(writeFile(t, t.TempDir(), "eds.yaml", []byte(eds)), client.EndpointType)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Resources) != 1 || u.Resources[0].Name != "echo" || !u.FullState {
		t.Fatalf("update = %+v", u)
	}
	if _, ok := u.Resources[0].Message.(*endpointv3.ClusterLoadAssignment); !ok {
		t.Fatalf("message = %T", u.Resources[0].Message)
	}
}

func TestLoadResourceErrors(t *testing.T) {
	const data = `
version_info: "v1"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: c1
- "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
  name: empty
- "@type": example.com/envoy.config.listener.v3.Listener
  name: other-prefix
`
	u, err := Load(writeFile(t, t.TempDir(), "lds.yaml", []byte(data)), client.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Resources) != 3 {
		t.Fatalf("got %d resources", len(u.Resources))
	}
	wrong := u.Resources[0]
	if wrong.Name != "c1" || wrong.Message != nil || wrong.Err == nil ||
		!strings.Contains(wrong.Err.Error(), `resource "c1": type envoy.config.cluster.v3.Cluster does not match the subscription type envoy.config.listener.v3.Listener`) {
		t.Errorf("wrong type: %q %v %v", wrong.Name, wrong.Message, wrong.Err)
	}
	empty := u.Resources[1]
	if empty.Name != "empty" || empty.Err == nil || !strings.Contains(empty.Err.Error(), "has no resource") {
		t.Errorf("empty wrapper: %q %v", empty.Name, empty.Err)
	}
	// The prefix of a type URL does not matter, as in Envoy.
	if r := u.Resources[2]; r.Err != nil || r.Name != "other-prefix" {
		t.Errorf("other prefix: %q %v", r.Name, r.Err)
	}
	// The wrong type is a resource error for any subscription type.
	u, err = Load(writeFile(t, t.TempDir(), "cds.yaml", []byte(data)), client.ClusterType)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Resources[0].Message.(*clusterv3.Cluster); !ok || u.Resources[2].Err == nil {
		t.Errorf("as clusters: %+v", u.Resources)
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name, file, data string
		want             []string // substrings of the error
	}{
		{"empty file", "a.pb", "", []string{"empty file"}},
		{"empty yaml", "a.yaml", "# nothing\n", []string{"empty document"}},
		{"yaml syntax", "a.yaml", "version_info: [", []string{"yaml"}},
		{"yaml duplicate key", "a.yaml", "version_info: a\nversion_info: b\n", []string{"already set"}},
		{"json syntax", "a.json", `{"version_info": }`, []string{"syntax error (line 1:"}},
		{"wrong value", "a.yaml", "version_info: v1\nresources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: c\n  connect_timeout: 5\n",
			[]string{" at resources[0].connect_timeout: unexpected token 5"}},
		{"wrong value json", "a.json", "{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\",\n \"name\": 7}]}",
			[]string{"(line 2:10) at resources[0].name: "}},
		{"unknown type", "a.yaml", "resources:\n- \"@type\": type.googleapis.com/no.such.Type\n  name: x\n", []string{"no.such.Type"}},
		{"duplicate", "a.yaml", "resources:\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: x\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: x\n",
			[]string{`resources[0] and resources[1]: duplicate resource name "x"`}},
		{"binary garbage", "a.pb", "\xff\xff\xff", []string{"binary proto"}},
		{"text syntax", "a.pb_text", "version_info: ", []string{"a.pb_text"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tc.file, []byte(tc.data))
			_, err := Load(p, client.ListenerType)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "filesource: "+p+": ") {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), client.ListenerType)
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// Unknown fields are dropped, as in Envoy's dynamic configuration, and
// reported as a warning.
func TestLoadUnknownFields(t *testing.T) {
	const data = `
version_info: v1
no_such_field: 1
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l1
  not_a_listener_field: true
`
	p := writeFile(t, t.TempDir(), "lds.yaml", []byte(data))
	u, err := Load(p, client.ListenerType)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Resources) != 1 || u.Resources[0].Name != "l1" || u.Resources[0].Err != nil {
		t.Fatalf("resources = %+v", u.Resources)
	}
	_, warning, err := decodeFile(p, []byte(data), client.ListenerType)
	if err != nil || warning == nil || !strings.Contains(warning.Error(), "no_such_field") {
		t.Fatalf("warning = %v, err = %v", warning, err)
	}
	_, warning, err = decodeFile(p, []byte(listenersYAML), client.ListenerType)
	if err != nil || warning != nil {
		t.Fatalf("clean file: warning = %v, err = %v", warning, err)
	}
}

func TestJSONPathAt(t *testing.T) {
	const js = `{"a": 1, "b": [10, {"c": [true, {"d": "x"}]}, 30], "e": {"f": null}}`
	tests := []struct {
		at   string // the text the offset points at (its first occurrence)
		want string
	}{
		{`"a"`, "a"},
		{`1,`, "a"},
		{`10`, "b[0]"},
		{`{"c"`, "b[1]"},
		{`"c"`, "b[1].c"},
		{`true`, "b[1].c[0]"},
		{`"x"`, "b[1].c[1].d"},
		{`30`, "b[2]"},
		{`null`, "e.f"},
		{`{"a"`, ""},
	}
	for _, tc := range tests {
		off := strings.Index(js, tc.at)
		if got := jsonPathAt([]byte(js), off); got != tc.want {
			t.Errorf("at %s (offset %d): got %q, want %q", tc.at, off, got, tc.want)
		}
	}
}
