package tlsconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// Every name in the allow lists is a real field of its message, so a typo
// cannot silently refuse a supported field.
func TestAllowListsNameRealFields(t *testing.T) {
	var walk func(md protoreflect.MessageDescriptor, a allow, path string)
	walk = func(md protoreflect.MessageDescriptor, a allow, path string) {
		for name, sub := range a {
			fd := md.Fields().ByName(protoreflect.Name(name))
			if fd == nil {
				t.Errorf("%s: %s has no field %q", path, md.FullName(), name)
				continue
			}
			if sub != nil {
				if fd.Message() == nil {
					t.Errorf("%s.%s: not a message but has a sub-list", path, name)
					continue
				}
				walk(fd.Message(), sub, join(path, name))
			}
		}
	}
	walk((&tlsv3.UpstreamTlsContext{}).ProtoReflect().Descriptor(), upstreamFields, "upstream")
	walk((&tlsv3.DownstreamTlsContext{}).ProtoReflect().Descriptor(), downstreamFields, "downstream")
	walk((&quicv3.QuicDownstreamTransport{}).ProtoReflect().Descriptor(), quicDownstreamFields, "quic")
}

func file(name string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func withVC(vc *tlsv3.CertificateValidationContext) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}}
}

func socket(t *testing.T, m proto.Message) *corev3.TransportSocket {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

func TestErrors(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "server.test")
	other := pki.Leaf(t, "other.test")
	cert := &tlsv3.TlsCertificate{CertificateChain: file(leaf.CertFile), PrivateKey: file(leaf.KeyFile)}
	certs := func(tc ...*tlsv3.TlsCertificate) *tlsv3.CommonTlsContext {
		return &tlsv3.CommonTlsContext{TlsCertificates: tc}
	}
	down := func(ctc *tlsv3.CommonTlsContext) *tlsv3.DownstreamTlsContext {
		if len(ctc.TlsCertificates) == 0 {
			ctc.TlsCertificates = []*tlsv3.TlsCertificate{cert}
		}
		return &tlsv3.DownstreamTlsContext{CommonTlsContext: ctc}
	}
	ca := file(pki.CAFile)
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		up   *tlsv3.UpstreamTlsContext
		down *tlsv3.DownstreamTlsContext
		want string
	}{
		// Unsupported fields, each at its path.
		{name: "upstream auto_host_sni", up: &tlsv3.UpstreamTlsContext{AutoHostSni: true},
			want: "auto_host_sni: unsupported field"},
		{name: "upstream auto_sni_san_validation", up: &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true},
			want: "auto_sni_san_validation: unsupported field"},
		{name: "upstream enforce_rsa_key_usage", up: &tlsv3.UpstreamTlsContext{EnforceRsaKeyUsage: wrapperspb.Bool(true)},
			want: "enforce_rsa_key_usage: unsupported field"},
		{name: "require_sni", down: &tlsv3.DownstreamTlsContext{RequireSni: wrapperspb.Bool(true)},
			want: "require_sni: unsupported field"},
		{name: "session_ticket_keys", down: &tlsv3.DownstreamTlsContext{SessionTicketKeysType: &tlsv3.DownstreamTlsContext_SessionTicketKeys{
			SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{Keys: []*corev3.DataSource{inline(make([]byte, 80))}}}},
			want: "session_ticket_keys: unsupported field"},
		{name: "disable_stateful_session_resumption", down: &tlsv3.DownstreamTlsContext{DisableStatefulSessionResumption: true},
			want: "disable_stateful_session_resumption: unsupported field"},
		{name: "ocsp_staple_policy", down: &tlsv3.DownstreamTlsContext{OcspStaplePolicy: tlsv3.DownstreamTlsContext_MUST_STAPLE},
			want: "ocsp_staple_policy: unsupported field"},
		{name: "prefer_client_ciphers", down: &tlsv3.DownstreamTlsContext{PreferClientCiphers: true},
			want: "prefer_client_ciphers: unsupported field"},
		{name: "sds certificate", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "c"}}}},
			want: "common_tls_context.tls_certificate_sds_secret_configs: unsupported field"},
		{name: "sds validation", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "v"}}}},
			want: "common_tls_context.validation_context_sds_secret_config: unsupported field"},
		{name: "combined sds", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "v"}}}}},
			want: "common_tls_context.combined_validation_context.validation_context_sds_secret_config: unsupported field"},
		{name: "key_log", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{KeyLog: &tlsv3.TlsKeyLog{Path: "/tmp/k"}}},
			want: "common_tls_context.key_log: unsupported field"},
		{name: "signature_algorithms", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{SignatureAlgorithms: []string{"ecdsa_secp256r1_sha256"}}}},
			want: "common_tls_context.tls_params.signature_algorithms: unsupported field"},
		{name: "certificate password", down: down(certs(cert, &tlsv3.TlsCertificate{CertificateChain: file(leaf.CertFile), PrivateKey: file(leaf.KeyFile), Password: inline([]byte("p"))})),
			want: "common_tls_context.tls_certificates[1].password: unsupported field"},
		{name: "pkcs12", down: down(certs(&tlsv3.TlsCertificate{Pkcs12: inline([]byte("p"))})),
			want: "common_tls_context.tls_certificates[0].pkcs12: unsupported field"},
		{name: "data source watched_directory", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: &corev3.DataSource{
			Specifier: &corev3.DataSource_Filename{Filename: leaf.CertFile}, WatchedDirectory: &corev3.WatchedDirectory{Path: "/tmp"}}, PrivateKey: file(leaf.KeyFile)})),
			want: "common_tls_context.tls_certificates[0].certificate_chain.watched_directory: unsupported field"},
		{name: "spki pinning", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{VerifyCertificateSpki: []string{"abc"}})},
			want: "common_tls_context.validation_context.verify_certificate_spki: unsupported field"},
		{name: "hash pinning", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{VerifyCertificateHash: []string{"abc"}})},
			want: "common_tls_context.validation_context.verify_certificate_hash: unsupported field"},
		{name: "crl", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: ca, Crl: inline([]byte("x"))})},
			want: "common_tls_context.validation_context.crl: unsupported field"},
		{name: "custom validator", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{Name: "x"}})},
			want: "common_tls_context.validation_context.custom_validator_config: unsupported field"},
		{name: "max_verify_depth", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{MaxVerifyDepth: wrapperspb.UInt32(2)})},
			want: "common_tls_context.validation_context.max_verify_depth: unsupported field"},
		{name: "san oid", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: ca,
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact("a")}, {SanType: tlsv3.SubjectAltNameMatcher_OTHER_NAME, Matcher: exact("a"), Oid: "1.2.3"}}})},
			want: "common_tls_context.validation_context.match_typed_subject_alt_names[1].oid: unsupported field"},

		// Semantic errors.
		{name: "missing file", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: file("/nonexistent/cert.pem"), PrivateKey: file(leaf.KeyFile)})),
			want: "common_tls_context.tls_certificates[0].certificate_chain: open /nonexistent/cert.pem: no such file or directory"},
		{name: "chain not PEM", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: file(notPEM), PrivateKey: file(leaf.KeyFile)})),
			want: "common_tls_context.tls_certificates[0].certificate_chain: no PEM certificate found"},
		{name: "key not PEM", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: file(leaf.CertFile), PrivateKey: file(notPEM)})),
			want: "common_tls_context.tls_certificates[0].private_key: tls: failed to find any PEM data in key input"},
		{name: "mismatched key", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: file(leaf.CertFile), PrivateKey: inline(other.KeyPEM)})),
			want: "common_tls_context.tls_certificates[0].private_key: tls: private key does not match public key"},
		{name: "key without chain", down: down(certs(&tlsv3.TlsCertificate{PrivateKey: file(leaf.KeyFile)})),
			want: "common_tls_context.tls_certificates[0].certificate_chain: required"},
		{name: "unset environment variable", down: down(certs(&tlsv3.TlsCertificate{CertificateChain: file(leaf.CertFile),
			PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "HOP_TLSCONFIG_TEST_UNSET"}}})),
			want: `common_tls_context.tls_certificates[0].private_key: environment variable "HOP_TLSCONFIG_TEST_UNSET" is not set`},
		{name: "server without certificate", down: &tlsv3.DownstreamTlsContext{},
			want: "common_tls_context.tls_certificates: a server needs at least one certificate"},
		{name: "two client certificates", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: certs(cert, cert)},
			want: "common_tls_context.tls_certificates: a client takes at most one certificate"},
		{name: "unknown cipher", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
			CipherSuites: []string{"ECDHE-RSA-AES128-GCM-SHA256", "[ECDHE-ECDSA-AES128-GCM-SHA256|PSK-AES128-CBC-SHA]"}}}},
			want: `common_tls_context.tls_params.cipher_suites[1]: unknown or unsupported cipher suite "PSK-AES128-CBC-SHA"`},
		{name: "unknown curve", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{EcdhCurves: []string{"P-224"}}}},
			want: `common_tls_context.tls_params.ecdh_curves[0]: unknown or unsupported curve "P-224"`},
		{name: "max below min", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}}},
			want: "common_tls_context.tls_params.tls_maximum_protocol_version: TLS 1.2 is below the minimum TLS 1.3"},
		{name: "renegotiation", up: &tlsv3.UpstreamTlsContext{AllowRenegotiation: true},
			want: "allow_renegotiation: renegotiation is not supported"},
		{name: "trusted_ca not PEM", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: file(notPEM)})},
			want: "common_tls_context.validation_context.trusted_ca: no PEM certificate found"},
		{name: "san without ca", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact("a")}}})},
			want: "common_tls_context.validation_context: subject alt name matching requires trusted_ca"},
		{name: "allow expired without ca", down: down(withVC(&tlsv3.CertificateValidationContext{AllowExpiredCertificate: true})),
			want: "common_tls_context.validation_context.allow_expired_certificate: requires trusted_ca"},
		{name: "bad regex", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: ca,
			MatchSubjectAltNames: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a("}}}}})},
			want: "common_tls_context.validation_context.match_subject_alt_names[0].safe_regex.regex: error parsing regexp: missing closing ): `^(?:a()$`"},
		{name: "regex ignore_case", up: &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: ca,
			MatchSubjectAltNames: []*matcherv3.StringMatcher{{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}}}})},
			want: "common_tls_context.validation_context.match_subject_alt_names[0].ignore_case: has no effect with safe_regex"},
		{name: "empty alpn", down: down(&tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", ""}}),
			want: "common_tls_context.alpn_protocols[1]: must be 1 to 255 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.up != nil {
				_, err = Upstream(tc.up)
			} else {
				_, err = Downstream(tc.down)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%v is not a *FieldError", err)
			}
			if strings.HasSuffix(tc.want, ": unsupported field") != errors.Is(err, ErrUnsupported) {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v", errors.Is(err, ErrUnsupported))
			}
		})
	}
}

