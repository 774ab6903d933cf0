package tcpproxy

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if goroutines of hop's tunnel, upstream or
// tcpproxy packages outlive the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func checkLeaks() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var leaked []string
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "tcpproxy.checkLeaks") || strings.Contains(g, "tcpproxy.TestMain") {
				continue
			}
			if strings.Contains(g, "hop/pkg/tcpproxy.") || strings.Contains(g, "hop/pkg/tunnel.") || strings.Contains(g, "hop/pkg/upstream.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		case <-tick.C:
		}
	}
}
