//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The splice reference ("spliceref") is the least an HTTP/1.1 CONNECT
// terminator can do: read the request head, dial the echo, answer 200,
// then io.Copy both ways between the two *net.TCPConn, which the Go
// runtime turns into splice(2). It runs in its own process, like hop, so
// that it competes for the same cores the same way. Its throughput is the
// ceiling for h1connect on the machine at hand: on a machine whose cores
// the load, the echo and the proxy saturate, no proxy that adds a
// loopback TCP connection can get nearer to direct than it does, and the
// report gives h1connect's throughput against it as well as against
// direct.
//
// The bench starts the reference by running its own executable with
// spliceRefEnv set to the echo's address; maybeRunSpliceRef (first thing
// in main and in the tests' TestMain) turns that process into the proxy.

// spliceRefEnv, when set, makes the bench binary the splice reference
// proxy for the echo at its value.
const spliceRefEnv = "HOP_BENCH_SPLICE_REF"

// spliceRefName is the reference's column in the tunnel report.
const spliceRefName = "spliceref"

// maybeRunSpliceRef runs the splice reference and exits when spliceRefEnv
// is set, and returns otherwise.
func maybeRunSpliceRef() {
	echo := os.Getenv(spliceRefEnv)
	if echo == "" {
		return
	}
	if err := serveSpliceRef(echo, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "splice reference:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveSpliceRef listens on a loopback port, writes "listening <addr>" to
// out, and proxies CONNECTs to echo until control reaches EOF (the
// bench closes it, or dies); then it returns nil. Tunnels still open are
// cut when the process exits.
func serveSpliceRef(echo string, control io.Reader, out io.Writer) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := fmt.Fprintf(out, "listening %s\n", l.Addr()); err != nil {
		return err
	}
	var stopped atomic.Bool
	go func() {
		io.Copy(io.Discard, control)
		stopped.Store(true)
		l.Close()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			if stopped.Load() {
				return nil
			}
			return err
		}
		go spliceRefConn(c.(*net.TCPConn), echo)
	}
}

// spliceRefConn terminates one CONNECT: any request head is accepted.
func spliceRefConn(down *net.TCPConn, echo string) {
	defer down.Close()
	br := bufio.NewReaderSize(down, 1024)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(line) <= 2 { // the blank line ending the head
			break
		}
	}
	c, err := net.DialTimeout("tcp", echo, 5*time.Second)
	if err != nil {
		return
	}
	up := c.(*net.TCPConn)
	defer up.Close()
	if _, err := down.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")); err != nil {
		return
	}
	if n := br.Buffered(); n > 0 { // bytes sent right behind the head
		b, _ := br.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(up, down) // splice
		up.CloseWrite()
	})
	io.Copy(down, up) // splice
	down.CloseWrite()
	wg.Wait()
}

// spliceRef is a running splice reference process.
type spliceRef struct {
	cmd     *exec.Cmd
	control io.WriteCloser // closing it stops the reference
	addr    string
	exited  chan struct{}
}

// startSpliceRef starts the splice reference in front of echo and waits
// (at most readyTimeout) for its address.
func startSpliceRef(ctx context.Context, echo string) (*spliceRef, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: splice reference: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), spliceRefEnv+"="+echo)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	control, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: splice reference: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: splice reference: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: splice reference: %w", err)
	}
	r := &spliceRef{cmd: cmd, control: control, exited: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(r.exited)
	}()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case s := <-line:
		addr, ok := strings.CutPrefix(strings.TrimSpace(s), "listening ")
		if !ok {
			r.Stop()
			return nil, fmt.Errorf("bench: splice reference said %q, want its address", s)
		}
		r.addr = addr
		return r, nil
	case <-t.C:
		r.Stop()
		return nil, errors.New("bench: splice reference did not start")
	case <-ctx.Done():
		r.Stop()
		return nil, context.Cause(ctx)
	}
}

// Pid is the reference's process id.
func (r *spliceRef) Pid() int { return r.cmd.Process.Pid }

// Stop closes the reference's control pipe and waits for it to exit,
// killing it after stopTimeout.
func (r *spliceRef) Stop() {
	r.control.Close()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-r.exited:
	case <-t.C:
		r.cmd.Process.Kill()
		<-r.exited
	}
}
