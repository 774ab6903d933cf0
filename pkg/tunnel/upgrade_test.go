package tunnel

import (
	"net/http"
	"net/url"
	"testing"
)

func TestWebSocketAcceptRFC6455Example(t *testing.T) {
	// RFC 6455 §1.3.
	if got := WebSocketAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept = %q", got)
	}
	k1, a1 := NewWebSocketKey()
	k2, _ := NewWebSocketKey()
	if k1 == k2 || len(k1) != 24 || WebSocketAccept(k1) != a1 {
		t.Fatalf("keys %q %q accept %q", k1, k2, a1)
	}
}

func TestFromExtendedConnect(t *testing.T) {
	for _, tc := range []struct {
		name, method, protocol string
		want                   bool
		wantMethod             string
	}{
		{"websocket", "CONNECT", "websocket", true, "GET"},
		{"case kept", "CONNECT", "WebSocket", true, "GET"},
		{"bytestream stays CONNECT", "CONNECT", "bytestream", false, "CONNECT"},
		{"plain CONNECT", "CONNECT", "", false, "CONNECT"},
		{"protocol on GET is dropped", "GET", "websocket", false, "GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{Method: tc.method, URL: &url.URL{Path: "/x"}, Header: http.Header{}}
			if tc.protocol != "" {
				r.Header[ProtocolHeader] = []string{tc.protocol}
			}
			got := FromExtendedConnect(r)
			if got != tc.want || r.Method != tc.wantMethod {
				t.Fatalf("got %v method %s", got, r.Method)
			}
			if _, ok := r.Header[ProtocolHeader]; ok {
				t.Fatal(":protocol left in the header")
			}
			if got && (r.Header.Get("Upgrade") != tc.protocol || r.Header.Get("Connection") != "upgrade") {
				t.Fatalf("headers %v", r.Header)
			}
		})
	}
}
