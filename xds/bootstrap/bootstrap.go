// Package bootstrap loads hop's Envoy v3 Bootstrap from the command line's
// -c file and --config-yaml string, the way Envoy does.
//
// It is the first step of the configuration flow: cmd/hop calls Load, and the
// static resources of the result enter the same validation (xds/resource)
// and compilation pipeline as resources from a control plane.
//
// Load reads the file (YAML, or JSON for a .json file), converts YAML to
// JSON, and decodes it with protojson, refusing unknown fields. It parses
// --config-yaml the same way and merges it over the file with proto merge
// semantics, as Envoy does: scalars replace, messages merge, repeated fields
// append. --service-node and --service-cluster then override node.id and
// node.cluster. Finally the whole Bootstrap is validated by
// resource.Validate (allowlist, extension table, protoc-gen-validate rules),
// and, as Envoy does, a static listener with internal_listener needs the
// envoy.bootstrap.internal_listener bootstrap extension.
//
// Every error names the field path in Envoy's snake_case form, for example
// "bootstrap: static_resources.clusters[0].conect_timeout: unknown field".
// Errors found while decoding --config-yaml say so
// ("bootstrap: --config-yaml: admin.adress: unknown field"); errors found
// after the merge have paths into the merged Bootstrap.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/xds/resource"
)

// Options are the command-line inputs that make up the bootstrap. At least
// one of Path and ConfigYAML must be set.
type Options struct {
	// Path is the -c file. Its extension picks the format as in Envoy:
	// .json is JSON, .yaml and .yml are YAML, and anything else is read as
	// YAML (which also accepts JSON). Empty means no file.
	Path string
	// ConfigYAML is the --config-yaml string, a Bootstrap in YAML merged
	// over the file. Empty means none.
	ConfigYAML string
	// ServiceNode and ServiceCluster are --service-node and
	// --service-cluster; when set they replace node.id and node.cluster.
	ServiceNode, ServiceCluster string
}

// Load reads, merges and validates the bootstrap. The returned Bootstrap
// belongs to the caller.
func Load(o Options) (*bootstrapv3.Bootstrap, error) {
	if o.Path == "" && o.ConfigYAML == "" {
		return nil, errors.New("bootstrap: no configuration: give -c or --config-yaml")
	}
	b := &bootstrapv3.Bootstrap{}
	if o.Path != "" {
		data, err := os.ReadFile(o.Path)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		if err := decode(data, isJSON(o.Path), b); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	if o.ConfigYAML != "" {
		over := &bootstrapv3.Bootstrap{}
		if err := decode([]byte(o.ConfigYAML), false, over); err != nil {
			return nil, fmt.Errorf("bootstrap: --config-yaml: %w", err)
		}
		proto.Merge(b, over)
	}
	if o.ServiceNode != "" || o.ServiceCluster != "" {
		if b.Node == nil {
			b.Node = &corev3.Node{}
		}
		if o.ServiceNode != "" {
			b.Node.Id = o.ServiceNode
		}
		if o.ServiceCluster != "" {
			b.Node.Cluster = o.ServiceCluster
		}
	}
	if err := resource.Validate(b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := checkInternalListeners(b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

// InternalListenerType is the type URL of the bootstrap extension that
// enables internal listeners (envoy.bootstrap.internal_listener).
const InternalListenerType = "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"

// InternalListenersEnabled reports whether b's bootstrap_extensions enable
// internal listeners, which Envoy requires for any listener with
// internal_listener.
func InternalListenersEnabled(b *bootstrapv3.Bootstrap) bool {
	for _, e := range b.GetBootstrapExtensions() {
		if e.GetTypedConfig().GetTypeUrl() == InternalListenerType {
			return true
		}
	}
	return false
}

// checkInternalListeners refuses a static listener with internal_listener
// when the bootstrap extension is missing, with Envoy's message.
func checkInternalListeners(b *bootstrapv3.Bootstrap) error {
	if InternalListenersEnabled(b) {
		return nil
	}
	for i, l := range b.GetStaticResources().GetListeners() {
		if l.GetInternalListener() != nil {
			return fmt.Errorf("static_resources.listeners[%d]: error adding listener named '%s': InternalListener bootstrap extension is mandatory", i, l.GetName())
		}
	}
	return nil
}

// isJSON reports whether Envoy would read path as JSON.
func isJSON(path string) bool {
	return strings.EqualFold(filepath.Ext(path), ".json")
}

// decode parses one document into b. YAML is converted to JSON first;
// syntax errors keep the YAML or JSON line number.
func decode(data []byte, asJSON bool, b *bootstrapv3.Bootstrap) error {
	js := data
	if asJSON {
		if err := checkJSONSyntax(data); err != nil {
			return err
		}
	} else {
		var err error
		// Strict: a duplicate key is an error, not a silent overwrite.
		if js, err = yaml.YAMLToJSONStrict(data); err != nil {
			return yamlError(err)
		}
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return errors.New("empty document")
	}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: protoregistry.GlobalTypes}
	err := opts.Unmarshal(js, b)
	if err == nil {
		return nil
	}
	// protojson names only a byte offset into the converted JSON; find the
	// field path instead.
	if perr := locate(js, b.ProtoReflect().Descriptor(), true); perr != nil {
		return perr
	}
	return err
}

// checkJSONSyntax reports a JSON syntax error with its line and column.
func checkJSONSyntax(data []byte) error {
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return nil // not a syntax error; protojson will judge the rest
	}
	line := 1 + bytes.Count(data[:se.Offset], []byte("\n"))
	col := int(se.Offset) - bytes.LastIndexByte(data[:se.Offset], '\n') - 1
	return fmt.Errorf("json: line %d, column %d: %w", line, col, se)
}
