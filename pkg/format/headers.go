package format

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// HeadersToAdd is a compiled list of HeaderValueOption, Envoy's
// HeaderParser: every value is a header Format (absent values format as
// "", and an empty value is not added unless keep_empty_value), applied
// with its append action. The zero value adds nothing. Immutable after
// CompileHeadersToAdd.
type HeadersToAdd struct {
	adds []headerAdd
}

type headerAdd struct {
	key       string // canonical
	value     *Format
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// CompileHeadersToAdd compiles opts; path names the list in errors
// ("request_headers_to_add"), which carry no component prefix. commands
// limits the commands the values may use (nil: all). As in Envoy,
// ":"-prefixed and host headers are refused, and append (deprecated) and
// a non-default append_action together are an error.
func CompileHeadersToAdd(opts []*corev3.HeaderValueOption, path string, commands []string) (HeadersToAdd, error) {
	var hs HeadersToAdd
	for i, o := range opts {
		p := fmt.Sprintf("%s[%d]", path, i)
		key := o.GetHeader().GetKey()
		if !IsModifiableHeader(key) {
			return HeadersToAdd{}, fmt.Errorf("%s.header.key: %q: \":\"-prefixed or host headers may not be modified", p, key)
		}
		action := o.GetAppendAction()
		if o.GetAppend() != nil {
			if action != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return HeadersToAdd{}, fmt.Errorf("%s: both append and append_action are set and it's not allowed", p)
			}
			if !o.GetAppend().GetValue() {
				action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		f, err := Parse(o.GetHeader().GetValue(), Options{Commands: commands, OmitEmpty: true})
		if err != nil {
			return HeadersToAdd{}, fmt.Errorf("%s.header.value: %w", p, err)
		}
		hs.adds = append(hs.adds, headerAdd{
			key:       textproto.CanonicalMIMEHeaderKey(key),
			value:     f,
			action:    action,
			keepEmpty: o.GetKeepEmptyValue(),
		})
	}
	return hs, nil
}

// IsModifiableHeader reports a header that headers_to_add and
// headers_to_remove may touch: not a pseudo-header, not host.
func IsModifiableHeader(key string) bool {
	return !strings.HasPrefix(key, ":") && !strings.EqualFold(key, "host")
}

// Len is the number of entries.
func (hs *HeadersToAdd) Len() int { return len(hs.adds) }

// Uses reports whether any value contains command name.
func (hs *HeadersToAdd) Uses(name string) bool {
	for i := range hs.adds {
		if hs.adds[i].value.Uses(name) {
			return true
		}
	}
	return false
}

// Apply follows Envoy's HeaderParser::evaluateHeaders: every value is
// formatted against h as it stands, then the overwrites are applied, then
// the appends. h must be in canonical form.
func (hs *HeadersToAdd) Apply(h http.Header, env *Env) {
	type op struct {
		key, value string
		overwrite  bool
	}
	var buf [8]op
	ops := buf[:0]
	for i := range hs.adds {
		a := &hs.adds[i]
		v := a.value.Eval(env)
		if v == "" && !a.keepEmpty {
			continue
		}
		switch a.action {
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if len(h[a.key]) == 0 {
				ops = append(ops, op{key: a.key, value: v})
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if len(h[a.key]) > 0 {
				ops = append(ops, op{key: a.key, value: v, overwrite: true})
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			ops = append(ops, op{key: a.key, value: v, overwrite: true})
		default: // APPEND_IF_EXISTS_OR_ADD
			ops = append(ops, op{key: a.key, value: v})
		}
	}
	for _, o := range ops {
		if o.overwrite {
			h[o.key] = []string{o.value}
		}
	}
	for _, o := range ops {
		if !o.overwrite {
			h[o.key] = append(h[o.key], o.value)
		}
	}
}
