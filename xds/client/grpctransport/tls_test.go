package grpctransport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

// TestMain fails the package if goroutines of the transport or grpc outlive
// the tests.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "hop/xds/", "google.golang.org/grpc")
}

// pki is a throw-away CA with a server and a client certificate.
type pki struct {
	caPEM                []byte
	serverCert           tls.Certificate
	clientPEM, clientKey []byte
	pool                 *x509.CertPool

	mu  sync.Mutex
	sni []string // server names the server saw, in handshake order
}

func newPKI(t *testing.T, serverDNS string) *pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage, dns []string, ips []net.IP) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: dns, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	p := &pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	sc, sk := leaf(2, x509.ExtKeyUsageServerAuth, []string{serverDNS}, []net.IP{net.ParseIP("127.0.0.1")})
	p.serverCert, err = tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	p.clientPEM, p.clientKey = leaf(3, x509.ExtKeyUsageClientAuth, []string{"client"}, nil)
	return p
}

// startTLSServer serves xDS over mTLS: the server requires a client
// certificate from p's CA.
func startTLSServer(t *testing.T, p *pki) *xdstest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := xdstest.StartWithOptions(ctx, "127.0.0.1:0", xdstest.Options{ADS: true, TLS: &tls.Config{
		Certificates: []tls.Certificate{p.serverCert},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			p.mu.Lock()
			p.sni = append(p.sni, cs.ServerName)
			p.mu.Unlock()
			return nil
		},
	}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(); cancel() })
	if err := srv.Set("n", "v1", map[string][]types.Resource{
		client.ListenerType: {&listenerv3.Listener{Name: "l1"}},
	}); err != nil {
		t.Fatal(err)
	}
	return srv
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// recorder is a Handler counting updates and stream errors.
type recorder struct {
	mu      sync.Mutex
	updates int
	errs    []error
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) OnUpdate(client.Update) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updates++
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

func (r *recorder) OnStreamError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
	close(r.changed)
	r.changed = make(chan struct{})
}

// await runs a client over tr until the handler saw an update (want true)
// or a stream error (want false), and returns the first stream error.
func await(t *testing.T, tr client.Transport, wantUpdate bool) error {
	t.Helper()
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := newRecorder()
	c := client.New(client.Options{Transport: tr, Node: &corev3.Node{Id: "n"}, Aggregated: true,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	c.Watch(client.ListenerType, true, nil, h)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(runCtx) }()
	defer func() { stop(); <-done }()
	for {
		h.mu.Lock()
		updates, errs, ch := h.updates, h.errs, h.changed
		h.mu.Unlock()
		if wantUpdate && updates > 0 {
			return nil
		}
		if !wantUpdate && len(errs) > 0 {
			if updates > 0 {
				t.Error("an update arrived over a connection that should have failed")
			}
			return errs[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out (updates %d, stream errors %v)", updates, errs)
		case <-ch:
		}
	}
}

func port(t *testing.T, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// An envoy_grpc cluster with an UpstreamTlsContext: trusted CA, client
// certificate for mTLS, SNI and a SAN matcher, all inline; the :authority
// defaults to the cluster name and initial_metadata reaches the server.
func TestEnvoyGrpcMTLS(t *testing.T) {
	p := newPKI(t, "xds.test")
	srv := startTLSServer(t, p)
	utc := func(san string, ca []byte) *tlsv3.UpstreamTlsContext {
		return &tlsv3.UpstreamTlsContext{
			Sni: "xds.test",
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(p.clientPEM), PrivateKey: inline(p.clientKey)}},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: inline(ca),
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_DNS,
						Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}},
					}},
				}},
			},
		}
	}
	src := envoyGrpcSource("xds_cluster")
	src.GrpcServices[0].InitialMetadata = []*corev3.HeaderValue{{Key: "x-token", Value: "secret"}}
	build := func(u *tlsv3.UpstreamTlsContext) client.Transport {
		t.Helper()
		tr, err := FromConfigSource(src, []*clusterv3.Cluster{staticCluster("xds_cluster", "127.0.0.1", port(t, srv.Addr()), u)})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}

	if err := await(t, build(utc("xds.test", p.caPEM)), true); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	if len(p.sni) == 0 || p.sni[0] != "xds.test" {
		t.Errorf("SNI = %v, want xds.test", p.sni)
	}
	p.mu.Unlock()
	reqs := srv.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request recorded")
	}
	md := reqs[0].Metadata
	if got := md[":authority"]; len(got) != 1 || got[0] != "xds_cluster" {
		t.Errorf(":authority = %v, want the cluster name", got)
	}
	if got := md["x-token"]; len(got) != 1 || got[0] != "secret" {
		t.Errorf("x-token metadata = %v, want [secret]", got)
	}

	t.Run("san mismatch", func(t *testing.T) {
		err := await(t, build(utc("other.test", p.caPEM)), false)
		if !strings.Contains(err.Error(), "matches no subject alt name") {
			t.Errorf("stream error = %v, want a SAN mismatch", err)
		}
	})
	t.Run("untrusted server", func(t *testing.T) {
		other := newPKI(t, "xds.test")
		err := await(t, build(utc("xds.test", other.caPEM)), false)
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("stream error = %v, want a certificate error", err)
		}
	})
}

// google_grpc with ssl_credentials verifies the server against root_certs
// and the target's host name, as gRPC does.
func TestGoogleGrpcSSLCredentials(t *testing.T) {
	p := newPKI(t, "xds.test")
	srv := startTLSServer(t, p)
	src := googleGrpcSource(&corev3.GrpcService_GoogleGrpc{
		TargetUri: srv.Addr(),
		ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{
			SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{
				RootCerts: inline(p.caPEM), CertChain: inline(p.clientPEM), PrivateKey: inline(p.clientKey),
			},
		}},
	})
	tr, err := FromConfigSource(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := await(t, tr, true); err != nil {
		t.Fatal(err)
	}
}

// Dial with tlsConf nil is plaintext, which a TLS server refuses.
func TestDialPlaintextAgainstTLS(t *testing.T) {
	p := newPKI(t, "xds.test")
	srv := startTLSServer(t, p)
	tr, err := Dial(srv.Addr(), nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := await(t, tr, false); err == nil {
		t.Fatal("no stream error")
	}
}
