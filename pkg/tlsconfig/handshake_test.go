package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// TestMain fails the package if goroutines of the test handshakes outlive
// the tests.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "tlsconfig.serveOnce", "crypto/tls.")
}

// result is what one side of a handshake saw.
type result struct {
	state tls.ConnectionState
	err   error
}

// handshake runs one TLS connection over loopback between a server with
// server and a client with client. The server writes "ok" once its
// handshake succeeds and the client reads it, so a client certificate the
// server refuses after the client's handshake (TLS 1.3) fails the client's
// side too.
func handshake(t *testing.T, server, client *tls.Config) (cli, srv result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan result, 1)
	go serveOnce(ctx, ln, done)

	d := tls.Dialer{Config: client}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		tc := c.(*tls.Conn)
		cli.state = tc.ConnectionState()
		if dl, ok := ctx.Deadline(); ok {
			_ = tc.SetDeadline(dl)
		}
		buf := make([]byte, 2)
		if _, err = io.ReadFull(tc, buf); err == nil && string(buf) != "ok" {
			err = fmt.Errorf("read %q", buf)
		}
		tc.Close()
	}
	cli.err = err
	select {
	case srv = <-done:
	case <-ctx.Done():
		t.Fatal("server handshake did not finish")
	}
	return cli, srv
}

// serveOnce accepts one connection on ln, completes its handshake, writes
// "ok" and closes it.
func serveOnce(ctx context.Context, ln net.Listener, done chan<- result) {
	c, err := ln.Accept()
	if err != nil {
		done <- result{err: err}
		return
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	err = tc.HandshakeContext(ctx)
	if err == nil {
		_, err = tc.Write([]byte("ok"))
	}
	done <- result{state: tc.ConnectionState(), err: err}
}

func serverContext(l tlstest.Leaf, alpn ...string) *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(l.CertFile), PrivateKey: file(l.KeyFile)}},
		AlpnProtocols:   alpn,
	}}
}

func mustDownstream(t *testing.T, p *tlsv3.DownstreamTlsContext) *tls.Config {
	t.Helper()
	conf, err := Downstream(p)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func mustUpstream(t *testing.T, p *tlsv3.UpstreamTlsContext) *tls.Config {
	t.Helper()
	conf, err := Upstream(p)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func dnsExact(name string) []*tlsv3.SubjectAltNameMatcher {
	return []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}}}}
}

// The downstream config serves its certificate and negotiates ALPN from
// alpn_protocols; without alpn_protocols no protocol is negotiated.
func TestDownstreamServesCertificateAndALPN(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "server.test")
	server := mustDownstream(t, serverContext(leaf, "h2", "http/1.1"))
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
		{nil, ""},
	} {
		cli, srv := handshake(t, server, &tls.Config{RootCAs: pki.Pool, ServerName: "server.test", NextProtos: tc.offer})
		if cli.err != nil || srv.err != nil {
			t.Fatalf("offer %v: client %v, server %v", tc.offer, cli.err, srv.err)
		}
		if cli.state.NegotiatedProtocol != tc.want {
			t.Errorf("offer %v: negotiated %q, want %q", tc.offer, cli.state.NegotiatedProtocol, tc.want)
		}
		if got := cli.state.PeerCertificates[0].Raw; string(got) != string(leaf.Cert.Certificate[0]) {
			t.Error("the server did not present the configured certificate")
		}
		if cli.state.Version != tls.VersionTLS13 {
			t.Errorf("version %s, want TLS 1.3 (Envoy's server default maximum)", tls.VersionName(cli.state.Version))
		}
	}

	noALPN := mustDownstream(t, serverContext(leaf))
	cli, srv := handshake(t, noALPN, &tls.Config{RootCAs: pki.Pool, ServerName: "server.test", NextProtos: []string{"h2"}})
	if cli.err != nil || srv.err != nil {
		t.Fatalf("client %v, server %v", cli.err, srv.err)
	}
	if cli.state.NegotiatedProtocol != "" {
		t.Errorf("negotiated %q without alpn_protocols, want none", cli.state.NegotiatedProtocol)
	}
}

