package bootstrap

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hopproxy/hop/xds/resource"
)

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOptions(t *testing.T) {
	const node = "node: {id: file-id, cluster: file-cluster}\n"
	tests := []struct {
		name     string
		file     string // name=content; empty for none
		opts     Options
		wantErr  string
		wantNode [2]string // id, cluster
	}{
		{name: "nothing", wantErr: "bootstrap: no configuration: give -c or --config-yaml"},
		{name: "file only", file: "b.yaml=" + node, wantNode: [2]string{"file-id", "file-cluster"}},
		{name: "config-yaml only", opts: Options{ConfigYAML: node}, wantNode: [2]string{"file-id", "file-cluster"}},
		{
			name:     "service flags override node after the merge",
			file:     "b.yaml=" + node,
			opts:     Options{ConfigYAML: "node: {id: yaml-id}", ServiceNode: "flag-id", ServiceCluster: "flag-cluster"},
			wantNode: [2]string{"flag-id", "flag-cluster"},
		},
		{
			name:     "service flags create the node",
			opts:     Options{ConfigYAML: "admin: {}", ServiceCluster: "c"},
			wantNode: [2]string{"", "c"},
		},
		{
			name:     "config-yaml scalar replaces",
			file:     "b.yaml=" + node,
			opts:     Options{ConfigYAML: "node: {id: yaml-id}"},
			wantNode: [2]string{"yaml-id", "file-cluster"},
		},
		{name: "json file", file: `b.json={"node": {"id": "j", "cluster": "c"}}`, wantNode: [2]string{"j", "c"}},
		{
			name:    "json file, unknown field",
			file:    `b.json={"node": {"idd": "j"}}`,
			wantErr: "bootstrap: node.idd: unknown field",
		},
		{
			name:    "json file, camelCase names are accepted and paths are snake_case",
			file:    `b.json={"staticResources": {"clusters": [{"name": "c", "connectTimeout": 5}]}}`,
			wantErr: `bootstrap: static_resources.clusters[0].connect_timeout: want duration such as "1.5s", got 5`,
		},
		{
			name:    "json file, syntax error",
			file:    "b.json={\n  \"node\": {\n    \"id\": \"j\",\n  }\n}",
			wantErr: "bootstrap: json: line 4, column 3: invalid character '}' looking for beginning of object key string",
		},
		{name: "unknown extension read as YAML", file: "b.conf=" + node, wantNode: [2]string{"file-id", "file-cluster"}},
		{name: "unknown extension holding JSON", file: `b.conf={"node": {"id": "j"}}`, wantNode: [2]string{"j", ""}},
		{name: "empty file", file: "b.yaml=# nothing\n", wantErr: "bootstrap: empty document"},
		{
			name:    "config-yaml is validated after merge",
			file:    "b.yaml=" + node,
			opts:    Options{ConfigYAML: "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 99999}}}"},
			wantErr: "bootstrap: admin.address.socket_address.port_value: value must be less than or equal to 65535",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if tt.file != "" {
				name, content, _ := strings.Cut(tt.file, "=")
				opts.Path = writeFile(t, name, content)
			}
			b, err := Load(opts)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got := [2]string{b.GetNode().GetId(), b.GetNode().GetCluster()}; got != tt.wantNode {
				t.Errorf("node (id, cluster) = %q, want %q", got, tt.wantNode)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(Options{Path: filepath.Join(t.TempDir(), "absent.yaml")})
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "bootstrap: ") {
		t.Errorf("got %v, want a bootstrap: error wrapping fs.ErrNotExist", err)
	}
}

// TestFieldErrorType checks that callers can get the path and reason.
func TestFieldErrorType(t *testing.T) {
	for _, y := range []string{
		"admin: {adress: {}}",                      // found by locate
		"static_resources: {clusters: [{}]}",       // found by protoc-gen-validate
		"admin: {address: {pipe: {path: /tmp/a}}}", // found by the allowlist
	} {
		_, err := Load(Options{ConfigYAML: y})
		var fe *resource.FieldError
		if !errors.As(err, &fe) || fe.Path == "" || fe.Reason == "" {
			t.Errorf("%s: got %v, want a *resource.FieldError with a path", y, err)
		}
	}
}

// TestYAMLLineNumbers pins yamlError's correction of the YAML library's
// line numbers: every syntax error names the 1-based line of the problem.
func TestYAMLLineNumbers(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"a:\n  b: 1\n c: 2\n", "yaml: line 3: did not find expected key"},
		{"a:\n  b: 1\n  - c\n", "yaml: line 3: did not find expected key"},
		{"a:\n  b: 1\n  c: d: e\n", "yaml: line 3: mapping values are not allowed in this context"},
		{"a:\n  b: 1\n\tc: 2\n", "yaml: line 3: found a tab character that violates indentation"},
		{"a:\n  b: 1\n  c: @x\n", "yaml: line 3: found character that cannot start any token"},
		{"a: [}\n", "yaml: line 1: did not find expected node content"},
		{"a: 1\nb: 2\na: 3\n", `yaml: line 3: key "a" already set in map`},
	}
	for _, tt := range tests {
		err := decodeErr(tt.doc)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q:\n got: %v\nwant: %s", tt.doc, err, tt.want)
		}
	}
}

// decodeErr decodes a YAML document into a Bootstrap and returns the error.
func decodeErr(doc string) error {
	_, err := Load(Options{ConfigYAML: doc})
	if err == nil {
		return nil
	}
	return errors.New(strings.TrimPrefix(err.Error(), "bootstrap: --config-yaml: "))
}
