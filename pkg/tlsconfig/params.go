package tlsconfig

import (
	"crypto/tls"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Envoy's defaults when tls_params leaves a version at TLS_AUTO: TLS 1.2
// at least on both sides, TLS 1.2 at most for clients and TLS 1.3 at most
// for servers.
const (
	defaultMin       = tls.VersionTLS12
	defaultClientMax = tls.VersionTLS12
	defaultServerMax = tls.VersionTLS13
)

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// cipherSuites maps the OpenSSL/BoringSSL names Envoy takes in
// cipher_suites to Go's TLS 1.2 cipher suites. TLS 1.3 suites cannot be
// configured, in Envoy as in Go.
var cipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"ECDHE-ECDSA-AES128-SHA256":     tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	"ECDHE-RSA-AES128-SHA256":       tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	"ECDHE-RSA-DES-CBC3-SHA":        tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	"AES128-SHA256":                 tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	"DES-CBC3-SHA":                  tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
}

// curves maps Envoy's ecdh_curves names to Go's key exchanges.
var curves = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// applyParams sets the versions, cipher suites and curves of tls_params (at
// path p) on conf; server chooses Envoy's server-side default maximum.
func applyParams(conf *tls.Config, tp *tlsv3.TlsParameters, p string, server bool) error {
	conf.MinVersion = defaultMin
	conf.MaxVersion = defaultClientMax
	if server {
		conf.MaxVersion = defaultServerMax
	}
	if v := tp.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		gv, ok := tlsVersions[v]
		if !ok {
			return fieldErr(p+".tls_minimum_protocol_version", "unknown version %v", v)
		}
		conf.MinVersion = gv
	}
	if v := tp.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		gv, ok := tlsVersions[v]
		if !ok {
			return fieldErr(p+".tls_maximum_protocol_version", "unknown version %v", v)
		}
		conf.MaxVersion = gv
	}
	if conf.MaxVersion < conf.MinVersion {
		return fieldErr(p+".tls_maximum_protocol_version", "%s is below the minimum %s",
			tls.VersionName(conf.MaxVersion), tls.VersionName(conf.MinVersion))
	}
	for i, entry := range tp.GetCipherSuites() {
		// BoringSSL's equal-preference groups, "[A|B]", keep their order.
		group := strings.TrimSuffix(strings.TrimPrefix(entry, "["), "]")
		for _, name := range strings.Split(group, "|") {
			id, ok := cipherSuites[name]
			if !ok {
				return fieldErr(fmt.Sprintf("%s.cipher_suites[%d]", p, i), "unknown or unsupported cipher suite %q", name)
			}
			conf.CipherSuites = append(conf.CipherSuites, id)
		}
	}
	for i, name := range tp.GetEcdhCurves() {
		id, ok := curves[name]
		if !ok {
			return fieldErr(fmt.Sprintf("%s.ecdh_curves[%d]", p, i), "unknown or unsupported curve %q", name)
		}
		conf.CurvePreferences = append(conf.CurvePreferences, id)
	}
	return nil
}
