//go:build unix

package listener

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// socketPair returns the two ends of a connected AF_UNIX stream socket
// pair, both in the runtime's network poller.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	// ForkLock: the descriptors must be close-on-exec before any fork.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	a, err := fileConn(fds[0])
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, err
	}
	b, err := fileConn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn turns a socket descriptor into a *net.UnixConn; the descriptor
// is closed (net.FileConn keeps a duplicate).
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "internal-connection")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("socketpair: got a %T", c)
	}
	return uc, nil
}
