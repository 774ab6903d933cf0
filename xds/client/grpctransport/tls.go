package grpctransport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// upstreamTLS builds the client tls.Config of the xDS cluster's
// UpstreamTlsContext at path. It follows Envoy:
//
//   - sni is sent as the server name, and no SNI when it is empty; there is
//     no hostname check (Envoy checks names only through the
//     subject-alt-name matchers);
//   - without a validation context the server certificate is not verified
//     at all; with trusted_ca (or system_root_certs) the chain is verified,
//     then match_typed_subject_alt_names / match_subject_alt_names;
//   - tls_certificates[0] is the client certificate for mTLS;
//   - ALPN is h2 (gRPC adds it).
//
// SDS, certificate providers, SPKI/hash pinning, CRLs and custom validators
// are refused rather than silently weakening the connection.
func upstreamTLS(utc *tlsv3.UpstreamTlsContext, path string) (*tls.Config, error) {
	conf := &tls.Config{ServerName: utc.GetSni(), NextProtos: []string{"h2"}}
	cp := path + ".common_tls_context"
	ctc := utc.GetCommonTlsContext()
	if len(ctc.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return nil, fieldErr(cp+".tls_certificate_sds_secret_configs", "SDS is not supported for the xDS cluster")
	}
	if ctc.GetTlsCertificateProviderInstance() != nil || ctc.GetTlsCertificateCertificateProviderInstance() != nil ||
		ctc.GetTlsCertificateCertificateProvider() != nil {
		return nil, fieldErr(cp, "certificate providers are not supported for the xDS cluster")
	}
	for i, tc := range ctc.GetTlsCertificates() {
		p := fmt.Sprintf("%s.tls_certificates[%d]", cp, i)
		cert, err := keyPair(tc.GetCertificateChain(), tc.GetPrivateKey(), p+".certificate_chain", p+".private_key")
		if err != nil {
			return nil, err
		}
		conf.Certificates = append(conf.Certificates, cert)
	}
	if err := tlsVersions(conf, ctc.GetTlsParams(), cp+".tls_params"); err != nil {
		return nil, err
	}
	var vc *tlsv3.CertificateValidationContext
	vp := cp + ".validation_context"
	switch {
	case ctc.GetValidationContext() != nil:
		vc = ctc.GetValidationContext()
	case ctc.GetCombinedValidationContext() != nil:
		vc = ctc.GetCombinedValidationContext().GetDefaultValidationContext()
		vp = cp + ".combined_validation_context.default_validation_context"
		if ctc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig() != nil {
			return nil, fieldErr(cp+".combined_validation_context.validation_context_sds_secret_config", "SDS is not supported for the xDS cluster")
		}
	case ctc.GetValidationContextSdsSecretConfig() != nil:
		return nil, fieldErr(cp+".validation_context_sds_secret_config", "SDS is not supported for the xDS cluster")
	case ctc.GetValidationContextType() != nil:
		return nil, fieldErr(cp, "only validation_context and combined_validation_context are supported")
	}
	verify, err := verifier(vc, vp)
	if err != nil {
		return nil, err
	}
	// Go's own verification always checks the host name; Envoy's does not,
	// so the chain and names are checked in VerifyConnection instead.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = verify
	return conf, nil
}

// verifier returns the VerifyConnection of a validation context; nil vc
// accepts any server certificate, as Envoy does without one.
func verifier(vc *tlsv3.CertificateValidationContext, p string) (func(tls.ConnectionState) error, error) {
	if vc == nil {
		return func(tls.ConnectionState) error { return nil }, nil
	}
	switch {
	case len(vc.GetVerifyCertificateSpki()) > 0:
		return nil, fieldErr(p+".verify_certificate_spki", "not supported")
	case len(vc.GetVerifyCertificateHash()) > 0:
		return nil, fieldErr(p+".verify_certificate_hash", "not supported")
	case vc.GetCrl() != nil:
		return nil, fieldErr(p+".crl", "not supported")
	case vc.GetCustomValidatorConfig() != nil:
		return nil, fieldErr(p+".custom_validator_config", "not supported")
	case vc.GetCaCertificateProviderInstance() != nil:
		return nil, fieldErr(p+".ca_certificate_provider_instance", "not supported")
	}
	var roots *x509.CertPool
	switch {
	case vc.GetTrustedCa() != nil:
		pem, err := readDataSource(vc.GetTrustedCa(), p+".trusted_ca")
		if err != nil {
			return nil, err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fieldErr(p+".trusted_ca", "no PEM certificate found")
		}
	case vc.GetSystemRootCerts() != nil:
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, &FieldError{Path: p + ".system_root_certs", Err: err}
		}
		roots = sys
	}
	sans, err := sanMatchers(vc, p)
	if err != nil {
		return nil, err
	}
	if roots == nil {
		if len(sans) > 0 {
			return nil, fieldErr(p, "subject alt name matching requires trusted_ca")
		}
		return func(tls.ConnectionState) error { return nil }, nil
	}
	allowExpired := vc.GetAllowExpiredCertificate()
	acceptUntrusted := vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("grpctransport: the xDS server sent no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if !acceptUntrusted {
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if allowExpired {
				opts.CurrentTime = leaf.NotBefore
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("grpctransport: verifying the xDS server certificate: %w", err)
			}
		}
		if len(sans) == 0 {
			return nil
		}
		for _, m := range sans {
			if m(leaf) {
				return nil
			}
		}
		return errors.New("grpctransport: the xDS server certificate matches no subject alt name matcher")
	}, nil
}

