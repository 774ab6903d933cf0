//go:build !unix

package listener

import (
	"errors"
	"net"
)

// socketPair is not available: internal listeners need Unix socket pairs.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	return nil, nil, errors.New("internal listeners need a Unix system")
}
