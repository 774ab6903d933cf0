package listener

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// TestQUICListenerRemoval: a removed listener stops taking connections at
// once; a request in flight finishes and its connection is then closed
// (GOAWAY, H3_NO_ERROR); after the drain the socket is released.
func TestQUICListenerRemoval(t *testing.T) {
	f := newQUICFixture(t, 5*time.Second)
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "hello", "")))
	port := f.port(t)
	ctx := testCtx(t)
	c, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		body, err := c.get(ctx, "/block")
		if err == nil && body != "released" {
			err = fmt.Errorf("body %q", body)
		}
		res <- err
	}()
	<-f.router.entered
	f.reconcile(t)
	if f.m.Addr("q") != nil {
		t.Error("the removed listener still has an address")
	}
	if _, err := f.dial(t, ctx, ""); err == nil {
		t.Error("a new connection was accepted after the removal")
	}
	select {
	case err := <-res:
		t.Fatalf("the request in flight ended before it was released: %v", err)
	default:
	}
	close(f.router.release)
	if err := <-res; err != nil {
		t.Fatalf("request in flight: %v", err)
	}
	if code := waitClosed(t, ctx, c); code != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		t.Errorf("closed with %#x, want H3_NO_ERROR", code)
	}
	if v := f.stat(t, "listener_manager.total_listeners_draining"); v != 1 {
		t.Errorf("total_listeners_draining = %d, want 1", v)
	}
	// The socket is released once its connections are gone, before the
	// drain time ends.
	for udpBusy(port) {
		select {
		case <-ctx.Done():
			t.Fatal("the UDP socket was not released")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// udpBusy reports whether 127.0.0.1:port cannot be bound.
func udpBusy(port int) bool {
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return true
	}
	u.Close()
	return false
}

// TestQUICListenerDrainDeadline: what is still open on a removed listener
// when the drain time ends is closed (H3_NO_ERROR).
func TestQUICListenerDrainDeadline(t *testing.T) {
	f := newQUICFixture(t, 200*time.Millisecond)
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "hello", "")))
	ctx := testCtx(t)
	c, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { _, err := c.get(ctx, "/block"); res <- err }()
	<-f.router.entered
	f.reconcile(t)
	if code := waitClosed(t, ctx, c); code != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		t.Errorf("closed with %#x, want H3_NO_ERROR", code)
	}
	if err := <-res; err == nil {
		t.Error("the blocked request succeeded")
	}
}

// TestQUICListenerShutdown: Shutdown closes idle connections at once
// (not at the end of its context) and releases the socket.
func TestQUICListenerShutdown(t *testing.T) {
	f := newQUICFixture(t, time.Minute)
	f.reconcile(t, f.listener(t, 0, "", f.chainYAML("c", "", "hello", "")))
	port := f.port(t)
	ctx := testCtx(t)
	c, err := f.dial(t, ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, ctx, c, "/", "hello")
	f.m.Shutdown(ctx)
	if ctx.Err() != nil {
		t.Fatal("Shutdown waited for its context")
	}
	if code := waitClosed(t, ctx, c); code != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		t.Errorf("closed with %#x, want H3_NO_ERROR", code)
	}
	if udpBusy(port) {
		t.Error("the UDP port is still bound after Shutdown")
	}
}
