package xconnect_test

import (
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	_ "github.com/hopproxy/hop/pkg/h2wire/xconnect"
)

// TestServerAdvertisesExtendedConnect: with this package in the program,
// x/net's server sends SETTINGS_ENABLE_CONNECT_PROTOCOL=1, which it only
// does when GODEBUG held http2xconnect=1 at its init: the init order
// argument of the package comment holds.
func TestServerAdvertisesExtendedConnect(t *testing.T) {
	if !strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		t.Fatalf("GODEBUG = %q", os.Getenv("GODEBUG"))
	}
	c, s := net.Pipe()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&http2.Server{}).ServeConn(s, &http2.ServeConnOpts{Handler: http.NotFoundHandler()})
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	f, err := http2.NewFramer(nil, c).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame is %v, want SETTINGS", f.Header().Type)
	}
	if v, ok := sf.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
		t.Errorf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d (present %v), want 1", v, ok)
	}
	c.Close()
	<-done
}