// A protoc-gen-validate rule is checked after the allow list.
func TestValidateRules(t *testing.T) {
	_, err := Upstream(&tlsv3.UpstreamTlsContext{Sni: strings.Repeat("a", 300)})
	if err == nil || !strings.Contains(err.Error(), "Sni") {
		t.Fatalf("error = %v, want the sni length rule", err)
	}
}

func TestSocketErrors(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "server.test")
	missing := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
		CertificateChain: file("/x"), PrivateKey: file(leaf.KeyFile)}}}}
	good := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
		CertificateChain: file(leaf.CertFile), PrivateKey: file(leaf.KeyFile)}}}}
	tests := []struct {
		name     string
		ts       *corev3.TransportSocket
		upstream bool
		want     string
	}{
		{"downstream file", socket(t, missing), false,
			"typed_config.common_tls_context.tls_certificates[0].certificate_chain: open /x: no such file or directory"},
		{"quic file", socket(t, &quicv3.QuicDownstreamTransport{DownstreamTlsContext: missing}), false,
			"typed_config.downstream_tls_context.common_tls_context.tls_certificates[0].certificate_chain: open /x: no such file or directory"},
		{"quic early data", socket(t, &quicv3.QuicDownstreamTransport{DownstreamTlsContext: good, EnableEarlyData: wrapperspb.Bool(true)}), false,
			"typed_config.enable_early_data: 0-RTT is not supported"},
		{"quic resumption", socket(t, &quicv3.QuicDownstreamTransport{DownstreamTlsContext: good, EnableResumption: wrapperspb.Bool(true)}), false,
			"typed_config.enable_resumption: unsupported field"},
		{"quic without context", socket(t, &quicv3.QuicDownstreamTransport{}), false,
			"typed_config.downstream_tls_context: required"},
		{"downstream given upstream", socket(t, &tlsv3.UpstreamTlsContext{}), false,
			`typed_config: unsupported transport socket "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"`},
		{"upstream given downstream", socket(t, good), true,
			`typed_config: unsupported transport socket "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"`},
		{"unknown", socket(t, &emptypb.Empty{}), true,
			`typed_config: unsupported transport socket "type.googleapis.com/google.protobuf.Empty"`},
		{"no typed config", &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}, true, "typed_config: required"},
		{"upstream field", socket(t, &tlsv3.UpstreamTlsContext{AllowRenegotiation: true}), true,
			"typed_config.allow_renegotiation: renegotiation is not supported"},
		{"upstream validation", socket(t, &tlsv3.UpstreamTlsContext{Sni: strings.Repeat("a", 300)}), true, "typed_config: invalid UpstreamTlsContext.Sni"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.upstream {
				_, err = UpstreamSocket(tc.ts)
			} else {
				_, _, err = DownstreamSocket(tc.ts)
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%v is not a *FieldError", err)
			}
		})
	}
}

