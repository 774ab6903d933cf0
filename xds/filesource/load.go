package filesource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Registers every Envoy type a resource may name in a typed_config, so
	// that an Any's @type resolves while the file is decoded.
	_ "github.com/hopproxy/hop/xds/bootstrap"
	"github.com/hopproxy/hop/xds/client"
)

// wrapperName is the full name of envoy.service.discovery.v3.Resource, the
// wrapper a resource may come in.
var wrapperName = (&discoveryv3.Resource{}).ProtoReflect().Descriptor().FullName()

// Load reads path once and decodes the DiscoveryResponse in it into an
// Update for typeURL, as Run does on every change. The file's format follows
// its extension, compared case-insensitively as Envoy does: .pb is binary
// proto, .pb_text is text proto, .yaml and .yml are YAML, and anything else
// is JSON.
//
// An error means the file could not be read or decoded as a whole; it names
// the file and, for a decode error, the offending field or position. A name
// that appears twice fails the whole file, as it fails a control plane's
// response. A single resource that cannot be used (wrong type, bad payload)
// does not fail Load: it is returned with Resource.Err set, and the Handler
// decides, as it does for a resource from a control plane.
//
// Unknown fields are not an error, as in Envoy's dynamic configuration: they
// are dropped. Run logs them; Load does not report them.
func Load(path, typeURL string) (client.Update, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return client.Update{}, fmt.Errorf("filesource: %w", err)
	}
	u, _, err := decodeFile(path, data, typeURL)
	return u, err
}

// decodeFile decodes data, read from path, into an Update for typeURL. The
// warning, when not nil, describes unknown fields that were dropped.
func decodeFile(path string, data []byte, typeURL string) (u client.Update, warning, err error) {
	resp := &discoveryv3.DiscoveryResponse{}
	warning, err = decodeResponse(path, data, resp)
	if err != nil {
		return client.Update{}, nil, fmt.Errorf("filesource: %s: %w", path, err)
	}
	u = client.Update{
		TypeURL:   typeURL,
		Version:   resp.GetVersionInfo(),
		Resources: make([]client.Resource, 0, len(resp.GetResources())),
		// A file holds the complete set of resources of its type, whatever
		// the type: a name missing from it has been removed.
		FullState: true,
	}
	want := protoreflect.FullName(typeURL[strings.LastIndexByte(typeURL, '/')+1:])
	first := make(map[string]int, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		r := decodeResource(i, a, want)
		if r.Name != "" {
			// As from a control plane, a name twice in one response
			// rejects all of it (Envoy: "duplicate listener ... found").
			if j, dup := first[r.Name]; dup {
				return client.Update{}, nil, fmt.Errorf("filesource: %s: resources[%d] and resources[%d]: duplicate resource name %q", path, j, i, r.Name)
			}
			first[r.Name] = i
		}
		u.Resources = append(u.Resources, r)
	}
	if warning != nil {
		warning = fmt.Errorf("filesource: %s: %w", path, warning)
	}
	return u, warning, nil
}

// decodeResponse parses data in the format its path's extension names.
func decodeResponse(path string, data []byte, resp *discoveryv3.DiscoveryResponse) (warning, err error) {
	if len(data) == 0 {
		// Valid as binary or text proto (no resources at all), but far
		// more likely a file caught while being written.
		return nil, errors.New("empty file")
	}
	lower := strings.ToLower(path)
	switch {
	case strings.HasSuffix(lower, ".pb"):
		// Binary proto keeps unknown fields rather than failing on them.
		// Envoy ignores a binary file it cannot parse and goes on with an
		// empty response, which would remove every resource; hop reports
		// the error and keeps the last good configuration instead.
		if err := proto.Unmarshal(data, resp); err != nil {
			return nil, fmt.Errorf("binary proto: %w", err)
		}
		return nil, nil
	case strings.HasSuffix(lower, ".pb_text"):
		strict := prototext.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}
		lenient := prototext.UnmarshalOptions{Resolver: protoregistry.GlobalTypes, DiscardUnknown: true}
		return lenientDecode(resp, func(m proto.Message) error { return strict.Unmarshal(data, m) },
			func(m proto.Message) error { return lenient.Unmarshal(data, m) }, nil)
	case strings.HasSuffix(lower, ".yaml"), strings.HasSuffix(lower, ".yml"):
		// Strict: a duplicate key is an error, as in the bootstrap.
		js, err := yaml.YAMLToJSONStrict(data)
		if err != nil {
			return nil, err
		}
		return decodeJSON(js, resp, true)
	default:
		return decodeJSON(data, resp, false)
	}
}

// decodeJSON parses js with protojson. Errors get the field path of the
// position protojson reports. fromYAML says js was converted from YAML; the
// position (into one long line of converted JSON) then means nothing to the
// author and is replaced by the path.
func decodeJSON(js []byte, resp *discoveryv3.DiscoveryResponse, fromYAML bool) (warning, err error) {
	if t := strings.TrimSpace(string(js)); t == "" || t == "null" {
		return nil, errors.New("empty document")
	}
	strict := protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}
	lenient := protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes, DiscardUnknown: true}
	fix := func(err error) error { return withPath(err, js, fromYAML) }
	return lenientDecode(resp, func(m proto.Message) error { return strict.Unmarshal(js, m) },
		func(m proto.Message) error { return lenient.Unmarshal(js, m) }, fix)
}

