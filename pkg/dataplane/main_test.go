package dataplane_test

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if any goroutine is still running hop's code
// once every test has stopped its data plane: each goroutine hop starts
// must have an owner that ends it.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoHopGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by hop:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoHopGoroutines(limit time.Duration) string {
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "github.com/hopproxy/hop/pkg/") && !strings.Contains(g, "waitNoHopGoroutines") && !strings.Contains(g, "_test.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