func TestSockets(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "server.test")
	dtc := &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(leaf.CertPEM), PrivateKey: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: string(leaf.KeyPEM)}}}},
			AlpnProtocols: []string{"h3"},
		},
		SessionTimeout:        durationpb.New(0),
		SessionTicketKeysType: &tlsv3.DownstreamTlsContext_DisableStatelessSessionResumption{DisableStatelessSessionResumption: true},
	}
	raw := socket(t, &emptypb.Empty{})
	raw.GetTypedConfig().TypeUrl = RawBufferType

	if conf, quic, err := DownstreamSocket(nil); conf != nil || quic || err != nil {
		t.Errorf("DownstreamSocket(nil) = %v, %v, %v", conf, quic, err)
	}
	if conf, quic, err := DownstreamSocket(raw); conf != nil || quic || err != nil {
		t.Errorf("DownstreamSocket(raw_buffer) = %v, %v, %v", conf, quic, err)
	}
	if conf, err := UpstreamSocket(raw); conf != nil || err != nil {
		t.Errorf("UpstreamSocket(raw_buffer) = %v, %v", conf, err)
	}
	if conf, err := UpstreamSocket(nil); conf != nil || err != nil {
		t.Errorf("UpstreamSocket(nil) = %v, %v", conf, err)
	}
	conf, quic, err := DownstreamSocket(socket(t, dtc))
	if err != nil || quic || len(conf.Certificates) != 1 || !conf.SessionTicketsDisabled {
		t.Errorf("DownstreamSocket(tls) = %v, %v, %v", conf, quic, err)
	}
	conf, quic, err = DownstreamSocket(socket(t, &quicv3.QuicDownstreamTransport{DownstreamTlsContext: dtc, EnableEarlyData: wrapperspb.Bool(false)}))
	if err != nil || !quic || len(conf.Certificates) != 1 || len(conf.NextProtos) != 1 || conf.NextProtos[0] != "h3" {
		t.Errorf("DownstreamSocket(quic) = %v, %v, %v", conf, quic, err)
	}
	uconf, err := UpstreamSocket(socket(t, &tlsv3.UpstreamTlsContext{Sni: "server.test"}))
	if err != nil || uconf.ServerName != "server.test" {
		t.Errorf("UpstreamSocket(tls) = %v, %v", uconf, err)
	}
}
