package bootstrap

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/hopproxy/hop/xds/resource"
)

// locate explains why protojson refused a JSON document: it walks the
// decoded JSON tree against the message descriptors, the way protojson reads
// it, and reports the first unknown field, type mismatch or unknown Any type
// as a *resource.FieldError with a snake_case path. Object keys are visited
// in sorted order, so the answer is deterministic. It returns nil if it finds
// nothing (the caller then reports protojson's own error).
//
// A problem beneath a field that hop does not support, or inside an
// extension hop does not implement, is reported as that (as
// resource.Validate would report it): the fix is to remove the field, not
// to correct it.
//
// governed says whether hop's allowlist applies at the root (true for a
// Bootstrap; false to check JSON types only).
func locate(js []byte, md protoreflect.MessageDescriptor, governed bool) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return locator{types: protoregistry.GlobalTypes}.message(md, v, "", governed)
}

// locator holds what the walk needs; it has no mutable state.
type locator struct {
	types *protoregistry.Types
}

// message checks an object against md. governed says whether hop's
// allowlist applies to md's fields (see resource.FieldSupport).
func (l locator) message(md protoreflect.MessageDescriptor, v any, path string, governed bool) error {
	if md.ParentFile().Package() == "google.protobuf" {
		if done, err := l.wellKnown(md, v, path, governed); done {
			return err
		}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return mismatch(path, "object", v)
	}
	fields := md.Fields()
	oneofs := make(map[protoreflect.FullName]protoreflect.Name)
	seen := make(map[protoreflect.FieldNumber]string)
	for _, k := range sortedKeys(obj) {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		if fd == nil {
			return &resource.FieldError{Path: join(path, k), Reason: "unknown field"}
		}
		fpath := join(path, string(fd.Name()))
		if prev, dup := seen[fd.Number()]; dup {
			return &resource.FieldError{Path: fpath, Reason: fmt.Sprintf("set twice, as %q and %q", prev, k)}
		}
		seen[fd.Number()] = k
		val := obj[k]
		if val == nil && !acceptsNull(fd) {
			continue // null leaves a field unset
		}
		if od := fd.ContainingOneof(); od != nil && !fd.IsList() && !fd.IsMap() {
			if prev, set := oneofs[od.FullName()]; set {
				return &resource.FieldError{Path: fpath, Reason: fmt.Sprintf("oneof %s is already set by %s", od.Name(), prev)}
			}
			oneofs[od.FullName()] = fd.Name()
		}
		allowed, checked := true, false
		if governed {
			allowed, checked = resource.FieldSupport(fd.FullName())
		}
		if err := l.field(fd, val, fpath, checked); err != nil {
			if !allowed {
				return &resource.FieldError{Path: fpath, Reason: "unsupported field"}
			}
			return err
		}
	}
	return nil
}

func (l locator) field(fd protoreflect.FieldDescriptor, v any, path string, governed bool) error {
	switch {
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			return mismatch(path, "array", v)
		}
		for i, e := range arr {
			if err := l.single(fd, e, path+"["+strconv.Itoa(i)+"]", governed); err != nil {
				return err
			}
		}
		return nil
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			return mismatch(path, "object", v)
		}
		for _, k := range sortedKeys(obj) {
			kpath := path + "[" + strconv.Quote(k) + "]"
			if kind := fd.MapKey().Kind(); kind != protoreflect.StringKind {
				kpath = path + "[" + k + "]"
				if !validKey(kind, k) {
					return &resource.FieldError{Path: kpath, Reason: "invalid map key, want " + kind.String()}
				}
			}
			if err := l.single(fd.MapValue(), obj[k], kpath, governed); err != nil {
				return err
			}
		}
		return nil
	}
	return l.single(fd, v, path, governed)
}

// single checks one value of fd's type (one element of a list or map).
func (l locator) single(fd protoreflect.FieldDescriptor, v any, path string, governed bool) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return l.message(fd.Message(), v, path, governed)
	case protoreflect.EnumKind:
		return enumValue(fd.Enum(), v, path)
	}
	return scalar(fd.Kind(), v, path)
}

