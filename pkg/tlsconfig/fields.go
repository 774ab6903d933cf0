package tlsconfig

import (
	"github.com/hopproxy/hop/pkg/fieldcheck"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// allow lists, by proto field name, the fields hop supports in a message.
// A nil value accepts the field and everything inside it (the compile code
// reads or deliberately ignores it); a non-nil value lists what may be set
// inside that message, or inside each element of a repeated field.
type allow = fieldcheck.Tree

// dataSourceFields are the DataSource specifiers hop reads.
var dataSourceFields = allow{
	"filename":             nil,
	"inline_bytes":         nil,
	"inline_string":        nil,
	"environment_variable": nil,
}

var stringMatcherFields = allow{
	"exact":    nil,
	"prefix":   nil,
	"suffix":   nil,
	"contains": nil,
	"safe_regex": {
		"google_re2": nil, // deprecated and without effect, as in Envoy
		"regex":      nil,
	},
	"ignore_case": nil,
}

var validationFields = allow{
	"trusted_ca": dataSourceFields,
	"match_typed_subject_alt_names": {
		"san_type": nil, // checked in compile
		"matcher":  stringMatcherFields,
	},
	"match_subject_alt_names":   stringMatcherFields,
	"allow_expired_certificate": nil,
	"trust_chain_verification":  nil,
	"system_root_certs":         {},
}

var commonFields = allow{
	"tls_params": {
		"tls_minimum_protocol_version": nil,
		"tls_maximum_protocol_version": nil,
		"cipher_suites":                nil, // checked in compile
		"ecdh_curves":                  nil, // checked in compile
	},
	"tls_certificates": {
		"certificate_chain": dataSourceFields,
		"private_key":       dataSourceFields,
	},
	"alpn_protocols":     nil,
	"validation_context": validationFields,
	"combined_validation_context": {
		"default_validation_context": validationFields,
	},
}

var upstreamFields = allow{
	"common_tls_context":  commonFields,
	"sni":                 nil,
	"allow_renegotiation": nil, // rejected in compile with its own message
	"max_session_keys":    nil,
}

var downstreamFields = allow{
	"common_tls_context":                   commonFields,
	"require_client_certificate":           nil,
	"session_timeout":                      nil,
	"disable_stateless_session_resumption": nil,
}

var quicDownstreamFields = allow{
	"downstream_tls_context": downstreamFields,
	"enable_early_data":      nil, // checked in compile
}

// checkFields returns a *FieldError for the first populated field of m
// (depth first, in field-number order) that a does not list. prefix is the
// path of m itself ("" at the root).
func checkFields(m protoreflect.Message, a allow, prefix string) error {
	if p := fieldcheck.Unsupported(m, a, prefix); p != "" {
		return &FieldError{Path: p, Err: ErrUnsupported}
	}
	return nil
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	if name == "" {
		return prefix
	}
	return prefix + "." + name
}
