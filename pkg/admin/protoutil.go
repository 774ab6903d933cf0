package admin

import (
	"strings"

	"github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

const anyFullName protoreflect.FullName = "google.protobuf.Any"

// maskNode is a parsed FieldMask: a node either keeps its whole field (all)
// or only the listed sub-fields.
type maskNode struct {
	all  bool
	kids map[protoreflect.Name]*maskNode
}

// parseMask checks every path against md as protobuf's FieldMaskUtil does
// (each step but the last must be a singular message field) and builds the
// tree. It reports false when a path does not fit md.
func parseMask(md protoreflect.MessageDescriptor, paths []string) (*maskNode, bool) {
	root := &maskNode{}
	for _, p := range paths {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, false
		}
		d, n := md, root
		segs := strings.Split(p, ".")
		for i, seg := range segs {
			fd := d.Fields().ByName(protoreflect.Name(seg))
			if fd == nil {
				return nil, false
			}
			last := i == len(segs)-1
			if !last && (fd.Message() == nil || fd.IsList() || fd.IsMap()) {
				return nil, false
			}
			if n.kids == nil {
				n.kids = map[protoreflect.Name]*maskNode{}
			}
			c := n.kids[fd.Name()]
			if c == nil {
				c = &maskNode{}
				n.kids[fd.Name()] = c
			}
			if last {
				c.all = true
			} else {
				d = fd.Message()
			}
			n = c
		}
	}
	return root, true
}

// trim clears every field of m the mask does not name.
func (n *maskNode) trim(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		c := n.kids[fd.Name()]
		switch {
		case c == nil:
			m.Clear(fd)
		case c.all:
		default:
			c.trim(m.Mutable(fd).Message())
		}
		return true
	})
}

// trimResource applies a mask to one resource of a dump (a StaticCluster,
// say). As in Envoy, paths that start with the resource's Any field
// ("cluster.name") are applied inside the packed message, the rest to the
// resource itself. It reports false when the mask does not fit.
func trimResource(m protoreflect.Message, paths []string) bool {
	var outer, inner []string
	var anyField protoreflect.FieldDescriptor
	wholeAny := false
	for _, p := range paths {
		first, rest, _ := strings.Cut(strings.TrimSpace(p), ".")
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(first))
		if fd == nil || fd.IsList() || fd.IsMap() || fd.Message() == nil || fd.Message().FullName() != anyFullName {
			outer = append(outer, p)
			continue
		}
		if anyField != nil && anyField != fd {
			return false // one Any field per resource, as Envoy supports
		}
		anyField = fd
		outer = append(outer, first)
		if rest == "" {
			wholeAny = true
		} else {
			inner = append(inner, rest)
		}
	}
	if anyField != nil && !wholeAny && m.Has(anyField) {
		a, ok := m.Mutable(anyField).Message().Interface().(*anypb.Any)
		if !ok {
			return false
		}
		im, err := a.UnmarshalNew()
		if err != nil {
			return false
		}
		t, ok := parseMask(im.ProtoReflect().Descriptor(), inner)
		if !ok {
			return false
		}
		t.trim(im.ProtoReflect())
		if err := anypb.MarshalFrom(a, im, proto.MarshalOptions{}); err != nil {
			return false
		}
	}
	t, ok := parseMask(m.Descriptor(), outer)
	if !ok {
		return false
	}
	t.trim(m)
	return true
}

// redacted replaces sensitive strings and bytes, as in Envoy.
const redacted = "[redacted]"

// redact hides every field marked (udpa.annotations.sensitive), and
// everything below one, the way Envoy's MessageUtil::redact does: strings
// and bytes become "[redacted]", other scalars are cleared, and Any values
// are unpacked, redacted and packed again. An Any of an unknown type is
// walked as a plain message.
func redact(m protoreflect.Message, ancestorSensitive bool) {
	if m.Descriptor().FullName() == anyFullName && redactAny(m, ancestorSensitive) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		sensitive := ancestorSensitive || isSensitive(fd)
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			if fd.MapValue().Message() != nil {
				mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
					redact(mp.Mutable(k).Message(), sensitive)
					return true
				})
			} else if sensitive {
				m.Clear(fd)
			}
		case fd.Message() != nil:
			if fd.IsList() {
				l := m.Mutable(fd).List()
				for i := 0; i < l.Len(); i++ {
					redact(l.Get(i).Message(), sensitive)
				}
			} else {
				redact(m.Mutable(fd).Message(), sensitive)
			}
		case sensitive:
			redactScalar(m, fd)
		}
		return true
	})
}

func redactScalar(m protoreflect.Message, fd protoreflect.FieldDescriptor) {
	var v protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		v = protoreflect.ValueOfString(redacted)
	case protoreflect.BytesKind:
		v = protoreflect.ValueOfBytes([]byte(redacted))
	default:
		m.Clear(fd)
		return
	}
	if fd.IsList() {
		l := m.Mutable(fd).List()
		for i := 0; i < l.Len(); i++ {
			l.Set(i, v)
		}
		return
	}
	m.Set(fd, v)
}

// redactAny redacts the message packed in an Any. It reports false when the
// type is unknown, leaving the caller to walk the Any itself.
func redactAny(m protoreflect.Message, ancestorSensitive bool) bool {
	a, ok := m.Interface().(*anypb.Any)
	if !ok || len(a.GetValue()) == 0 {
		return ok
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return false
	}
	redact(inner.ProtoReflect(), ancestorSensitive)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner)
	if err != nil {
		return false
	}
	a.Value = b
	return true
}

func isSensitive(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	v, _ := proto.GetExtension(opts, annotations.E_Sensitive).(bool)
	return v
}