// Upstream verification: trusted_ca verifies the chain (another CA fails),
// the SNI is sent but never checked against the certificate, and without a
// validation context (or with ACCEPT_UNTRUSTED) any certificate passes.
func TestUpstreamVerification(t *testing.T) {
	pki := tlstest.New(t)
	server := mustDownstream(t, serverContext(pki.Leaf(t, "server.test")))
	otherCA := tlstest.New(t)
	vc := func(ca string, v *tlsv3.CertificateValidationContext) *tlsv3.UpstreamTlsContext {
		v.TrustedCa = file(ca)
		return &tlsv3.UpstreamTlsContext{Sni: "unrelated.example", CommonTlsContext: withVC(v)}
	}
	tests := []struct {
		name    string
		utc     *tlsv3.UpstreamTlsContext
		wantErr string
	}{
		{"trusted ca", vc(pki.CAFile, &tlsv3.CertificateValidationContext{}), ""},
		{"other ca", vc(otherCA.CAFile, &tlsv3.CertificateValidationContext{}), "certificate signed by unknown authority"},
		{"san match", vc(pki.CAFile, &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: dnsExact("server.test")}), ""},
		{"san mismatch", vc(pki.CAFile, &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: dnsExact("unrelated.example")}),
			"matches no subject alt name matcher"},
		{"other ca, accept untrusted", vc(otherCA.CAFile, &tlsv3.CertificateValidationContext{
			TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED}), ""},
		{"no validation context", &tlsv3.UpstreamTlsContext{Sni: "unrelated.example"}, ""},
		{"empty validation context", &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{})}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := mustUpstream(t, tc.utc)
			cli, srv := handshake(t, server, client)
			if tc.wantErr == "" {
				if cli.err != nil || srv.err != nil {
					t.Fatalf("client %v, server %v", cli.err, srv.err)
				}
				if srv.state.ServerName != tc.utc.GetSni() {
					t.Errorf("SNI %q, want %q", srv.state.ServerName, tc.utc.GetSni())
				}
				if cli.state.Version != tls.VersionTLS12 {
					t.Errorf("version %s, want TLS 1.2 (Envoy's client default maximum)", tls.VersionName(cli.state.Version))
				}
				return
			}
			if cli.err == nil || !strings.Contains(cli.err.Error(), tc.wantErr) {
				t.Errorf("client error %v, want %q", cli.err, tc.wantErr)
			}
			if srv.err == nil {
				t.Error("the server's handshake succeeded")
			}
		})
	}
}

// The SAN matchers against certificates with each SAN type.
func TestSANMatchers(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "api.example.com", "*.wild.example.com", "spiffe://hop/ns/default/sa/web", "ops@example.com", "10.0.0.7", "2001:db8::1")
	chain := []*x509.Certificate{leaf.Cert.Leaf}
	sm := func(m *matcherv3.StringMatcher) *matcherv3.StringMatcher { return m }
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	typed := func(st tlsv3.SubjectAltNameMatcher_SanType, m *matcherv3.StringMatcher) *tlsv3.CertificateValidationContext {
		return &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: st, Matcher: m}}}
	}
	legacy := func(m *matcherv3.StringMatcher) *tlsv3.CertificateValidationContext {
		return &tlsv3.CertificateValidationContext{MatchSubjectAltNames: []*matcherv3.StringMatcher{m}}
	}
	const (
		dns   = tlsv3.SubjectAltNameMatcher_DNS
		uri   = tlsv3.SubjectAltNameMatcher_URI
		email = tlsv3.SubjectAltNameMatcher_EMAIL
		ip    = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	)
	tests := []struct {
		name string
		vc   *tlsv3.CertificateValidationContext
		want bool
	}{
		{"dns exact", typed(dns, exact("api.example.com")), true},
		{"dns exact other", typed(dns, exact("web.example.com")), false},
		{"dns exact ignore case", typed(dns, sm(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "API.Example.com"}})), true},
		{"dns exact case differs", typed(dns, exact("API.example.com")), false},
		{"dns wildcard covers one label", typed(dns, exact("a.wild.example.com")), true},
		{"dns wildcard not two labels", typed(dns, exact("a.b.wild.example.com")), false},
		{"dns wildcard not the bare domain", typed(dns, exact("wild.example.com")), false},
		{"dns suffix", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}})), true},
		{"dns prefix", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "api."}})), true},
		{"dns contains", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "example"}})), true},
		{"dns regex", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `api\.example\.(com|org)`}}})), true},
		{"dns regex is anchored", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `api`}}})), false},
		{"uri prefix", typed(uri, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://hop/"}})), true},
		{"uri is not dns", typed(dns, sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}})), false},
		{"email exact", typed(email, exact("ops@example.com")), true},
		{"email is not uri", typed(uri, exact("ops@example.com")), false},
		{"ipv4 exact", typed(ip, exact("10.0.0.7")), true},
		{"ipv6 exact", typed(ip, exact("2001:db8::1")), true},
		{"ip other", typed(ip, exact("10.0.0.8")), false},
		{"legacy matches any type", legacy(exact("10.0.0.7")), true},
		{"legacy uri", legacy(exact("spiffe://hop/ns/default/sa/web")), true},
		{"legacy dns wildcard", legacy(exact("x.wild.example.com")), true},
		{"legacy no match", legacy(exact("nothing")), false},
		{"any of several", &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: append(dnsExact("no.example.com"), dnsExact("api.example.com")...)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.vc.TrustedCa = inline(pki.CAPEM)
			conf := mustUpstream(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: withVC(tc.vc)})
			err := conf.VerifyConnection(tls.ConnectionState{PeerCertificates: chain})
			if got := err == nil; got != tc.want {
				t.Errorf("accepted = %v (%v), want %v", got, err, tc.want)
			}
			if err != nil && !errors.Is(err, ErrSANMismatch) {
				t.Errorf("error %v is not ErrSANMismatch", err)
			}
		})
	}
}

