package resource

import (
	"errors"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hopproxy/hop/pkg/tlsconfig"
)

// tlsAllowlistDifferences are the fields where this package's allowlist
// and pkg/tlsconfig's knowingly disagree, with the reason. Only the
// allowlist may be the stricter one.
var tlsAllowlistDifferences = map[protoreflect.FullName]string{
	// tlsconfig lets it through its field check to refuse it in compile
	// with "renegotiation is not supported".
	"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext.allow_renegotiation": "refused by tlsconfig in compile",
	// Envoy's proto rules make it require validation_context_sds_secret_config
	// (SDS), which neither side supports: it can never be used.
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.combined_validation_context": "unusable without SDS",
	// tlsconfig takes google_re2 whole; its only field is deprecated and
	// without effect, and the allowlist (shared with routes) refuses it.
	"envoy.type.matcher.v3.RegexMatcher.GoogleRE2.max_program_size": "deprecated, refused everywhere by the allowlist",
}

// TestTLSAllowlistMatchesTLSConfig keeps the TLS part of supported_fields.go
// equal to pkg/tlsconfig's own allowlist, which is the one that compiles
// these messages: for every field reachable through fields both accept, a
// message with just that field set must be refused as an unsupported field
// at the same path by both, or by neither.
func TestTLSAllowlistMatchesTLSConfig(t *testing.T) {
	roots := []struct {
		msg     proto.Message
		compile func(proto.Message) error
	}{
		{&tlsv3.DownstreamTlsContext{}, func(m proto.Message) error {
			_, err := tlsconfig.Downstream(m.(*tlsv3.DownstreamTlsContext))
			return err
		}},
		{&tlsv3.UpstreamTlsContext{}, func(m proto.Message) error {
			_, err := tlsconfig.Upstream(m.(*tlsv3.UpstreamTlsContext))
			return err
		}},
		{&quicv3.QuicDownstreamTransport{}, func(m proto.Message) error {
			a, err := anypb.New(m)
			if err != nil {
				return err
			}
			_, _, err = tlsconfig.DownstreamSocket(&corev3.TransportSocket{Name: "quic", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}})
			return err
		}},
	}
	used := make(map[protoreflect.FullName]bool)
	for _, r := range roots {
		md := r.msg.ProtoReflect().Descriptor()
		t.Run(string(md.Name()), func(t *testing.T) {
			x := &tlsExplorer{t: t, root: r.msg, compile: r.compile, used: used}
			x.explore(nil)
			if x.checked < 10 {
				t.Errorf("only %d fields checked", x.checked)
			}
		})
	}
	for name := range tlsAllowlistDifferences {
		if !used[name] {
			t.Errorf("%s: listed as a difference, but both sides agree", name)
		}
	}
}

// tlsExplorer sets one field at a time below root and compares verdicts.
type tlsExplorer struct {
	t       *testing.T
	root    proto.Message
	compile func(proto.Message) error
	checked int
	used    map[protoreflect.FullName]bool // differences met
}

// explore checks every field of the message at the end of path (the root
// for an empty path) and descends into those both sides accept.
func (x *tlsExplorer) explore(path []protoreflect.FieldDescriptor) {
	md := x.root.ProtoReflect().Descriptor()
	if len(path) > 0 {
		md = path[len(path)-1].Message()
	}
	if len(path) > 10 {
		x.t.Fatalf("%s: too deep", fieldPath(path))
	}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		p := append(append([]protoreflect.FieldDescriptor(nil), path...), fd)
		m := proto.Clone(x.root)
		setPath(m.ProtoReflect(), p)
		name := fieldPath(p)

		var w walker
		walkAt := unsupportedAt(w.message(m.ProtoReflect(), "", ""))
		tlsAt := ""
		if err := x.compile(m); errors.Is(err, tlsconfig.ErrUnsupported) {
			var fe *tlsconfig.FieldError
			if !errors.As(err, &fe) {
				x.t.Fatalf("%s: tlsconfig error without a path: %v", name, err)
			}
			tlsAt = strings.TrimPrefix(fe.Path, "typed_config.")
		}
		x.checked++
		if walkAt != tlsAt {
			if _, ok := tlsAllowlistDifferences[fd.FullName()]; !ok || walkAt != name || tlsAt != "" {
				x.t.Errorf("%s (%s): allowlist refuses at %q, tlsconfig at %q (\"\": accepted)", name, fd.FullName(), walkAt, tlsAt)
			}
			x.used[fd.FullName()] = true
			continue
		}
		if walkAt == "" && fd.Message() != nil && fd.Message().ParentFile().Package() != "google.protobuf" {
			x.explore(p)
		}
	}
}

// unsupportedAt returns the path of an "unsupported field" error, or "".
func unsupportedAt(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) && strings.HasPrefix(fe.Reason, "unsupported field") {
		return fe.Path
	}
	return ""
}

// setPath makes each field of path present in m, the last one with a
// non-default value; lists and maps get one element.
func setPath(m protoreflect.Message, path []protoreflect.FieldDescriptor) {
	for i, fd := range path {
		last := i == len(path)-1
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			e := sampleValue(fd, l.NewElement())
			l.Append(e)
			if !last {
				m = e.Message()
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			k := sampleValue(fd.MapKey(), protoreflect.Value{}).MapKey()
			mp.Set(k, sampleValue(fd.MapValue(), mp.NewValue()))
			if !last {
				m = mp.Get(k).Message()
			}
		case fd.Message() != nil:
			m = m.Mutable(fd).Message()
		default:
			m.Set(fd, sampleValue(fd, protoreflect.Value{}))
		}
	}
}

// sampleValue returns a non-default value for fd; msg is used for message
// kinds.
func sampleValue(fd protoreflect.FieldDescriptor, msg protoreflect.Value) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return msg
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("x")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("x"))
	case protoreflect.EnumKind:
		vs := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vs.Get(vs.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(1)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(1)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(1)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1)
	}
	return protoreflect.Value{} // not reached: every kind is listed above
}

// fieldPath renders path as the walk reports it: index 0 or the sample key
// after each list or map field but the last.
func fieldPath(path []protoreflect.FieldDescriptor) string {
	s := ""
	for i, fd := range path {
		s = joinPath(s, fd.Name())
		switch {
		case i == len(path)-1:
		case fd.IsList():
			s = indexPath(s, 0)
		case fd.IsMap():
			s = keyPath(s, sampleValue(fd.MapKey(), protoreflect.Value{}).MapKey())
		}
	}
	return s
}
