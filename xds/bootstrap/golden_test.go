package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/bootstrap-errors")

// moduleRoot walks up from the test's working directory to go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// TestGolden loads each testdata/bootstrap-errors/NAME.yaml (with
// NAME.config-yaml as --config-yaml when present) and compares the error
// with NAME.err, which is empty when Load succeeds. A successful load is
// also compared with NAME.json, the merged Bootstrap. Run with -update to
// rewrite the goldens.
func TestGolden(t *testing.T) {
	dir := filepath.Join(moduleRoot(t), "testdata", "bootstrap-errors")
	cases, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases in %s: %v", dir, err)
	}
	for _, in := range cases {
		base := strings.TrimSuffix(in, ".yaml")
		t.Run(filepath.Base(base), func(t *testing.T) {
			opts := Options{Path: in}
			if over, err := os.ReadFile(base + ".config-yaml"); err == nil {
				opts.ConfigYAML = string(over)
			} else if !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			b, err := Load(opts)
			gotErr := ""
			if err != nil {
				gotErr = err.Error() + "\n"
			}
			var gotJSON []byte
			if err == nil {
				gotJSON = canonicalJSON(t, b)
			}
			compareGolden(t, base+".err", []byte(gotErr))
			compareGolden(t, base+".json", gotJSON)
		})
	}
}

// canonicalJSON prints a message as indented JSON with stable spacing
// (protojson randomizes its whitespace on purpose).
func canonicalJSON(t *testing.T, m proto.Message) []byte {
	t.Helper()
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, js); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// compareGolden compares got with the file; a nil got means the file must
// not exist. With -update it rewrites (or removes) the file instead.
func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		var err error
		if got == nil {
			err = os.Remove(path)
			if errors.Is(err, fs.ErrNotExist) {
				err = nil
			}
		} else {
			err = os.WriteFile(path, got, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	switch {
	case got == nil && errors.Is(err, fs.ErrNotExist):
		return
	case got == nil:
		t.Errorf("%s exists but Load failed; run with -update", filepath.Base(path))
		return
	case err != nil:
		t.Fatalf("%v (run with -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-golden, +got):\n%s", filepath.Base(path), diff)
	}
}