// Client certificates: a trusted CA verifies them when sent,
// require_client_certificate (or SAN matchers) makes one required.
func TestClientCertificates(t *testing.T) {
	pki := tlstest.New(t)
	serverLeaf := pki.Leaf(t, "server.test")
	good := pki.Leaf(t, "client.test")
	otherCA := tlstest.New(t)
	stranger := otherCA.Leaf(t, "client.test")

	down := func(vc *tlsv3.CertificateValidationContext, require bool) *tls.Config {
		dtc := serverContext(serverLeaf)
		if vc != nil {
			dtc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		}
		if require {
			dtc.RequireClientCertificate = wrapperspb.Bool(true)
		}
		return mustDownstream(t, dtc)
	}
	up := func(l *tlstest.Leaf) *tls.Config {
		utc := &tlsv3.UpstreamTlsContext{Sni: "server.test", CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile)})}
		if l != nil {
			utc.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: inline(l.CertPEM), PrivateKey: inline(l.KeyPEM)}}
		}
		conf := mustUpstream(t, utc)
		if l != nil {
			// Go's client sends no certificate when it is not from a CA the
			// server names; send it anyway, to test the server's checks.
			conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &l.Cert, nil }
		}
		return conf
	}
	ca := func() *tlsv3.CertificateValidationContext {
		return &tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile)}
	}
	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		want   bool // handshake succeeds
		peer   bool // the server saw a client certificate
	}{
		{"required, good", down(ca(), true), up(&good), true, true},
		{"required, none", down(ca(), true), up(nil), false, false},
		{"required, other ca", down(ca(), true), up(&stranger), false, false},
		{"optional, none", down(ca(), false), up(nil), true, false},
		{"optional, good", down(ca(), false), up(&good), true, true},
		{"optional, other ca", down(ca(), false), up(&stranger), false, false},
		{"san matcher requires one", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile), MatchTypedSubjectAltNames: dnsExact("client.test")}, false), up(nil), false, false},
		{"san matcher accepts", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile), MatchTypedSubjectAltNames: dnsExact("client.test")}, false), up(&good), true, true},
		{"san matcher rejects", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile), MatchTypedSubjectAltNames: dnsExact("admin.test")}, false), up(&good), false, false},
		{"no ca, required, any certificate", down(nil, true), up(&stranger), true, true},
		{"no ca, required, none", down(nil, true), up(nil), false, false},
		{"no ca, not requested", down(nil, false), up(&good), true, false},
		{"accept untrusted", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile),
			TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED}, false), up(&stranger), true, true},
		{"allow expired still checks the ca", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile), AllowExpiredCertificate: true}, true), up(&stranger), false, false},
		{"allow expired, good", down(&tlsv3.CertificateValidationContext{TrustedCa: file(pki.CAFile), AllowExpiredCertificate: true}, true), up(&good), true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := handshake(t, tc.server, tc.client)
			ok := cli.err == nil && srv.err == nil
			if ok != tc.want {
				t.Fatalf("succeeded = %v (client %v, server %v), want %v", ok, cli.err, srv.err, tc.want)
			}
			if ok && (len(srv.state.PeerCertificates) > 0) != tc.peer {
				t.Errorf("server saw %d client certificates, want some: %v", len(srv.state.PeerCertificates), tc.peer)
			}
			if !ok && cli.err == nil {
				t.Error("the client did not see the refusal")
			}
		})
	}
}

