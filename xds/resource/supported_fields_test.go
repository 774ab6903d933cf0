package resource

import (
	"testing"

	_ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestAllowlistNamesExist catches typos and fields removed from the protos:
// every message, field and enum value in supported_fields.go must exist.
func TestAllowlistNamesExist(t *testing.T) {
	seen := make(map[protoreflect.FullName]bool)
	for _, mr := range supportedFields {
		if seen[mr.message] {
			t.Errorf("%s: listed twice", mr.message)
		}
		seen[mr.message] = true
		mt, err := protoregistry.GlobalTypes.FindMessageByName(mr.message)
		if err != nil {
			t.Errorf("%s: %v", mr.message, err)
			continue
		}
		fields := mt.Descriptor().Fields()
		names := make(map[protoreflect.Name]bool)
		for _, fr := range mr.fields {
			if names[fr.name] {
				t.Errorf("%s.%s: listed twice", mr.message, fr.name)
			}
			names[fr.name] = true
			fd := fields.ByName(fr.name)
			if fd == nil {
				t.Errorf("%s.%s: no such field", mr.message, fr.name)
				continue
			}
			if fr.only != anyBool && (fd.Message() == nil || fd.Message().FullName() != boolValueName) {
				t.Errorf("%s.%s: a bool value restriction on a field that is not a BoolValue", mr.message, fr.name)
			}
			if fr.scope != nil {
				checkScope(t, mr.message.Append(fr.name), fr.scope)
			}
			if fr.scopedValues != nil && (fr.scope == nil || fr.values == nil) {
				t.Errorf("%s.%s: scoped values need a scope and a value list", mr.message, fr.name)
			}
			for _, v := range fr.scopedValues {
				if fd.Enum() == nil || fd.Enum().Values().ByName(v) == nil {
					t.Errorf("%s.%s: no enum value %s", mr.message, fr.name, v)
				}
			}
			if fr.values == nil {
				continue
			}
			if fd.Enum() == nil {
				t.Errorf("%s.%s: value list on a non-enum field", mr.message, fr.name)
				continue
			}
			for _, v := range fr.values {
				if fd.Enum().Values().ByName(v) == nil {
					t.Errorf("%s.%s: no enum value %s", mr.message, fr.name, v)
				}
			}
		}
	}
}

// checkScope checks that a scope's fields exist and are allowed, so that
// the scoped rule of field can apply somewhere.
func checkScope(t *testing.T, field protoreflect.FullName, s *scope) {
	t.Helper()
	if len(s.through) == 0 || s.label == "" {
		t.Errorf("%s: scope without fields or label", field)
	}
	for _, name := range s.through {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(name.Parent())
		if err != nil || mt.Descriptor().Fields().ByName(name.Name()) == nil {
			t.Errorf("%s: scope field %s does not exist", field, name)
			continue
		}
		if _, ok := allowlist[name]; !ok {
			t.Errorf("%s: scope field %s is not in the allowlist", field, name)
		}
	}
}

// TestExtensionPointsCoverAllowedAnys checks that every honoured Any field
// has an extension category, and that every extension point is allowed.
func TestExtensionPointsCoverAllowedAnys(t *testing.T) {
	for name, fr := range allowlist {
		if fr.kind != honoured {
			continue
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(name.Parent())
		if err != nil {
			continue // reported by TestAllowlistNamesExist
		}
		fd := mt.Descriptor().Fields().ByName(fr.name)
		if fd == nil {
			continue
		}
		vd := fd
		if fd.IsMap() {
			vd = fd.MapValue()
		}
		if vd.Message() == nil || vd.Message().FullName() != anyName {
			continue
		}
		found := false
		for _, p := range extensionPoints {
			found = found || p.field == name
		}
		if !found {
			t.Errorf("%s: allowed Any field without an extension point", name)
		}
	}
	for _, p := range extensionPoints {
		if _, ok := allowlist[p.field]; !ok {
			t.Errorf("extension point %s: field not in the allowlist", p.field)
		}
		if p.via != "" {
			if _, ok := allowlist[p.via]; !ok {
				t.Errorf("extension point %s: via %s not in the allowlist", p.field, p.via)
			}
		}
		if p.optionalFlag != "" {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(p.field.Parent())
			if err != nil {
				t.Errorf("extension point %s: %v", p.field, err)
				continue
			}
			if fd := mt.Descriptor().Fields().ByName(p.optionalFlag); fd == nil || fd.Kind() != protoreflect.BoolKind {
				t.Errorf("extension point %s: %s is not a bool field", p.field, p.optionalFlag)
			}
		}
	}
}

// TestExtensionTypesRegistered checks that each supported type is linked
// in, so that it can be unpacked.
func TestExtensionTypesRegistered(t *testing.T) {
	for _, e := range Supported() {
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(e.TypeURL); err != nil {
			t.Errorf("%s %s: %v", e.Category, e.TypeURL, err)
		}
	}
}
