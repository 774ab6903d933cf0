// Package xconnect turns on RFC 8441 extended CONNECT in
// golang.org/x/net/http2 for the whole process. Import it for its side
// effect, blank, from any package of the program.
//
// x/net/http2 reads the GODEBUG environment variable once, in its package
// init, and only advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (and accepts
// requests carrying :protocol) when GODEBUG contains http2xconnect=1. This
// package's init appends that to GODEBUG, and it runs first: Go
// initialises packages in the order of their import paths, each as soon as
// the packages it imports are initialised. This package imports only os
// and strings, which x/net/http2 imports too, so by the time x/net/http2
// could be initialised this one can be, and its import path
// ("github.com/...") sorts before "golang.org/x/net/http2". Adding an
// import here that x/net/http2 does not have would break that argument.
//
// An explicit http2xconnect=<anything> already in GODEBUG is left alone:
// the operator decided. The setting is global: a connection manager with allow_connect false
// strips the setting from its connections and refuses :protocol itself
// (pkg/h2wire, pkg/hcm). GODEBUG is inherited by child processes.
package xconnect

import (
	"os"
	"strings"
)

// Setting is the GODEBUG entry this package adds.
const Setting = "http2xconnect=1"

func init() {
	v := os.Getenv("GODEBUG")
	if strings.Contains(v, "http2xconnect=") {
		return
	}
	if v != "" {
		v += ","
	}
	os.Setenv("GODEBUG", v+Setting)
}
