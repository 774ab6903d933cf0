package resource

import (
	"errors"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// fakeValidationError stands in for a protoc-gen-validate error whose Go
// field name matches no field, which flattenValidation must report as is.
type fakeValidationError struct{ field, reason string }

func (e fakeValidationError) Error() string  { return e.field + ": " + e.reason }
func (e fakeValidationError) Field() string  { return e.field }
func (e fakeValidationError) Reason() string { return e.reason }
func (e fakeValidationError) Cause() error   { return nil }
func (e fakeValidationError) Key() bool      { return false }

func TestValidateAllPaths(t *testing.T) {
	tests := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{
			name: "map value",
			msg: &bootstrapv3.Bootstrap{CertificateProviderInstances: map[string]*corev3.TypedExtensionConfig{
				"ok": {Name: "ok", TypedConfig: nil}, "bad": {},
			}},
			want: `certificate_provider_instances["bad"].name: value length must be at least 1 runes`,
		},
		{
			name: "list of strings",
			msg:  &routev3.RouteConfiguration{ResponseHeadersToRemove: []string{"a", "b\nc"}},
			want: `response_headers_to_remove[1]: value does not match regex pattern "^[^\x00\n\r]*$"`,
		},
		{
			name: "required oneof",
			msg:  &routev3.Route{Match: &routev3.RouteMatch{}, Action: &routev3.Route_Route{Route: &routev3.RouteAction{}}},
			want: "match.path_specifier: value is required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateAll(tt.msg, "")
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}

func TestFlattenValidationUnknownField(t *testing.T) {
	err := flattenValidation((&routev3.Route{}).ProtoReflect(), fakeValidationError{field: "NoSuchField[3]", reason: "bad"})
	if got, want := err.Error(), "NoSuchField[3]: bad"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.As(err, new(fakeValidationError)) {
		t.Error("leaf error not wrapped")
	}
}
