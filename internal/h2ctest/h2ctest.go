// Package h2ctest runs cleartext HTTP/2 (prior knowledge) servers on
// loopback for tests: golang.org/x/net/http2 serving each accepted
// connection, everything closed and waited for when the test ends.
package h2ctest

import (
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"
)

// Server is a running h2c server.
type Server struct {
	Addr     string       // host:port
	Accepted atomic.Int64 // connections accepted so far
}

// Port is the server's TCP port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Start serves h on a new loopback port until the test ends; then the
// listener and every connection still open are closed, and their
// goroutines waited for.
func Start(t testing.TB, h http.Handler) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String()}
	srv := &http2.Server{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.Accepted.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() { srv.ServeConn(c, &http2.ServeConnOpts{Handler: h}) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}