// A client certificate from tls_certificates is sent by Go's own selection
// when the server asks for the CA that issued it.
func TestClientCertificateSent(t *testing.T) {
	pki := tlstest.New(t)
	dtc := serverContext(pki.Leaf(t, "server.test"))
	dtc.RequireClientCertificate = wrapperspb.Bool(true)
	dtc.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: file(pki.CAFile), MatchTypedSubjectAltNames: dnsExact("client.test")}}
	l := pki.Leaf(t, "client.test")
	client := mustUpstream(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(l.CertFile), PrivateKey: file(l.KeyFile)}}}})
	cli, srv := handshake(t, mustDownstream(t, dtc), client)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("client %v, server %v", cli.err, srv.err)
	}
	if len(srv.state.PeerCertificates) == 0 || srv.state.PeerCertificates[0].Subject.CommonName != "client.test" {
		t.Error("the server did not get the client certificate")
	}
}

// tls_params: versions and TLS 1.2 cipher suites by their OpenSSL names.
func TestTLSParams(t *testing.T) {
	pki := tlstest.New(t)
	dtc := serverContext(pki.Leaf(t, "server.test"))
	dtc.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		CipherSuites:              []string{"[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-RSA-CHACHA20-POLY1305]"},
		EcdhCurves:                []string{"P-256"},
	}
	server := mustDownstream(t, dtc)
	client := mustUpstream(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}}})
	cli, srv := handshake(t, server, client)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("client %v, server %v", cli.err, srv.err)
	}
	if cli.state.Version != tls.VersionTLS12 || cli.state.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
		t.Errorf("negotiated %s %s", tls.VersionName(cli.state.Version), tls.CipherSuiteName(cli.state.CipherSuite))
	}

	min13 := mustUpstream(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}}})
	if cli, _ := handshake(t, server, min13); cli.err == nil {
		t.Error("a TLS 1.3-only client agreed with a TLS 1.2-only server")
	}
}

// The upstream config resumes sessions (Envoy's max_session_keys default
// 1) and still runs verification on a resumed connection's certificates;
// max_session_keys 0 turns resumption off.
func TestUpstreamSessionResumption(t *testing.T) {
	pki := tlstest.New(t)
	server := mustDownstream(t, serverContext(pki.Leaf(t, "server.test")))
	utc := &tlsv3.UpstreamTlsContext{Sni: "server.test", CommonTlsContext: withVC(&tlsv3.CertificateValidationContext{
		TrustedCa: file(pki.CAFile), MatchTypedSubjectAltNames: dnsExact("server.test")})}
	client := mustUpstream(t, utc)
	for i, wantResume := range []bool{false, true} {
		cli, srv := handshake(t, server, client)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("connection %d: client %v, server %v", i, cli.err, srv.err)
		}
		if cli.state.DidResume != wantResume {
			t.Errorf("connection %d: resumed %v, want %v", i, cli.state.DidResume, wantResume)
		}
	}
	utc.MaxSessionKeys = wrapperspb.UInt32(0)
	client = mustUpstream(t, utc)
	for i := range 2 {
		if cli, _ := handshake(t, server, client); cli.err != nil || cli.state.DidResume {
			t.Errorf("connection %d with max_session_keys 0: %v, resumed %v", i, cli.err, cli.state.DidResume)
		}
	}
}
