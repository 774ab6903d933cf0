// Package verifydeps checks the direction of imports described in
// docs/ARCHITECTURE.md: lower packages never import higher ones, and heavy
// dependencies stay in their corners.
package verifydeps

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/hopproxy/hop/"

// forbidden maps a package to the packages it must not depend on (even
// indirectly), each with the reason.
var forbidden = map[string]map[string]string{
	"pkg/stats": {
		"pkg/": "stats is the bottom layer; everything may use it, it uses nothing of hop",
	},
	"pkg/format": {
		"pkg/": "the substitution formatter is a leaf; routes and tcp_proxy use it",
	},
	"pkg/fieldcheck": {
		"pkg/": "the allowlist walker is a leaf; tlsconfig and upstream use it",
	},
	"pkg/router": {
		"pkg/hcm":                "the route table is pure matching; the connection manager uses it, not the reverse",
		"pkg/upstream":           "route matching does no I/O",
		"pkg/tunnel":             "route matching does no I/O",
		"google.golang.org/grpc": "grpc stays in the xDS transport",
	},
	"pkg/tunnel": {
		"pkg/hcm":      "tunnel is below the connection manager",
		"pkg/router":   "tunnel does not route",
		"pkg/snapshot": "tunnel is below the snapshot",
	},
	"pkg/upstream": {
		"pkg/hcm":      "upstream is below the connection manager",
		"pkg/snapshot": "clusters outlive snapshots",
		"pkg/listener": "upstream is below listeners",
	},
	"pkg/hcm": {
		"pkg/snapshot":           "the connection manager is compiled by snapshot, not the reverse",
		"pkg/listener":           "listeners hand connections to the connection manager",
		"pkg/tcpproxy":           "tcp_proxy and the connection manager are sibling network filters",
		"pkg/dataplane":          "dataplane is the composition root",
		"google.golang.org/grpc": "grpc stays in the xDS transport",
	},
	"pkg/tcpproxy": {
		"pkg/hcm":                "tcp_proxy and the connection manager are sibling network filters",
		"pkg/router":             "tcp_proxy does not route HTTP",
		"pkg/snapshot":           "tcp_proxy is compiled by snapshot, not the reverse",
		"pkg/listener":           "listeners hand connections to tcp_proxy",
		"pkg/dataplane":          "dataplane is the composition root",
		"google.golang.org/grpc": "grpc stays in the xDS transport",
	},
	"pkg/snapshot": {
		"pkg/listener":  "snapshot is pure compilation; listener runs it",
		"pkg/dataplane": "dataplane is the composition root",
		"pkg/admin":     "admin reads snapshots, not the reverse",
	},
	"pkg/listener": {
		"pkg/dataplane": "dataplane is the composition root",
		"pkg/admin":     "admin and listener are siblings",
	},
	"xds/bootstrap": {
		"pkg/hcm":       "xds may use only pkg/filter, pkg/stats and api",
		"pkg/upstream":  "xds may use only pkg/filter, pkg/stats and api",
		"pkg/dataplane": "xds may use only pkg/filter, pkg/stats and api",
	},
	"xds/client": {
		"pkg/hcm":       "the xDS client is a protocol engine; it knows nothing of the data plane",
		"pkg/upstream":  "the xDS client is a protocol engine; it knows nothing of the data plane",
		"pkg/snapshot":  "the xDS client is a protocol engine; it knows nothing of the data plane",
		"pkg/dataplane": "the xDS client is a protocol engine; it knows nothing of the data plane",
		"xds/watch":     "the watcher uses the client, not the reverse",
	},
	"xds/watch": {
		"pkg/hcm":       "xds may use only pkg/filter, pkg/stats and api; the data plane is reached through the Applier",
		"pkg/upstream":  "xds may use only pkg/filter, pkg/stats and api; the data plane is reached through the Applier",
		"pkg/snapshot":  "xds may use only pkg/filter, pkg/stats and api; the data plane is reached through the Applier",
		"pkg/listener":  "xds may use only pkg/filter, pkg/stats and api; the data plane is reached through the Applier",
		"pkg/dataplane": "xds may use only pkg/filter, pkg/stats and api; the data plane is reached through the Applier",
		"xds/xdstest":   "the test management server is for tests and hack/ only",
	},
	"xds/resource": {
		"pkg/hcm":       "xds may use only pkg/filter, pkg/stats and api",
		"pkg/dataplane": "xds may use only pkg/filter, pkg/stats and api",
	},
	"pkg/tlsconfig": {
		"pkg/":                   "tlsconfig is a leaf: the standard library, go-control-plane protos and pkg/fieldcheck only (xds/client/grpctransport uses it)",
		"xds/":                   "tlsconfig is a leaf: the standard library and go-control-plane protos only",
		"google.golang.org/grpc": "tlsconfig is a leaf: the standard library and go-control-plane protos only",
	},
}

