// Package tlsconfig compiles Envoy's TLS transport-socket configuration
// (envoy.extensions.transport_sockets.tls.v3 DownstreamTlsContext and
// UpstreamTlsContext, and the QUIC downstream transport around one) into
// crypto/tls configs.
//
// Only the fields listed in fields.go are supported; any other populated
// field is refused with a *FieldError "<path>: unsupported field" rather
// than silently weakening or changing the connection. Paths are relative to
// the message passed in, so callers prefix their own.
//
// Envoy's semantics are kept where Go's differ:
//
//   - An upstream context without a validation context (or without
//     trusted_ca/system_root_certs, or with trust_chain_verification
//     ACCEPT_UNTRUSTED) does not verify the server certificate at all.
//   - With a CA the chain is verified, and names only by the subject alt
//     name matchers: like Envoy without auto_sni_san_validation, the SNI is
//     never checked against the certificate. Go's own verification
//     (which always checks the host name) is therefore off
//     (InsecureSkipVerify) and replaced by VerifyConnection.
//   - sni is the ServerName sent; empty sends no SNI when the config is
//     used with tls.Client (tls.Dial and tls.Dialer would fill in the
//     dialled host name).
//   - Downstream: a trusted CA requests a client certificate and verifies
//     it when sent; require_client_certificate, or SAN matchers, make one
//     required.
//   - Versions default to TLS 1.2 minimum, TLS 1.2 maximum for clients and
//     TLS 1.3 maximum for servers; cipher_suites take OpenSSL names.
//   - NextProtos is alpn_protocols exactly: no ALPN unless configured.
//   - An upstream context resumes sessions (max_session_keys, default 1,
//     0 disables), through a client session cache the returned config
//     shares with its clones.
//
// Certificates, keys and CAs are read once, when compiling (files
// included): there is no reload when a file changes. session_timeout is
// accepted and ignored (Go's ticket lifetime applies).
package tlsconfig

import (
	"crypto/tls"
	"errors"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Downstream compiles a listener's DownstreamTlsContext into a server
// config. At least one certificate is required; with several, Go picks by
// SNI and the client's capabilities.
func Downstream(p *tlsv3.DownstreamTlsContext) (*tls.Config, error) {
	if p == nil {
		return nil, errors.New("tlsconfig: no DownstreamTlsContext")
	}
	if err := checkFields(p.ProtoReflect(), downstreamFields, ""); err != nil {
		return nil, err
	}
	if err := p.ValidateAll(); err != nil {
		return nil, &FieldError{Err: err}
	}
	conf, v, err := common(p.GetCommonTlsContext(), true)
	if err != nil {
		return nil, err
	}
	if len(conf.Certificates) == 0 {
		return nil, fieldErr("common_tls_context.tls_certificates", "a server needs at least one certificate")
	}
	v.applyServer(conf, p.GetRequireClientCertificate().GetValue())
	if p.GetDisableStatelessSessionResumption() {
		conf.SessionTicketsDisabled = true
	}
	return conf, nil
}

// Upstream compiles a cluster's UpstreamTlsContext into a client config;
// see the package doc for what is verified.
func Upstream(p *tlsv3.UpstreamTlsContext) (*tls.Config, error) {
	if p == nil {
		return nil, errors.New("tlsconfig: no UpstreamTlsContext")
	}
	if err := checkFields(p.ProtoReflect(), upstreamFields, ""); err != nil {
		return nil, err
	}
	if err := p.ValidateAll(); err != nil {
		return nil, &FieldError{Err: err}
	}
	if p.GetAllowRenegotiation() {
		return nil, fieldErr("allow_renegotiation", "renegotiation is not supported")
	}
	conf, v, err := common(p.GetCommonTlsContext(), false)
	if err != nil {
		return nil, err
	}
	if len(conf.Certificates) > 1 {
		return nil, fieldErr("common_tls_context.tls_certificates", "a client takes at most one certificate")
	}
	conf.ServerName = p.GetSni()
	v.applyClient(conf)
	keys := 1
	if mk := p.GetMaxSessionKeys(); mk != nil {
		keys = int(mk.GetValue())
	}
	if keys > 0 {
		conf.ClientSessionCache = tls.NewLRUClientSessionCache(keys)
	}
	return conf, nil
}

// common compiles what both directions share: certificates, ALPN,
// tls_params and the validation context.
func common(ctc *tlsv3.CommonTlsContext, server bool) (*tls.Config, *validation, error) {
	const cp = "common_tls_context"
	conf := &tls.Config{}
	if err := applyParams(conf, ctc.GetTlsParams(), cp+".tls_params", server); err != nil {
		return nil, nil, err
	}
	for i, tc := range ctc.GetTlsCertificates() {
		p := fmt.Sprintf("%s.tls_certificates[%d]", cp, i)
		cert, err := KeyPair(tc.GetCertificateChain(), tc.GetPrivateKey(), p+".certificate_chain", p+".private_key")
		if err != nil {
			return nil, nil, err
		}
		conf.Certificates = append(conf.Certificates, cert)
	}
	for i, proto := range ctc.GetAlpnProtocols() {
		if proto == "" || len(proto) > 255 {
			return nil, nil, fieldErr(fmt.Sprintf("%s.alpn_protocols[%d]", cp, i), "must be 1 to 255 bytes")
		}
	}
	conf.NextProtos = append([]string(nil), ctc.GetAlpnProtocols()...)
	if len(conf.NextProtos) == 0 {
		conf.NextProtos = nil
	}
	v, err := compileValidation(ctc, cp)
	if err != nil {
		return nil, nil, err
	}
	return conf, v, nil
}
