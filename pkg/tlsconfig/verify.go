package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// validation is a compiled CertificateValidationContext. It is immutable;
// its methods run concurrently from handshakes.
type validation struct {
	roots           *x509.CertPool // trusted_ca or system_root_certs; nil: no chain check
	sans            []sanMatcher   // any one must match; empty: no name check
	allowExpired    bool
	acceptUntrusted bool // ACCEPT_UNTRUSTED: nothing is checked
}

// sanMatcher reports whether a certificate's subject alt names satisfy one
// configured matcher.
type sanMatcher func(*x509.Certificate) bool

// compileValidation compiles the validation context of ctc (at path cp):
// validation_context or combined_validation_context.default_validation_context.
// It returns nil when there is none.
func compileValidation(ctc *tlsv3.CommonTlsContext, cp string) (*validation, error) {
	vc, p := ctc.GetValidationContext(), join(cp, "validation_context")
	if cvc := ctc.GetCombinedValidationContext(); cvc != nil {
		vc, p = cvc.GetDefaultValidationContext(), join(cp, "combined_validation_context.default_validation_context")
	}
	if vc == nil {
		return nil, nil
	}
	v := &validation{
		allowExpired:    vc.GetAllowExpiredCertificate(),
		acceptUntrusted: vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
	}
	switch {
	case vc.GetTrustedCa() != nil:
		pemBytes, err := ReadDataSource(vc.GetTrustedCa(), p+".trusted_ca")
		if err != nil {
			return nil, err
		}
		v.roots = x509.NewCertPool()
		if !v.roots.AppendCertsFromPEM(pemBytes) {
			return nil, fieldErr(p+".trusted_ca", "no PEM certificate found")
		}
	case vc.GetSystemRootCerts() != nil:
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, &FieldError{Path: p + ".system_root_certs", Err: err}
		}
		v.roots = pool
	}
	var err error
	if v.sans, err = compileSANs(vc, p); err != nil {
		return nil, err
	}
	if v.roots == nil {
		// As Envoy: names and validity cannot be trusted without a CA.
		if len(v.sans) > 0 {
			return nil, fieldErr(p, "subject alt name matching requires trusted_ca")
		}
		if v.allowExpired {
			return nil, fieldErr(p+".allow_expired_certificate", "requires trusted_ca")
		}
	}
	return v, nil
}

// verifyPeer checks a peer's chain (leaf first) against the roots for
// usage, then the SAN matchers.
func (v *validation) verifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("tlsconfig: the peer sent no certificate")
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{Roots: v.roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if v.allowExpired {
		// Verify at a time the leaf was valid; Go has no way to ignore
		// validity periods altogether.
		opts.CurrentTime = leaf.NotBefore
	}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("tlsconfig: verifying the peer certificate: %w", err)
	}
	return v.checkSANs(leaf)
}

func (v *validation) checkSANs(leaf *x509.Certificate) error {
	if len(v.sans) == 0 {
		return nil
	}
	for _, m := range v.sans {
		if m(leaf) {
			return nil
		}
	}
	return ErrSANMismatch
}

// ErrSANMismatch is the handshake error (from VerifyConnection) of a peer
// certificate that no subject alt name matcher accepts, Envoy's
// ssl.fail_verify_san; chain failures wrap crypto/x509's errors instead
// (ssl.fail_verify_error).
var ErrSANMismatch = errors.New("tlsconfig: the peer certificate matches no subject alt name matcher")

// applyClient sets conf's server-certificate verification. Without a
// validation context, or without a CA, or with ACCEPT_UNTRUSTED, the
// server certificate is not verified at all, as in Envoy. Go's own
// verification is always off: it checks the host name, which Envoy does not
// (names are checked by the SAN matchers only).
func (v *validation) applyClient(conf *tls.Config) {
	conf.InsecureSkipVerify = true
	if v == nil || v.roots == nil || v.acceptUntrusted {
		return
	}
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		return v.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
	}
}

