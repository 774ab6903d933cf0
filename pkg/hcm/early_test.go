package hcm

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestEarlyBody: the watching read sees bytes as soon as they arrive, and
// the reader gets every byte in order: the watched ones first, then the
// rest of the body, then its end.
func TestEarlyBody(t *testing.T) {
	pr, pw := io.Pipe()
	b := newEarlyBody(pr)
	if b.arrived() {
		t.Fatal("arrived before anything was sent")
	}
	go func() {
		io.WriteString(pw, "early")
		io.WriteString(pw, "-late")
		pw.Close()
	}()
	<-b.done
	if !b.arrived() {
		t.Fatal("the first read returned, arrived is false")
	}
	p := make([]byte, 3)
	var got []byte
	for {
		n, err := b.Read(p)
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "early-late" {
		t.Fatalf("read %q", got)
	}
}

// TestEarlyBodyEndsWithoutData: a body that ends before any byte is not
// early data, and Close ends a watching read that is still waiting.
func TestEarlyBodyEndsWithoutData(t *testing.T) {
	pr, pw := io.Pipe()
	b := newEarlyBody(pr)
	pw.Close()
	<-b.done
	if b.arrived() {
		t.Fatal("an empty body counts as early data")
	}
	if n, err := b.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v", n, err)
	}

	pr, _ = io.Pipe()
	b = newEarlyBody(pr)
	b.Close()
	<-b.done
	if _, err := b.Read(make([]byte, 8)); err == nil {
		t.Fatal("a closed body reads without error")
	}
}

// TestSocketHasData: the kernel is asked without consuming anything.
func TestSocketHasData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if socketHasData(server) {
		t.Fatal("data reported on a quiet socket")
	}
	io.WriteString(client, "x")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !socketHasData(&replayConn{Conn: server}) {
		if ctx.Err() != nil {
			t.Fatal("the byte sent never showed")
		}
		time.Sleep(time.Millisecond)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		t.Fatalf("the byte was consumed: %q, %v", b, err)
	}
}
