// Package tlstest makes throwaway certificate authorities for tests: a
// self-signed CA whose certificate is written to a file in t.TempDir(), and
// leaf certificates it signs, usable both as servers and as clients.
//
// Keys are ECDSA P-256; certificates are valid from an hour ago to a day
// from now. Failures end the test with t.Fatal.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PKI is a test certificate authority. The exported fields are set by New
// and never change; Leaf may be called from several goroutines.
type PKI struct {
	CAFile string         // PEM file of the CA certificate
	CAPEM  []byte         // the same PEM
	Pool   *x509.CertPool // a pool holding only the CA certificate

	dir string
	ca  *x509.Certificate
	key *ecdsa.PrivateKey

	mu     sync.Mutex // guards serial
	serial int64
}

// Leaf is a certificate signed by a PKI, with its key, as files (in the
// PKI's directory), as PEM and as a tls.Certificate.
type Leaf struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
	Cert              tls.Certificate
}

// New creates a CA in t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tlstest ca " + serial.String()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Pool:  x509.NewCertPool(),
		dir:   t.TempDir(),
		ca:    ca,
		key:   key,
	}
	p.Pool.AddCert(ca)
	p.CAFile = filepath.Join(p.dir, "ca.pem")
	if err := os.WriteFile(p.CAFile, p.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Leaf issues a certificate for names, usable for server and client
// authentication. Each name is an IP address, a URI (it contains "://"),
// an e-mail address (it contains "@") or else a DNS name; the first name is
// also the subject's common name.
func (p *PKI) Leaf(t testing.TB, names ...string) Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.serial++
	n := p.serial
	p.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(n + 1),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, name := range names {
		switch {
		case net.ParseIP(name) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(name))
		case strings.Contains(name, "://"):
			u, err := url.Parse(name)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		case strings.Contains(name, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, name)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l := Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	l.Cert, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	l.CertFile = filepath.Join(p.dir, "leaf"+big.NewInt(n).String()+".pem")
	l.KeyFile = filepath.Join(p.dir, "leaf"+big.NewInt(n).String()+".key")
	if err := os.WriteFile(l.CertFile, l.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.KeyFile, l.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}
