// Package leakcheck fails a test binary whose goroutines outlive its
// tests (Main, from TestMain) or a test whose goroutines outlive it (Check).
// It is for tests only:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m, "hop/pkg/upstream.", "net/http.") }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Timeout is how long Main waits for goroutines that were told to stop to
// be scheduled and exit.
const Timeout = 5 * time.Second

// Main runs the tests and then, if they passed, fails the binary when a
// goroutine whose stack mentions one of markers is still alive after
// Timeout.
func Main(m *testing.M, markers ...string) {
	code := m.Run()
	if code == 0 {
		if err := Wait(Timeout, markers...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Wait polls until no goroutine but the caller's mentions one of markers,
// and returns an error listing them if some are left after timeout.
func Wait(timeout time.Duration, markers ...string) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond) // polling for exits: there is no event to wait on
	defer tick.Stop()
	for {
		leaked := Leaked(markers...)
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		<-tick.C
	}
}

// Check registers a cleanup that fails t when a goroutine mentioning one of
// markers is still alive Timeout after t's other cleanups ran. Register it
// first, so it runs last.
func Check(t testing.TB, markers ...string) {
	t.Cleanup(func() {
		if err := Wait(Timeout, markers...); err != nil {
			t.Error(err)
		}
	})
}

// Leaked returns the stacks of the live goroutines that mention one of
// markers, leaving out the caller's and those running tests (a test
// function's frames mention its package, and are no leak).
func Leaked(markers ...string) []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 || strings.Contains(g, "testing.tRunner(") || strings.Contains(g, "testing.(*M)") {
			continue // runtime.Stack lists the calling goroutine first
		}
		for _, m := range markers {
			if strings.Contains(g, m) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}
