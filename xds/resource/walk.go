package resource

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	anyName       protoreflect.FullName = "google.protobuf.Any"
	boolValueName protoreflect.FullName = "google.protobuf.BoolValue"
)

// walker checks the populated fields of a message tree against the
// allowlist and the extension table. One walker serves one Validate call;
// it is not safe for concurrent use.
type walker struct {
	// payloads are the Any payloads unpacked so far, in walk order, to be
	// checked with ValidateAll once the walk has succeeded.
	payloads []payload
	// through are the message-valued fields from the root to the message
	// being walked, outermost first; scoped rules look at them.
	through []protoreflect.FullName
}

// payload is an unpacked Any and where it sits.
type payload struct {
	path string
	msg  proto.Message
}

// message walks one message reached at path through the field via (empty
// for the root).
func (w *walker) message(m protoreflect.Message, path string, via protoreflect.FullName) error {
	skip, err := w.extensionChecks(m, path, via)
	if err != nil || skip {
		return err
	}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		fpath := joinPath(path, fd.Name())
		rule, ok := allowlist[fd.FullName()]
		if !ok {
			return &FieldError{Path: fpath, Reason: "unsupported field"}
		}
		if rule.scope != nil && rule.scopedValues == nil && !w.within(rule.scope) {
			return &FieldError{Path: fpath, Reason: "unsupported field here (supported " + rule.scope.label + " only)"}
		}
		if rule.kind != honoured {
			continue
		}
		if err := w.field(m.Get(fd), fd, rule, fpath, via); err != nil {
			return err
		}
	}
	return nil
}

// extensionChecks applies the message-level rules of the extension points
// the message holds: a required typed_config must be set, and a message
// whose is_optional flag is set and whose extension hop does not implement
// is skipped (skip == true).
func (w *walker) extensionChecks(m protoreflect.Message, path string, via protoreflect.FullName) (skip bool, err error) {
	md := m.Descriptor()
	for _, p := range pointsByMessage[md.FullName()] {
		if p.via != "" && p.via != via {
			continue
		}
		fd := md.Fields().ByName(p.field.Name())
		if !m.Has(fd) {
			// Another member of the same oneof (config_discovery) is
			// reported by the allowlist instead.
			if p.required && (fd.ContainingOneof() == nil || m.WhichOneof(fd.ContainingOneof()) == nil) {
				return false, &FieldError{Path: joinPath(path, fd.Name()), Reason: "value is required"}
			}
			continue
		}
		if p.optionalFlag == "" || fd.IsMap() || fd.IsList() || !m.Get(md.Fields().ByName(p.optionalFlag)).Bool() {
			continue
		}
		name, err := extensionName(toAny(m.Get(fd).Message()))
		if err == nil && !supportedTypes[p.category][name] {
			return true, nil
		}
	}
	return false, nil
}

// field walks the value of a populated field: each element of a list, each
// value of a map in key order, or the single value.
func (w *walker) field(v protoreflect.Value, fd protoreflect.FieldDescriptor, rule fieldRule, path string, via protoreflect.FullName) error {
	switch {
	case fd.IsList():
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			if err := w.value(l.Get(i), fd, fd, rule, indexPath(path, i), via); err != nil {
				return err
			}
		}
	case fd.IsMap():
		mp := v.Map()
		for _, k := range sortedKeys(mp) {
			if err := w.value(mp.Get(k), fd, fd.MapValue(), rule, keyPath(path, k), via); err != nil {
				return err
			}
		}
	default:
		return w.value(v, fd, fd, rule, path, via)
	}
	return nil
}

// value walks one value of field fd; vd describes the value (fd itself, or
// fd.MapValue() for a map).
func (w *walker) value(v protoreflect.Value, fd, vd protoreflect.FieldDescriptor, rule fieldRule, path string, via protoreflect.FullName) error {
	switch vd.Kind() {
	case protoreflect.EnumKind:
		return checkEnum(v.Enum(), vd.Enum(), rule, path, rule.scope != nil && w.within(rule.scope))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := vd.Message()
		if rule.only != anyBool && md.FullName() == boolValueName {
			return checkBool(v.Message(), rule.only, path)
		}
		w.through = append(w.through, fd.FullName())
		defer func() { w.through = w.through[:len(w.through)-1] }()
		if md.FullName() == anyName {
			p, ok := pointFor(fd.FullName(), via)
			if !ok {
				// supported_fields.go allows an Any field that extensions.go
				// has no category for; a test keeps this from happening.
				return &FieldError{Path: path, Reason: "internal error: no extension category for this field"}
			}
			return w.anyValue(v.Message(), path, p)
		}
		if md.ParentFile().Package() == "google.protobuf" {
			return nil // Duration, wrappers, Struct: values, not configuration
		}
		return w.message(v.Message(), path, fd.FullName())
	}
	return nil
}