// wellKnown checks the google.protobuf types that have their own JSON form.
// done is false for the others, which are ordinary messages.
func (l locator) wellKnown(md protoreflect.MessageDescriptor, v any, path string, governed bool) (done bool, err error) {
	switch md.Name() {
	case "Any":
		return true, l.anyValue(v, path, governed)
	case "Duration":
		s, ok := v.(string)
		if !ok || !validDuration(s) {
			return true, mismatch(path, `duration such as "1.5s"`, v)
		}
	case "Timestamp":
		s, ok := v.(string)
		if _, perr := time.Parse(time.RFC3339Nano, s); !ok || perr != nil {
			return true, mismatch(path, `RFC 3339 timestamp`, v)
		}
	case "FieldMask":
		if _, ok := v.(string); !ok {
			return true, mismatch(path, "string", v)
		}
	case "Struct":
		if _, ok := v.(map[string]any); !ok {
			return true, mismatch(path, "object", v)
		}
	case "ListValue":
		if _, ok := v.([]any); !ok {
			return true, mismatch(path, "array", v)
		}
	case "Value":
	case "BoolValue", "Int32Value", "Int64Value", "UInt32Value", "UInt64Value",
		"FloatValue", "DoubleValue", "StringValue", "BytesValue":
		return true, l.single(md.Fields().ByName("value"), v, path, false)
	default:
		return false, nil // Empty and the rest are ordinary messages
	}
	return true, nil
}

// anyValue checks an Any: {"@type": url, ...fields} or, for a well-known
// type with its own JSON form, {"@type": url, "value": ...}.
func (l locator) anyValue(v any, path string, governed bool) error {
	err := l.anyPayload(v, path, governed)
	if err == nil || !governed {
		return err
	}
	url := anyTypeURL(v)
	if url == "" || resource.IsExtension(url) {
		return err
	}
	if _, terr := l.types.FindMessageByURL(url); terr != nil {
		return err // an unknown type is reported as such
	}
	return &resource.FieldError{Path: path, Reason: fmt.Sprintf("unsupported extension type %q", url)}
}

// anyTypeURL returns the "@type" of an Any's JSON, or "".
func anyTypeURL(v any) string {
	obj, _ := v.(map[string]any)
	url, _ := obj["@type"].(string)
	return url
}

// anyPayload checks an Any's JSON; governed is as for message.
func (l locator) anyPayload(v any, path string, governed bool) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return mismatch(path, "object", v)
	}
	if len(obj) == 0 {
		return nil
	}
	t, ok := obj["@type"]
	if !ok {
		return &resource.FieldError{Path: path, Reason: `missing "@type"`}
	}
	url, ok := t.(string)
	if !ok || url == "" {
		return mismatch(join(path, "@type"), "type URL string", t)
	}
	mt, err := l.types.FindMessageByURL(url)
	if err != nil {
		return &resource.FieldError{Path: path, Reason: fmt.Sprintf("unknown type %q", url)}
	}
	rest := make(map[string]any, len(obj)-1)
	for k, e := range obj {
		if k != "@type" {
			rest[k] = e
		}
	}
	md := mt.Descriptor()
	if !specialJSON(md) {
		return l.message(md, rest, path, governed && resource.IsExtension(url))
	}
	for _, k := range sortedKeys(rest) {
		if k != "value" {
			return &resource.FieldError{Path: join(path, k), Reason: "unknown field"}
		}
	}
	val, ok := rest["value"]
	if !ok {
		return &resource.FieldError{Path: path, Reason: `missing "value"`}
	}
	return l.message(md, val, join(path, "value"), false)
}

// specialJSON reports whether a message has a JSON form of its own, which
// inside an Any goes under "value".
func specialJSON(md protoreflect.MessageDescriptor) bool {
	if md.ParentFile().Package() != "google.protobuf" {
		return false
	}
	switch md.Name() {
	case "Any", "Duration", "Timestamp", "FieldMask", "Struct", "ListValue", "Value", "Empty",
		"BoolValue", "Int32Value", "Int64Value", "UInt32Value", "UInt64Value",
		"FloatValue", "DoubleValue", "StringValue", "BytesValue":
		return true
	}
	return false
}

// enumValue accepts an enum value's name or any 32-bit integer.
func enumValue(ed protoreflect.EnumDescriptor, v any, path string) error {
	switch x := v.(type) {
	case string:
		if ed.Values().ByName(protoreflect.Name(x)) != nil {
			return nil
		}
	case json.Number:
		if lo, hi := intRange(protoreflect.Int32Kind); integer(string(x), lo, hi) {
			return nil
		}
	case nil:
		if ed.FullName() == "google.protobuf.NullValue" {
			return nil
		}
	}
	values := ed.Values()
	names := make([]string, values.Len())
	for i := range names {
		names[i] = string(values.Get(i).Name())
	}
	return mismatch(path, "one of "+strings.Join(names, ", "), v)
}