// sanMatchers compiles the subject-alt-name matchers of a validation
// context; a certificate is accepted when any of them matches.
func sanMatchers(vc *tlsv3.CertificateValidationContext, p string) ([]func(*x509.Certificate) bool, error) {
	var out []func(*x509.Certificate) bool
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		mp := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", p, i)
		dns := m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS
		sm, err := stringMatcher(m.GetMatcher(), mp+".matcher", dns)
		if err != nil {
			return nil, err
		}
		var values func(*x509.Certificate) []string
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			values = func(c *x509.Certificate) []string { return c.DNSNames }
		case tlsv3.SubjectAltNameMatcher_URI:
			values = uriSANs
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			values = func(c *x509.Certificate) []string { return c.EmailAddresses }
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			values = ipSANs
		default:
			return nil, fieldErr(mp+".san_type", "%s is not supported", m.GetSanType())
		}
		out = append(out, anyValue(values, sm))
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := stringMatcher(m, fmt.Sprintf("%s.match_subject_alt_names[%d]", p, i), false)
		if err != nil {
			return nil, err
		}
		out = append(out, anyValue(func(c *x509.Certificate) []string {
			all := append(append([]string(nil), c.DNSNames...), uriSANs(c)...)
			return append(append(all, c.EmailAddresses...), ipSANs(c)...)
		}, sm))
	}
	return out, nil
}

func anyValue(values func(*x509.Certificate) []string, match func(string) bool) func(*x509.Certificate) bool {
	return func(c *x509.Certificate) bool {
		for _, v := range values(c) {
			if match(v) {
				return true
			}
		}
		return false
	}
}

func uriSANs(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.URIs))
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

func ipSANs(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.IPAddresses))
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// stringMatcher compiles a StringMatcher. For a DNS exact match a wildcard
// SAN in the certificate ("*.example.com") matches one label (RFC 6125
// §6.4.3), as Envoy evaluates it.
func stringMatcher(m *matcherv3.StringMatcher, p string, dns bool) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch pat := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(pat.Exact)
		return func(v string) bool {
			v = fold(v)
			if v == want {
				return true
			}
			if dns && strings.HasPrefix(v, "*.") {
				label, rest, ok := strings.Cut(want, ".")
				return ok && label != "" && strings.EqualFold("."+rest, v[1:])
			}
			return false
		}, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(pat.Prefix)
		return func(v string) bool { return strings.HasPrefix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(pat.Suffix)
		return func(v string) bool { return strings.HasSuffix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(pat.Contains)
		return func(v string) bool { return strings.Contains(fold(v), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + pat.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, &FieldError{Path: p + ".safe_regex.regex", Err: err}
		}
		return re.MatchString, nil
	}
	return nil, fieldErr(p, "one of exact, prefix, suffix, contains or safe_regex is required")
}

func tlsVersions(conf *tls.Config, tp *tlsv3.TlsParameters, p string) error {
	v := func(proto tlsv3.TlsParameters_TlsProtocol, field string) (uint16, error) {
		switch proto {
		case tlsv3.TlsParameters_TLS_AUTO:
			return 0, nil
		case tlsv3.TlsParameters_TLSv1_2:
			return tls.VersionTLS12, nil
		case tlsv3.TlsParameters_TLSv1_3:
			return tls.VersionTLS13, nil
		}
		return 0, fieldErr(p+"."+field, "%s is not supported (gRPC needs TLS 1.2 or later)", proto)
	}
	var err error
	if conf.MinVersion, err = v(tp.GetTlsMinimumProtocolVersion(), "tls_minimum_protocol_version"); err != nil {
		return err
	}
	conf.MaxVersion, err = v(tp.GetTlsMaximumProtocolVersion(), "tls_maximum_protocol_version")
	return err
}

// sslCredentials builds the tls.Config of google_grpc ssl_credentials:
// root_certs (system roots when unset) verify the server and its name, as
// gRPC does; cert_chain and private_key are the client certificate.
func sslCredentials(sc *corev3.GrpcService_GoogleGrpc_SslCredentials, p string) (*tls.Config, error) {
	conf := &tls.Config{}
	if sc.GetRootCerts() != nil {
		pem, err := readDataSource(sc.GetRootCerts(), p+".root_certs")
		if err != nil {
			return nil, err
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fieldErr(p+".root_certs", "no PEM certificate found")
		}
	}
	if sc.GetCertChain() != nil || sc.GetPrivateKey() != nil {
		cert, err := keyPair(sc.GetCertChain(), sc.GetPrivateKey(), p+".cert_chain", p+".private_key")
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func keyPair(chain, key *corev3.DataSource, chainPath, keyPath string) (tls.Certificate, error) {
	if chain == nil {
		return tls.Certificate{}, fieldErr(chainPath, "required with a private key")
	}
	if key == nil {
		return tls.Certificate{}, fieldErr(keyPath, "required with a certificate chain")
	}
	c, err := readDataSource(chain, chainPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	k, err := readDataSource(key, keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		return tls.Certificate{}, &FieldError{Path: chainPath, Err: err}
	}
	return cert, nil
}

// readDataSource reads a DataSource (filename, inline_bytes, inline_string
// or environment_variable).
func readDataSource(ds *corev3.DataSource, p string) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, &FieldError{Path: p + ".filename", Err: err}
		}
		return b, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fieldErr(p+".environment_variable", "%q is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	}
	return nil, fieldErr(p, "one of filename, inline_bytes, inline_string or environment_variable is required")
}