// anyValue checks that an Any holds an extension of the point's category,
// unpacks it, and walks the payload.
func (w *walker) anyValue(m protoreflect.Message, path string, p extensionPoint) error {
	a := toAny(m)
	name, err := extensionName(a)
	if err != nil {
		return &FieldError{Path: path, Reason: err.Error(), Err: err}
	}
	url := a.GetTypeUrl()
	wrapped := typedStructNames[typeName(url)]
	if wrapped {
		url = typedStructURL(a)
	}
	if !supportedTypes[p.category][name] {
		return &FieldError{Path: path, Reason: fmt.Sprintf("unsupported extension type %q", url)}
	}
	var msg proto.Message
	if wrapped {
		path += ".value"
		msg, err = decodeTypedStruct(a, url)
	} else {
		msg, err = a.UnmarshalNew()
	}
	if err != nil {
		return &FieldError{Path: path, Reason: fmt.Sprintf("decoding %s: %v", name, err), Err: err}
	}
	w.payloads = append(w.payloads, payload{path: path, msg: msg})
	return w.message(msg.ProtoReflect(), path, p.field)
}

// toAny copies an Any-typed message into an *anypb.Any (it usually is one).
func toAny(m protoreflect.Message) *anypb.Any {
	if a, ok := m.Interface().(*anypb.Any); ok {
		return a
	}
	fds := m.Descriptor().Fields()
	return &anypb.Any{
		TypeUrl: m.Get(fds.ByName("type_url")).String(),
		Value:   m.Get(fds.ByName("value")).Bytes(),
	}
}

// extensionName returns the message name of the extension in a: its type,
// or for a TypedStruct the type its type_url names.
func extensionName(a *anypb.Any) (protoreflect.FullName, error) {
	if a.GetTypeUrl() == "" {
		return "", fmt.Errorf("missing type URL")
	}
	name := typeName(a.GetTypeUrl())
	if !typedStructNames[name] {
		return name, nil
	}
	inner := typedStructURL(a)
	if inner == "" {
		return "", fmt.Errorf("TypedStruct without a valid type_url")
	}
	return typeName(inner), nil
}

// typedStructURL returns the type_url of a TypedStruct held in a, or "" if
// it cannot be decoded.
func typedStructURL(a *anypb.Any) string {
	ts, err := a.UnmarshalNew()
	if err != nil {
		return ""
	}
	m := ts.ProtoReflect()
	return m.Get(m.Descriptor().Fields().ByName("type_url")).String()
}

// decodeTypedStruct converts the Struct value of a TypedStruct into the
// message url names, through its JSON form as Envoy does.
func decodeTypedStruct(a *anypb.Any, url string) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if err != nil {
		return nil, err
	}
	ts, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	tm := ts.ProtoReflect()
	js, err := protojson.Marshal(tm.Get(tm.Descriptor().Fields().ByName("value")).Message().Interface())
	if err != nil {
		return nil, err
	}
	msg := mt.New().Interface()
	if err := protojson.Unmarshal(js, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// within reports whether the message being walked was reached through one
// of s's fields.
func (w *walker) within(s *scope) bool {
	for _, fd := range w.through {
		if slices.Contains(s.through, fd) {
			return true
		}
	}
	return false
}

// checkEnum rejects an enum value outside the rule's list, or outside its
// scoped values when inScope.
func checkEnum(n protoreflect.EnumNumber, ed protoreflect.EnumDescriptor, rule fieldRule, path string, inScope bool) error {
	if rule.values == nil {
		return nil
	}
	name := protoreflect.Name(strconv.Itoa(int(n)))
	if ev := ed.Values().ByNumber(n); ev != nil {
		name = ev.Name()
	}
	values := rule.values
	if inScope {
		values = append(slices.Clip(values), rule.scopedValues...)
	}
	if slices.Contains(values, name) {
		return nil
	}
	reason := fmt.Sprintf("unsupported value %s (hop supports %s)", name, joinNames(values))
	if slices.Contains(rule.scopedValues, name) {
		reason = fmt.Sprintf("unsupported value %s here (hop supports %s; %s %s only)", name, joinNames(values), name, rule.scope.label)
	}
	return &FieldError{Path: path, Reason: reason}
}

// joinNames lists names separated by commas.
func joinNames(names []protoreflect.Name) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = string(n)
	}
	return strings.Join(out, ", ")
}

// checkBool rejects a google.protobuf.BoolValue other than the one the
// rule allows.
func checkBool(m protoreflect.Message, only boolValue, path string) error {
	v := m.Get(m.Descriptor().Fields().ByName("value")).Bool()
	if v == (only == onlyTrue) {
		return nil
	}
	return &FieldError{Path: path, Reason: fmt.Sprintf("unsupported value %t (hop supports %t only)", v, !v)}
}

// sortedKeys returns a map's keys in order, so that walks are deterministic.
func sortedKeys(mp protoreflect.Map) []protoreflect.MapKey {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int {
		switch av := a.Interface().(type) {
		case string:
			return strings.Compare(av, b.String())
		case bool:
			return cmp.Compare(strconv.FormatBool(av), strconv.FormatBool(b.Bool()))
		case int32, int64:
			return cmp.Compare(a.Int(), b.Int())
		default:
			return cmp.Compare(a.Uint(), b.Uint())
		}
	})
	return keys
}