// scalar checks a JSON value (or a quoted number, or a map key) against a
// scalar kind as protojson does.
func scalar(kind protoreflect.Kind, v any, path string) error {
	switch kind {
	case protoreflect.BoolKind:
		if _, ok := v.(bool); ok {
			return nil
		}
		return mismatch(path, "bool", v)
	case protoreflect.StringKind:
		if _, ok := v.(string); ok {
			return nil
		}
		return mismatch(path, "string", v)
	case protoreflect.BytesKind:
		if s, ok := v.(string); ok && validBase64(s) {
			return nil
		}
		return mismatch(path, "base64 string", v)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		bits := 64
		if kind == protoreflect.FloatKind {
			bits = 32
		}
		if s := numberText(v); s != "" && validFloat(s, bits) {
			return nil
		}
		return mismatch(path, kind.String(), v)
	}
	lo, hi := intRange(kind)
	if s := numberText(v); s != "" && integer(s, lo, hi) {
		return nil
	}
	return mismatch(path, kind.String(), v)
}

// intRange returns the bounds of an integer kind.
func intRange(kind protoreflect.Kind) (lo, hi *big.Int) {
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return big.NewInt(math.MinInt32), big.NewInt(math.MaxInt32)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return big.NewInt(0), big.NewInt(math.MaxUint32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return big.NewInt(0), new(big.Int).SetUint64(math.MaxUint64)
	}
	return big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
}

// jsonNumber matches JSON's number syntax, which protojson also requires
// inside quoted numbers.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// numberText returns the text of a JSON number or of a string holding one,
// or "".
func numberText(v any) string {
	switch x := v.(type) {
	case json.Number:
		return string(x)
	case string:
		return x
	}
	return ""
}

// integer reports whether s is a JSON number with an integral value in
// [lo, hi]. Like protojson it accepts forms such as "1.0" and "1e3".
func integer(s string, lo, hi *big.Int) bool {
	if !jsonNumber.MatchString(s) {
		return false
	}
	f, _, err := big.ParseFloat(s, 10, 256, big.ToNearestEven)
	if err != nil || !f.IsInt() {
		return false
	}
	n, _ := f.Int(nil)
	return n.Cmp(lo) >= 0 && n.Cmp(hi) <= 0
}

// validKey checks a map key, always a JSON string, against the key's kind.
func validKey(kind protoreflect.Kind, k string) bool {
	if kind == protoreflect.BoolKind {
		return k == "true" || k == "false"
	}
	lo, hi := intRange(kind)
	return integer(k, lo, hi)
}

func validFloat(s string, bits int) bool {
	switch s {
	case "NaN", "Infinity", "-Infinity":
		return true
	}
	if !jsonNumber.MatchString(s) {
		return false
	}
	_, err := strconv.ParseFloat(s, bits)
	return err == nil
}

// durationText is protojson's Duration form: a decimal number of seconds
// with at most nine fractional digits and an "s" suffix.
var durationText = regexp.MustCompile(`^[-+]?([0-9]+\.?[0-9]{0,9}|\.[0-9]{1,9})s$`)

// maxDurationSeconds is protojson's bound, about 10,000 years.
const maxDurationSeconds = 315576000000

func validDuration(s string) bool {
	if !durationText.MatchString(s) {
		return false
	}
	whole := strings.TrimLeft(s[:strings.IndexAny(s+".", ".s")], "+-")
	if whole == "" {
		return true
	}
	n, err := strconv.ParseInt(whole, 10, 64)
	return err == nil && n <= maxDurationSeconds
}

// validBase64 accepts what protojson accepts: standard or URL alphabet,
// padded or not.
func validBase64(s string) bool {
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if len(s)%4 != 0 {
		enc = enc.WithPadding(base64.NoPadding)
	}
	_, err := enc.DecodeString(s)
	return err == nil
}

// acceptsNull reports whether JSON null is a value for fd rather than
// "unset".
func acceptsNull(fd protoreflect.FieldDescriptor) bool {
	if fd.IsList() || fd.IsMap() {
		return false
	}
	if md := fd.Message(); md != nil {
		return md.FullName() == "google.protobuf.Value"
	}
	if ed := fd.Enum(); ed != nil {
		return ed.FullName() == "google.protobuf.NullValue"
	}
	return false
}

// mismatch reports a value of the wrong type.
func mismatch(path, want string, got any) error {
	return &resource.FieldError{Path: path, Reason: fmt.Sprintf("want %s, got %s", want, describe(got))}
}

// describe prints a JSON value briefly.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return strconv.Quote(x)
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprint(v)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
