package resource

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// FieldError reports the first problem found in a message: the field it is
// at and what is wrong with it.
type FieldError struct {
	// Path is the snake_case path of the field relative to the validated
	// message, for example "filter_chains[0].filters[0].typed_config" or
	// `typed_per_filter_config["envoy.filters.http.buffer"]`. Empty means the
	// message itself.
	Path string
	// Reason says what is wrong, for example "unsupported field" or
	// "value length must be at least 1 runes".
	Reason string
	// Err is the underlying error, if any: a protoc-gen-validate
	// XxxValidationError or a decoding error. It is reachable with errors.As.
	Err error
}

// Error returns "path: reason", or the reason alone when the path is empty.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

// joinPath appends a field name to a path.
func joinPath(path string, name protoreflect.Name) string {
	if path == "" {
		return string(name)
	}
	return path + "." + string(name)
}

// indexPath appends a list index to a path.
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// keyPath appends a map key to a path; string keys are quoted.
func keyPath(path string, k protoreflect.MapKey) string {
	if s, ok := k.Interface().(string); ok {
		return path + "[" + strconv.Quote(s) + "]"
	}
	return fmt.Sprintf("%s[%v]", path, k.Interface())
}

var _ error = (*FieldError)(nil)
