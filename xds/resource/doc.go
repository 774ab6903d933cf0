// Package resource validates Envoy v3 resources (listeners, clusters, route
// configurations, and the bootstrap that carries them) before anything in hop
// compiles them.
//
// It sits at the edge of the configuration flow: xds/bootstrap hands it the
// static resources of a bootstrap, and the xDS client hands it every resource
// a control plane sends. What leaves this package is a proto that hop can
// compile without surprises, or an error that names the field at fault.
//
// A resource passes three checks, in this order:
//
//  1. Support. One generic protoreflect walk visits every populated field
//     and rejects any field that is not in the allowlist in
//     supported_fields.go ("unsupported field"), any enum value hop does not
//     implement, any BoolValue set to the value that asks for a feature hop
//     lacks, and any typed_config whose type URL is not in the extension
//     table of extensions.go ("unsupported extension type"). A few rules are
//     scoped: they hold only below given fields (UDP only in a listener's
//     address; Http2ProtocolOptions differs between the HTTP connection
//     manager and clusters); the walk knows the fields that led to each
//     message. Extensions are
//     looked up by type URL (the inner type_url of a TypedStruct), never by
//     the filter's name. The walk unpacks each Any it accepts and continues
//     inside it. An HTTP filter marked is_optional whose type hop does not
//     implement is skipped, as Envoy does.
//  2. Proto rules. ValidateAll (protoc-gen-validate) on the resource, then
//     on every Any payload the walk unpacked, since ValidateAll does not
//     descend into Any.
//  3. Nothing else yet: semantic checks that need more than one field belong
//     to the compilers in pkg/.
//
// Only the first problem is reported, in a deterministic order (the walk
// follows field declaration order, list index order and sorted map keys), so
// that error text is stable enough for golden tests and NACK comparisons.
// Errors are *FieldError values whose path uses Envoy's snake_case field
// names relative to the validated message, for example
// "filter_chains[0].filters[0].typed_config: unsupported extension type ...".
// Callers add their own prefix ("bootstrap: static_resources.listeners[0]."
// or the resource name in a NACK).
//
// The allowlist is also documentation: SUPPORTED.md is generated from it
// (go test ./xds/resource -run TestSupportedDoc -update). The TLS messages
// repeat the allowlist of pkg/tlsconfig, which compiles them; a test sets
// each reachable field in turn and fails when the two disagree.
// The compilers check again, with their own messages.
package resource
