// Package fieldcheck finds the first populated field of a protobuf message
// that an allowlist tree does not name. It is the check behind the
// "unsupported field" errors of packages whose configuration is a small
// tree of messages (TLS contexts, cluster protocol options); a leaf.
package fieldcheck

import (
	"sort"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Tree names the fields a message may set. A nil subtree accepts the field
// whole; a non-nil one limits the fields of its message, or of each
// element of a list or map of messages.
type Tree map[string]Tree

// Unsupported returns the path of the first populated field of m that t
// does not name, depth first in field-number order, or "" when every field
// is named. prefix is the path of m itself ("" at the root); a list
// element adds "[i]", a map value `["key"]` (keys in sorted order).
func Unsupported(m protoreflect.Message, t Tree, prefix string) string {
	var set []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		set = append(set, fd)
		return true
	})
	sort.Slice(set, func(i, j int) bool { return set[i].Number() < set[j].Number() })
	for _, fd := range set {
		name := string(fd.Name())
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		sub, ok := t[name]
		if !ok {
			return p
		}
		if sub == nil || fd.Message() == nil {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if bad := Unsupported(l.Get(i).Message(), sub, p+"["+strconv.Itoa(i)+"]"); bad != "" {
					return bad
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			var keys []string
			vals := map[string]protoreflect.Message{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				keys = append(keys, k.String())
				vals[k.String()] = mv.Message()
				return true
			})
			sort.Strings(keys)
			for _, k := range keys {
				if bad := Unsupported(vals[k], sub, p+"["+strconv.Quote(k)+"]"); bad != "" {
					return bad
				}
			}
		default:
			if bad := Unsupported(v.Message(), sub, p); bad != "" {
				return bad
			}
		}
	}
	return ""
}
