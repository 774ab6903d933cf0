package tunnel

import (
	"net/http"
	"strings"
)

// headerHasToken reports whether a comma-separated header contains token,
// case-insensitively (Connection: keep-alive, Upgrade).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// IsUpgrade reports whether h carries an upgrade: an Upgrade header and the
// token "upgrade" in Connection (Envoy's Utility::isUpgrade).
func IsUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && headerHasToken(h, "Connection", "upgrade")
}

// IsWebSocket reports whether upgradeType names WebSocket.
func IsWebSocket(upgradeType string) bool { return strings.EqualFold(upgradeType, "websocket") }

// Classify prepares an HTTP/1.1 request's upgrade headers the way Envoy's
// HTTP/1.1 codec and connection manager do, and returns the upgrade type:
//
//   - Upgrade: h2c is never honoured: the h2c token, the HTTP2-Settings header
//     and the matching Connection tokens are removed and the request goes on
//     as plain HTTP.
//   - Upgrade tokens for which ignore returns true (http_protocol_options
//     ignore_http_11_upgrade) are removed; if none is left the request is
//     plain HTTP.
//   - A request that is not (or no longer) an upgrade loses its Upgrade and
//     Connection headers, so they never reach the upstream.
//   - CONNECT without an Upgrade header has the type "CONNECT".
//
// The returned type is the whole Upgrade value as sent ("WebSocket"); compare
// it case-insensitively.
func Classify(method string, h http.Header, ignore func(token string) bool) string {
	if up := h.Values("Upgrade"); len(up) > 0 {
		h.Set("Upgrade", filterTokens(strings.Join(up, ","), func(t string) bool {
			return strings.EqualFold(t, "h2c") || (ignore != nil && ignore(t))
		}))
		if h.Get("Upgrade") == "" {
			h.Del("Upgrade")
			h.Del("HTTP2-Settings")
			removeConnectionTokens(h, "upgrade", "http2-settings")
		} else if headerHasToken(h, "Connection", "http2-settings") {
			// h2c was removed but another upgrade remains: drop its settings.
			h.Del("HTTP2-Settings")
			removeConnectionTokens(h, "http2-settings")
		}
	}
	if IsUpgrade(h) {
		return h.Get("Upgrade")
	}
	// Not an upgrade: Upgrade and Connection must not travel upstream.
	h.Del("Upgrade")
	h.Del("Connection")
	if method == http.MethodConnect {
		return "CONNECT"
	}
	return ""
}

// filterTokens removes the comma-separated tokens of v for which drop is true
// and joins the rest with ",".
func filterTokens(v string, drop func(string) bool) string {
	var b strings.Builder
	for v != "" {
		var t string
		t, v, _ = strings.Cut(v, ",")
		t = strings.TrimSpace(t)
		if t == "" || drop(t) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t)
	}
	return b.String()
}

func removeConnectionTokens(h http.Header, tokens ...string) {
	vals := h.Values("Connection")
	if len(vals) == 0 {
		return
	}
	rest := filterTokens(strings.Join(vals, ","), func(t string) bool {
		for _, x := range tokens {
			if strings.EqualFold(t, x) {
				return true
			}
		}
		return false
	})
	if rest == "" {
		h.Del("Connection")
	} else {
		h.Set("Connection", rest)
	}
}

// IsUpgradeResponse reports whether an upstream response accepts the upgrade
// of an HTTP/1.1 request: status 101.
func IsUpgradeResponse(res *http.Response) bool {
	return res.StatusCode == http.StatusSwitchingProtocols
}
