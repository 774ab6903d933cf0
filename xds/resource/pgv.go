package resource

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// validationError is the shape of protoc-gen-validate's per-message
// XxxValidationError types.
type validationError interface {
	error
	Field() string
	Reason() string
	Cause() error
	Key() bool
}

// multiError is the shape of protoc-gen-validate's XxxMultiError types.
type multiError interface {
	error
	AllErrors() []error
}

// embeddedReason is the reason protoc-gen-validate gives when the problem
// is inside a sub-message; its cause holds the real one.
const embeddedReason = "embedded message failed validation"

// validateAll runs m's ValidateAll, if it has one, and turns the first
// violation into a *FieldError whose path is prefixed with path.
func validateAll(m proto.Message, path string) error {
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		return nil
	}
	err := v.ValidateAll()
	if err == nil {
		return nil
	}
	fe := flattenValidation(m.ProtoReflect(), err)
	if fe.Path == "" {
		fe.Path = path
	} else if path != "" {
		fe.Path = path + "." + fe.Path
	}
	return fe
}

// flattenValidation follows a protoc-gen-validate error down its cause chain
// and returns the leaf's reason with the snake_case path that leads to it.
// m is the message the error was produced for; it is used to translate the
// Go field names that protoc-gen-validate reports into proto field names.
func flattenValidation(m protoreflect.Message, err error) *FieldError {
	path := ""
	for {
		if me, ok := err.(multiError); ok && len(me.AllErrors()) > 0 {
			err = me.AllErrors()[0]
			continue
		}
		ve, ok := err.(validationError)
		if !ok {
			return &FieldError{Path: path, Reason: err.Error(), Err: err}
		}
		seg, next := pgvStep(m, ve.Field())
		path = appendSegment(path, seg)
		cause := ve.Cause()
		if cause != nil && ve.Reason() == embeddedReason && next != nil && next.IsValid() {
			m, err = next, cause
			continue
		}
		reason := ve.Reason()
		if ve.Key() {
			reason = "invalid key: " + reason
		}
		if cause != nil {
			reason += ": " + cause.Error()
		}
		return &FieldError{Path: path, Reason: reason, Err: ve}
	}
}

// appendSegment joins a path and a segment that may start with "[".
func appendSegment(path, seg string) string {
	switch {
	case seg == "":
		return path
	case path == "" || strings.HasPrefix(seg, "["):
		return path + seg
	default:
		return path + "." + seg
	}
}

// pgvStep translates one protoc-gen-validate field ("StaticResources",
// "Clusters[0]", "TypedPerFilterConfig[envoy.filters.http.buffer]",
// "PathSpecifier") into a path segment of m and returns the message it
// leads to, or an invalid message when it leads to none.
func pgvStep(m protoreflect.Message, goField string) (string, protoreflect.Message) {
	name, index, hasIndex := goField, "", false
	if i := strings.IndexByte(goField, '['); i >= 0 && strings.HasSuffix(goField, "]") {
		name, index, hasIndex = goField[:i], goField[i+1:len(goField)-1], true
	}
	md := m.Descriptor()
	fd := fieldByGoName(md, name)
	if fd == nil {
		if od := oneofByGoName(md, name); od != nil {
			return string(od.Name()), nil
		}
		return goField, nil // unknown to us; report it as given
	}
	seg := string(fd.Name())
	switch {
	case hasIndex && fd.IsList():
		i, err := strconv.Atoi(index)
		l := m.Get(fd).List()
		if err != nil || i < 0 || i >= l.Len() {
			return seg + "[" + index + "]", nil
		}
		seg = indexPath(seg, i)
		if fd.Kind() == protoreflect.MessageKind {
			return seg, l.Get(i).Message()
		}
		return seg, nil
	case hasIndex && fd.IsMap():
		key, ok := parseMapKey(fd.MapKey(), index)
		if !ok || !m.Get(fd).Map().Has(key) {
			return seg + "[" + strconv.Quote(index) + "]", nil
		}
		seg = keyPath(seg, key)
		if fd.MapValue().Kind() == protoreflect.MessageKind {
			return seg, m.Get(fd).Map().Get(key).Message()
		}
		return seg, nil
	case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap():
		return seg, m.Get(fd).Message()
	}
	return seg, nil
}

// parseMapKey parses a key printed with %v back into a MapKey.
func parseMapKey(kd protoreflect.FieldDescriptor, s string) (protoreflect.MapKey, bool) {
	switch kd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s).MapKey(), true
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(s)
		return protoreflect.ValueOfBool(b).MapKey(), err == nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(n)).MapKey(), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(n).MapKey(), err == nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(n)).MapKey(), err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(n).MapKey(), err == nil
	}
	return protoreflect.MapKey{}, false
}

// fieldByGoName finds the field whose generated Go name is goName. Go names
// are the proto names in CamelCase, so comparing without underscores and
// case finds them.
func fieldByGoName(md protoreflect.MessageDescriptor, goName string) protoreflect.FieldDescriptor {
	want := foldName(goName)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		if foldName(string(fields.Get(i).Name())) == want {
			return fields.Get(i)
		}
	}
	return nil
}

// oneofByGoName is fieldByGoName for oneofs ("value is required" on a
// required oneof names the oneof).
func oneofByGoName(md protoreflect.MessageDescriptor, goName string) protoreflect.OneofDescriptor {
	want := foldName(goName)
	oneofs := md.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		if foldName(string(oneofs.Get(i).Name())) == want {
			return oneofs.Get(i)
		}
	}
	return nil
}

func foldName(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", ""))
}
