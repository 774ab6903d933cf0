package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Registers the Envoy types a resource's typed_configs may name.
	_ "github.com/hopproxy/hop/xds/bootstrap"
)

// resourceFile reports whether name is a file localcp serves.
func resourceFile(name string) bool {
	if strings.HasPrefix(name, ".") { // editor swap and temporary files
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// loadDir reads every resource file of dir, in name order, and returns the
// resources by type URL. Unknown fields, unknown types and a name used twice
// for one type are errors: this is a tool for editing by hand, and a typo
// should not pass for a change.
func loadDir(dir string) (map[string][]types.Resource, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]types.Resource{}
	where := map[string]string{} // "type/name" → file that defined it
	for _, e := range entries {
		if e.IsDir() || !resourceFile(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		msgs, err := loadFile(path)
		if err != nil {
			return nil, err
		}
		for i, m := range msgs {
			url := "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
			key := url + "/" + nameOf(m)
			if prev, dup := where[key]; dup {
				return nil, fmt.Errorf("%s: resource %d: %s %q is also defined in %s", path, i, m.ProtoReflect().Descriptor().Name(), nameOf(m), prev)
			}
			where[key] = path
			out[url] = append(out[url], m)
		}
	}
	return out, nil
}

// loadFile decodes one file: a resource or a list of resources, each with
// an "@type". A file with nothing but comments holds no resources; a file
// of zero bytes is refused, since it is most likely being written.
func loadFile(path string) ([]proto.Message, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%s: empty file (to serve nothing from it, delete it or leave a comment in it)", path)
	}
	js, err := yaml.YAMLToJSONStrict(data) // JSON is YAML too
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	js = bytes.TrimSpace(js)
	var items []json.RawMessage
	switch {
	case len(js) == 0 || string(js) == "null":
		return nil, nil
	case js[0] == '[':
		if err := json.Unmarshal(js, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	case js[0] == '{':
		items = []json.RawMessage{js}
	default:
		return nil, fmt.Errorf("%s: want a resource or a list of resources", path)
	}
	opts := protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}
	msgs := make([]proto.Message, 0, len(items))
	for i, item := range items {
		var head struct {
			Type string `json:"@type"`
		}
		if err := json.Unmarshal(item, &head); err != nil || head.Type == "" {
			return nil, fmt.Errorf("%s: resource %d: want a mapping with an \"@type\"", path, i)
		}
		a := &anypb.Any{}
		if err := opts.Unmarshal(item, a); err != nil {
			return nil, fmt.Errorf("%s: resource %d (%s): %w", path, i, head.Type, err)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: resource %d: %w", path, i, err)
		}
		if nameOf(m) == "" {
			return nil, fmt.Errorf("%s: resource %d: %s has no name", path, i, head.Type)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// nameOf is a resource's name: its name field, or cluster_name for a
// ClusterLoadAssignment.
func nameOf(m proto.Message) string {
	fields := m.ProtoReflect().Descriptor().Fields()
	for _, n := range []protoreflect.Name{"name", "cluster_name"} {
		if fd := fields.ByName(n); fd != nil && fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated {
			return m.ProtoReflect().Get(fd).String()
		}
	}
	return ""
}

// checkSnapshot reports what go-control-plane would refuse or what an ADS
// client would wait for in vain: an unknown type, or routes and endpoints
// that the listeners and clusters do not reference (or the reverse).
func checkSnapshot(res map[string][]types.Resource) error {
	snap, err := cachev3.NewSnapshot("check", res)
	if err != nil {
		return err
	}
	return snap.Consistent()
}

// summary is "2 listeners, 1 cluster" style text for logs.
func summary(res map[string][]types.Resource) string {
	var parts []string
	for url, list := range res {
		names := make([]string, 0, len(list))
		for _, m := range list {
			names = append(names, nameOf(m))
		}
		sort.Strings(names)
		short := url[strings.LastIndexByte(url, '.')+1:]
		parts = append(parts, fmt.Sprintf("%s%v", short, names))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " ")
}
