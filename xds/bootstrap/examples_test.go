package bootstrap

import (
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"sigs.k8s.io/yaml"
)

// TestEnvoyExamples loads Envoy's own WebSocket example configs, which hop
// must run unchanged. They live in the shared reference tree next to the
// repository (../shared from the module root); the test is skipped when
// that tree is absent.
func TestEnvoyExamples(t *testing.T) {
	dir := filepath.Join(moduleRoot(t), "..", "shared", "envoy-configs", "examples")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("Envoy example configs not available: %v", err)
	}
	for _, name := range []string{"websocket_envoy-ws.yaml", "websocket_envoy-ws-route.yaml"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			b, err := Load(Options{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			if len(b.GetStaticResources().GetListeners()) != 1 || len(b.GetStaticResources().GetClusters()) != 1 {
				t.Errorf("got %d listeners and %d clusters, want 1 and 1",
					len(b.GetStaticResources().GetListeners()), len(b.GetStaticResources().GetClusters()))
			}
			// locate only runs when protojson fails; make sure it would not
			// invent a problem in a valid config.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			js, err := yaml.YAMLToJSON(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := locate(js, (&bootstrapv3.Bootstrap{}).ProtoReflect().Descriptor(), true); err != nil {
				t.Errorf("locate found a problem in a valid config: %v", err)
			}
		})
	}
}