// applyServer sets conf's client-certificate policy, as Envoy's verify
// modes: a trusted CA requests a certificate and verifies it when given;
// SAN matchers or require_client_certificate make one required;
// ACCEPT_UNTRUSTED requests one and checks nothing.
func (v *validation) applyServer(conf *tls.Config, require bool) {
	switch {
	case v == nil || (v.roots == nil && !v.acceptUntrusted):
		if require {
			conf.ClientAuth = tls.RequireAnyClientCert
		}
		return
	case v.acceptUntrusted:
		conf.ClientCAs = v.roots
		conf.ClientAuth = tls.RequestClientCert
		if require {
			conf.ClientAuth = tls.RequireAnyClientCert
		}
		return
	}
	conf.ClientCAs = v.roots
	require = require || len(v.sans) > 0
	// Go verifies the chain itself unless expired certificates are allowed.
	goVerifies := !v.allowExpired
	switch {
	case require && goVerifies:
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	case require:
		conf.ClientAuth = tls.RequireAnyClientCert
	case goVerifies:
		conf.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		conf.ClientAuth = tls.RequestClientCert
	}
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil // allowed: ClientAuth enforces require
		}
		if goVerifies {
			return v.checkSANs(cs.PeerCertificates[0])
		}
		return v.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	}
}

// compileSANs compiles match_typed_subject_alt_names and the deprecated
// match_subject_alt_names of vc (at p).
func compileSANs(vc *tlsv3.CertificateValidationContext, p string) ([]sanMatcher, error) {
	var out []sanMatcher
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		mp := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", p, i)
		var values func(*x509.Certificate) []string
		dns := false
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			values, dns = dnsSANs, true
		case tlsv3.SubjectAltNameMatcher_URI:
			values = uriSANs
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			values = emailSANs
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			values = ipSANs
		default:
			return nil, fieldErr(mp+".san_type", "%s is not supported", m.GetSanType())
		}
		sm, err := compileString(m.GetMatcher(), mp+".matcher")
		if err != nil {
			return nil, err
		}
		out = append(out, func(c *x509.Certificate) bool {
			for _, s := range values(c) {
				if sm(s, dns) {
					return true
				}
			}
			return false
		})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := compileString(m, fmt.Sprintf("%s.match_subject_alt_names[%d]", p, i))
		if err != nil {
			return nil, err
		}
		// Any SAN of any type, DNS names with wildcard matching.
		out = append(out, func(c *x509.Certificate) bool {
			for _, s := range c.DNSNames {
				if sm(s, true) {
					return true
				}
			}
			for _, values := range [...]func(*x509.Certificate) []string{uriSANs, emailSANs, ipSANs} {
				for _, s := range values(c) {
					if sm(s, false) {
						return true
					}
				}
			}
			return false
		})
	}
	return out, nil
}

func dnsSANs(c *x509.Certificate) []string   { return c.DNSNames }
func emailSANs(c *x509.Certificate) []string { return c.EmailAddresses }

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

// stringMatch matches a SAN value; dns is set when the value is a DNS
// name, so that an exact matcher also accepts a wildcard certificate name
// ("*.example.com" covers one label), as Envoy's DNS SAN matching does.
type stringMatch func(value string, dns bool) bool

// compileString compiles a StringMatcher at p.
func compileString(m *matcherv3.StringMatcher, p string) (stringMatch, error) {
	fold := func(s string) string { return s }
	if m.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch pat := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(pat.Exact)
		return func(v string, dns bool) bool {
			if fold(v) == want {
				return true
			}
			return dns && wildcardMatch(v, want)
		}, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(pat.Prefix)
		return func(v string, _ bool) bool { return strings.HasPrefix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(pat.Suffix)
		return func(v string, _ bool) bool { return strings.HasSuffix(fold(v), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(pat.Contains)
		return func(v string, _ bool) bool { return strings.Contains(fold(v), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		if m.GetIgnoreCase() {
			return nil, fieldErr(p+".ignore_case", "has no effect with safe_regex")
		}
		re, err := regexp.Compile("^(?:" + pat.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, &FieldError{Path: p + ".safe_regex.regex", Err: err}
		}
		return func(v string, _ bool) bool { return re.MatchString(v) }, nil
	}
	return nil, fieldErr(p, "one of exact, prefix, suffix, contains or safe_regex is required")
}

// wildcardMatch reports whether the certificate name pattern "*.rest"
// covers name: one non-empty leftmost label, the rest equal (ignoring case,
// as DNS does).
func wildcardMatch(pattern, name string) bool {
	rest, ok := strings.CutPrefix(pattern, "*.")
	if !ok {
		return false
	}
	label, tail, ok := strings.Cut(name, ".")
	return ok && label != "" && strings.EqualFold(tail, rest)
}
