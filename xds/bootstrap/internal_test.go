package bootstrap

import (
	"strings"
	"testing"
)

// internalListenerYAML is a static internal listener, optionally with the
// bootstrap extension that enables it.
func internalListenerYAML(withExtension bool) string {
	var b strings.Builder
	if withExtension {
		b.WriteString(`bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
`)
	}
	b.WriteString(`static_resources:
  listeners:
  - name: inner
    internal_listener: {}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inner
          cluster: c
`)
	return b.String()
}

func TestInternalListenerNeedsBootstrapExtension(t *testing.T) {
	_, err := Load(Options{ConfigYAML: internalListenerYAML(false)})
	const want = "bootstrap: static_resources.listeners[0]: error adding listener named 'inner': InternalListener bootstrap extension is mandatory"
	if err == nil || err.Error() != want {
		t.Fatalf("Load error = %v, want %q", err, want)
	}

	b, err := Load(Options{ConfigYAML: internalListenerYAML(true)})
	if err != nil {
		t.Fatalf("Load with the extension: %v", err)
	}
	if !InternalListenersEnabled(b) {
		t.Error("InternalListenersEnabled = false, want true")
	}
}

func TestUnimplementedBootstrapExtensionParses(t *testing.T) {
	// A bootstrap extension hop does not implement still decodes (its type
	// is registered), so validation can name it instead of failing on an
	// unknown type.
	_, err := Load(Options{ConfigYAML: `bootstrap_extensions:
- name: dm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.dynamic_modules.v3.DynamicModuleBootstrapExtension
`})
	const want = `bootstrap: bootstrap_extensions[0].typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.bootstrap.dynamic_modules.v3.DynamicModuleBootstrapExtension"`
	if err == nil || err.Error() != want {
		t.Fatalf("Load error = %v, want %q", err, want)
	}
}
