// Command wscat is a minimal WebSocket client for trying hop by hand:
// every line typed on stdin is sent as a text message, and every message
// received is printed.
//
//	go run ./hack/wscat ws://127.0.0.1:10000/chat
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/gorilla/websocket"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wscat ws://host:port/path")
		os.Exit(2)
	}
	c, res, err := websocket.DefaultDialer.Dial(os.Args[1], nil)
	if err != nil {
		if res != nil {
			fmt.Fprintf(os.Stderr, "wscat: handshake failed: %s\n", res.Status)
		}
		fmt.Fprintln(os.Stderr, "wscat:", err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Fprintf(os.Stderr, "connected (%s); type a line and press enter\n", res.Status)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			fmt.Printf("< %s\n", msg)
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if err := c.WriteMessage(websocket.TextMessage, sc.Bytes()); err != nil {
			break
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	<-done
}