// leafExceptions are the leaves a package under a "pkg/" ban in forbidden
// may still depend on, each with the reason.
var leafExceptions = map[string]map[string]string{
	"pkg/tlsconfig": {"pkg/fieldcheck": "the allowlist walker is itself a leaf"},
}

// xdsMayImport lists what of hop's pkg/ the packages under xds/ may depend
// on (ARCHITECTURE.md: xds uses pkg/filter, pkg/stats and api, never the
// rest of pkg/), and the exceptions a package needs, with the reason. An
// exception holds for the packages that depend on the excepted package too.
var xdsMayImport = map[string]string{
	"pkg/filter":     "the filter registry decodes typed configs",
	"pkg/stats":      "stats is the bottom layer",
	"pkg/fieldcheck": "a leaf allowlist walker (reached through tlsconfig)",
}

var xdsExceptions = map[string]map[string]string{
	"xds/client/grpctransport": {
		"pkg/tlsconfig": "the xDS cluster's UpstreamTlsContext is compiled exactly as a data-plane cluster's; tlsconfig is itself a leaf (see forbidden)",
	},
}

func TestXDSUsesLittleOfPkg(t *testing.T) {
	out, err := exec.Command("go", "list", mod+"xds/...").Output()
	if err != nil {
		t.Fatalf("go list xds/...: %v", err)
	}
	for _, full := range strings.Fields(string(out)) {
		pkg := strings.TrimPrefix(full, mod)
		t.Run(pkg, func(t *testing.T) {
			ds := deps(t, pkg)
			allowed := map[string]bool{}
			for p := range xdsMayImport {
				allowed[mod+p] = true
			}
			for _, d := range ds {
				for p := range xdsExceptions[strings.TrimPrefix(d, mod)] {
					allowed[mod+p] = true
				}
			}
			for _, d := range ds {
				if !strings.HasPrefix(d, mod+"pkg/") {
					continue
				}
				ok := false
				for p := range allowed {
					if d == p || strings.HasPrefix(d, p+"/") {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s depends on %s: xds may use only pkg/filter, pkg/stats and api (exceptions: xdsExceptions)", pkg, d)
				}
			}
		})
	}
}

// TestTLSConfigLeaf checks that pkg/tlsconfig depends only on the standard
// library, the go-control-plane protos (with what they need) and the leaf
// pkg/fieldcheck.
func TestTLSConfigLeaf(t *testing.T) {
	ok := []string{"github.com/envoyproxy/", "github.com/cncf/xds/", "google.golang.org/protobuf/", mod + "pkg/fieldcheck"}
	for _, d := range deps(t, "pkg/tlsconfig") {
		first, _, _ := strings.Cut(d, "/")
		if !strings.Contains(first, ".") || d == mod+"pkg/tlsconfig" {
			continue // standard library
		}
		allowed := false
		for _, p := range ok {
			allowed = allowed || strings.HasPrefix(d, p)
		}
		if !allowed {
			t.Errorf("pkg/tlsconfig depends on %s: only the standard library, go-control-plane protos and pkg/fieldcheck are allowed", d)
		}
	}
}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestImportDirection(t *testing.T) {
	for pkg, bad := range forbidden {
		t.Run(pkg, func(t *testing.T) {
			for _, d := range deps(t, pkg) {
				if d == mod+pkg {
					continue
				}
				if _, ok := leafExceptions[pkg][strings.TrimPrefix(d, mod)]; ok {
					continue
				}
				for b, why := range bad {
					target := b
					if !strings.Contains(b, ".") {
						target = mod + b
					}
					if strings.HasPrefix(d, target) {
						t.Errorf("%s depends on %s: %s", pkg, d, why)
					}
				}
			}
		})
	}
}
