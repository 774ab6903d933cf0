package router

import (
	"bytes"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestProxyProtocolHeader(t *testing.T) {
	const sig = "\r\n\r\n\x00\r\nQUIT\n"
	v1, v2 := corev3.ProxyProtocolConfig_V1, corev3.ProxyProtocolConfig_V2
	tests := []struct {
		name          string
		v             corev3.ProxyProtocolConfig_Version
		remote, local string
		want          string
	}{
		{"v1 IPv4", v1, "1.2.3.4:56789", "10.0.0.1:443", "PROXY TCP4 1.2.3.4 10.0.0.1 56789 443\r\n"},
		{"v1 IPv6", v1, "[2001:db8::1]:1234", "[::1]:80", "PROXY TCP6 2001:db8::1 ::1 1234 80\r\n"},
		{"v1 IPv4-mapped is IPv4", v1, "[::ffff:1.2.3.4]:1", "[::ffff:5.6.7.8]:2", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 mixed families", v1, "1.2.3.4:1", "[::1]:2", "PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"},
		{"v1 zone dropped", v1, "[fe80::1%eth0]:1", "[fe80::2%eth0]:2", "PROXY TCP6 fe80::1 fe80::2 1 2\r\n"},
		{"v1 not IP", v1, "pipe", "", "PROXY UNKNOWN\r\n"},
		{"v2 IPv4", v2, "1.2.3.4:256", "10.0.0.1:443",
			sig + "\x21\x11\x00\x0c" + "\x01\x02\x03\x04" + "\x0a\x00\x00\x01" + "\x01\x00" + "\x01\xbb"},
		{"v2 IPv6", v2, "[2001:db8::1]:1", "[::1]:2",
			sig + "\x21\x21\x00\x24" +
				"\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" +
				"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01" +
				"\x00\x01\x00\x02"},
		{"v2 not IP", v2, "pipe", "", sig + "\x20\x00\x00\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := proxyProtocolHeader(tc.v, tc.remote, tc.local)
			if !bytes.Equal(got, []byte(tc.want)) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	// Envoy's header sizes (ProxyProtocolConnectTerminationIntegrationTest).
	if n := len(proxyProtocolHeader(v2, "127.0.0.1:1", "127.0.0.1:2")); n != 28 {
		t.Errorf("v2 IPv4 header is %d bytes, want 28", n)
	}
	if n := len(proxyProtocolHeader(v2, "[::1]:1", "[::1]:2")); n != 52 {
		t.Errorf("v2 IPv6 header is %d bytes, want 52", n)
	}
}

func TestHasPort(t *testing.T) {
	for host, want := range map[string]bool{
		"foo.test:80": true, "foo.test": false, "[::1]:443": true, "[::1]": false, "1.2.3.4:0": true, "": false,
	} {
		if got := hasPort(host); got != want {
			t.Errorf("hasPort(%q) = %v, want %v", host, got, want)
		}
	}
}
