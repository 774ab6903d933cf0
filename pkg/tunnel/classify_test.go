package tunnel

import (
	"net/http"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	ignoreTLS := func(tok string) bool { return strings.HasPrefix(tok, "TLS/") }
	tests := []struct {
		name        string
		method      string
		hdr         map[string]string
		ignore      func(string) bool
		wantType    string
		wantUpgrade string // Upgrade header left on the request
		wantConn    string
	}{
		{"websocket", "GET", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, nil, "websocket", "websocket", "Upgrade"},
		{"token among others", "GET", map[string]string{"Upgrade": "WebSocket", "Connection": "keep-alive, upgrade"}, nil, "WebSocket", "WebSocket", "keep-alive, upgrade"},
		{"no connection token", "GET", map[string]string{"Upgrade": "websocket", "Connection": "close"}, nil, "", "", ""},
		{"connection only", "GET", map[string]string{"Connection": "Upgrade"}, nil, "", "", ""},
		{"h2c stripped", "GET", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings", "HTTP2-Settings": "x"}, nil, "", "", ""},
		{"h2c stripped, close kept", "GET", map[string]string{"Upgrade": "h2c", "Connection": "Upgrade, Close, HTTP2-Settings"}, nil, "", "", ""},
		{"ignored all", "GET", map[string]string{"Upgrade": "TLS/1.1, TLS/1.2", "Connection": "Upgrade"}, ignoreTLS, "", "", ""},
		{"ignored partly", "GET", map[string]string{"Upgrade": "TLS/1.2, foo", "Connection": "Upgrade"}, ignoreTLS, "foo", "foo", "Upgrade"},
		{"connect", "CONNECT", map[string]string{}, nil, "CONNECT", "", ""},
		{"connect with upgrade", "CONNECT", map[string]string{"Upgrade": "websocket", "Connection": "upgrade"}, nil, "websocket", "websocket", "upgrade"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			got := Classify(tc.method, h, tc.ignore)
			if got != tc.wantType {
				t.Errorf("type = %q, want %q", got, tc.wantType)
			}
			if h.Get("Upgrade") != tc.wantUpgrade || h.Get("Connection") != tc.wantConn {
				t.Errorf("left Upgrade %q Connection %q, want %q %q", h.Get("Upgrade"), h.Get("Connection"), tc.wantUpgrade, tc.wantConn)
			}
			if h.Get("HTTP2-Settings") != "" {
				t.Error("HTTP2-Settings must not travel")
			}
		})
	}
}