// lenientDecode decodes strictly first. If that fails but decoding while
// dropping unknown fields and enum names succeeds, the strict error becomes
// a warning: Envoy accepts unknown fields in dynamic configuration by
// default and only counts them. fix, when set, rewrites either error.
func lenientDecode(resp proto.Message, strict, lenient func(proto.Message) error, fix func(error) error) (warning, err error) {
	if fix == nil {
		fix = func(err error) error { return err }
	}
	serr := strict(resp)
	if serr == nil {
		return nil, nil
	}
	proto.Reset(resp)
	if lerr := lenient(resp); lerr != nil {
		return nil, fix(lerr)
	}
	return fmt.Errorf("ignored unknown field or enum value: %w", fix(serr)), nil
}

var jsonPosition = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// withPath adds to a protojson error the field path at the "(line L:C)"
// position it names in js, replacing the position when drop is set.
func withPath(err error, js []byte, drop bool) error {
	msg := err.Error()
	m := jsonPosition.FindStringSubmatchIndex(msg)
	if m == nil {
		return err
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	// protojson counts lines and columns (in runes) from 1.
	off := 0
	for l := 1; l < line && off < len(js); off++ {
		if js[off] == '\n' {
			l++
		}
	}
	for c := 1; c < col && off < len(js); c++ {
		_, n := utf8.DecodeRune(js[off:])
		off += n
	}
	path := jsonPathAt(js, off)
	if path == "" {
		return err
	}
	pos := msg[m[0]:m[1]] + " "
	if drop {
		pos = ""
	}
	return errors.New(msg[:m[0]] + pos + "at " + path + msg[m[1]:])
}

// jsonPathAt returns the path ("resources[0].connect_timeout") of the JSON
// token that spans byte offset off of js, or "" when it cannot tell.
func jsonPathAt(js []byte, off int) string {
	type frame struct {
		array     bool
		key       string // object: the current member's name
		wantKey   bool   // object: the next string is a member name
		index     int    // array: the current element
		hasMember bool
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	for int(dec.InputOffset()) <= off {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			switch {
			case top.array && top.hasMember:
				top.index++
			case top.array:
				top.hasMember = true
			case top.wantKey:
				top.key, top.wantKey, top.hasMember = tok.(string), false, true
				continue
			default:
				top.wantKey = true // this token is the member's value
			}
		}
		if d, ok := tok.(json.Delim); ok && int(dec.InputOffset()) <= off {
			stack = append(stack, frame{array: d == '[', wantKey: d == '{'})
		}
	}
	var b strings.Builder
	for _, f := range stack {
		switch {
		case !f.hasMember:
		case f.array:
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		}
	}
	return b.String()
}

// decodeResource decodes the i'th resource of a response, unwrapping
// envoy.service.discovery.v3.Resource, and checks it is of type want. Its
// name is filled in whenever the payload can be decoded, even when the type
// is wrong, so that the error can name it.
func decodeResource(i int, a *anypb.Any, want protoreflect.FullName) client.Resource {
	var r client.Resource
	if a.MessageName() == wrapperName {
		w := &discoveryv3.Resource{}
		if err := a.UnmarshalTo(w); err != nil {
			r.Err = fmt.Errorf("filesource: resource %s: decoding the %s wrapper: %w", label(i, ""), wrapperName, err)
			return r
		}
		r.Name = w.GetName()
		if w.GetResource() == nil {
			r.Err = fmt.Errorf("filesource: resource %s: the %s wrapper has no resource", label(i, r.Name), wrapperName)
			return r
		}
		a = w.GetResource()
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		r.Err = fmt.Errorf("filesource: resource %s: %w", label(i, r.Name), err)
		return r
	}
	if n := resourceName(m); n != "" {
		r.Name = n
	}
	// Like Envoy's unpacking, compare full names: the prefix of a type URL
	// does not matter.
	if got := a.MessageName(); got != want {
		r.Err = fmt.Errorf("filesource: resource %s: type %s does not match the subscription type %s", label(i, r.Name), got, want)
		return r
	}
	r.Message = m
	return r
}

// label names a resource in an error: its name when known, else its index.
func label(i int, name string) string {
	if name != "" {
		return strconv.Quote(name)
	}
	return "#" + strconv.Itoa(i)
}

// resourceName returns the name an xDS resource is known by: its name field,
// or cluster_name for a ClusterLoadAssignment.
func resourceName(m proto.Message) string {
	fields := m.ProtoReflect().Descriptor().Fields()
	for _, n := range []protoreflect.Name{"name", "cluster_name"} {
		if fd := fields.ByName(n); fd != nil && fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated {
			return m.ProtoReflect().Get(fd).String()
		}
	}
	return ""
}
