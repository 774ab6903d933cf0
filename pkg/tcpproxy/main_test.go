package tcpproxy

import (
	"testing"

	"github.com/hopproxy/hop/internal/leakcheck"
)

// TestMain fails the package if goroutines of hop's tunnel, upstream or
// tcpproxy packages outlive the tests.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "hop/pkg/tcpproxy.", "hop/pkg/tunnel.", "hop/pkg/upstream.")
}
