//go:build unix

package hcm

import (
	"net"
	"syscall"
)

// peekSocket asks the kernel, without blocking, whether c has bytes to read.
func peekSocket(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return n > 0
}
