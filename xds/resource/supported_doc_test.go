package resource

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite SUPPORTED.md")

// supportedMarkdown renders the allowlist and the extension table.
func supportedMarkdown() []byte {
	var b bytes.Buffer
	b.WriteString("# Envoy configuration hop supports\n\n")
	b.WriteString("<!-- Generated from supported_fields.go and extensions.go by\n")
	b.WriteString("     go test ./xds/resource -run TestSupportedDoc -update\n     Do not edit. -->\n\n")
	b.WriteString("hop reads Envoy v3 configuration. A field that is set but not listed here is\n")
	b.WriteString("rejected with `unsupported field`, and a `typed_config` whose type is not in\n")
	b.WriteString("the extension table is rejected with `unsupported extension type`, except\n")
	b.WriteString("for an HTTP filter marked `is_optional`, which is skipped as in Envoy.\n")
	b.WriteString("Extensions are chosen by the type URL of `typed_config` (for a `TypedStruct`,\n")
	b.WriteString("its inner `type_url`), never by the filter's `name`; `typed_config` is\n")
	b.WriteString("required on filters, transport sockets and access logs.\n\n")

	b.WriteString("## Extensions\n\n| Category | Type URL |\n| --- | --- |\n")
	for _, e := range Supported() {
		fmt.Fprintf(&b, "| %s | `%s` |\n", e.Category, e.TypeURL)
	}

	b.WriteString("\n## Fields\n\nWell-known types (Duration, wrappers, Struct) are values and are accepted\nwherever their field is.\n")
	for _, mr := range supportedFields {
		fmt.Fprintf(&b, "\n### %s\n\n", mr.message)
		if mr.note != "" {
			b.WriteString(mr.note + "\n\n")
		}
		for _, fr := range mr.fields {
			fmt.Fprintf(&b, "- `%s`", fr.name)
			switch fr.kind {
			case opaque:
				b.WriteString(": accepted as a whole, contents not interpreted")
			case ignored:
				b.WriteString(": accepted, ignored")
			}
			if fr.values != nil {
				b.WriteString(": only " + joinNames(fr.values))
				if fr.scopedValues != nil {
					fmt.Fprintf(&b, "; also %s %s", joinNames(fr.scopedValues), fr.scope.label)
				}
			}
			switch fr.only {
			case onlyTrue:
				b.WriteString(": only true")
			case onlyFalse:
				b.WriteString(": only false")
			}
			if fr.scope != nil && fr.scopedValues == nil {
				fmt.Fprintf(&b, ": supported %s only", fr.scope.label)
			}
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

// TestSupportedDoc keeps SUPPORTED.md in step with the tables; run with
// -update to rewrite it.
func TestSupportedDoc(t *testing.T) {
	got := supportedMarkdown()
	if *update {
		if err := os.WriteFile("SUPPORTED.md", got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("SUPPORTED.md")
	if err != nil {
		t.Fatalf("%v (run go test ./xds/resource -run TestSupportedDoc -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("SUPPORTED.md is stale; run go test ./xds/resource -run TestSupportedDoc -update (-file, +generated):\n%s", diff)
	}
}
