//go:build !unix

package hcm

import "net"

// peekSocket cannot look at the socket here: only bytes the HTTP server
// already read count as early data.
func peekSocket(*net.TCPConn) bool { return false }
