package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ReadDataSource returns the bytes of a DataSource: the file (read now),
// inline_bytes, inline_string or the environment variable. Errors are
// *FieldError at path, the DataSource's own path.
func ReadDataSource(ds *corev3.DataSource, path string) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, &FieldError{Path: path, Err: err}
		}
		return b, nil
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fieldErr(path, "environment variable %q is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	case nil:
		return nil, fieldErr(path, "one of filename, inline_bytes, inline_string or environment_variable is required")
	}
	return nil, &FieldError{Path: path, Err: ErrUnsupported}
}

// KeyPair reads a PEM certificate chain and its PEM private key, as
// TlsCertificate.certificate_chain and private_key (or gRPC's cert_chain
// and private_key). chainPath and keyPath name the two fields in errors;
// a key that does not match the chain is reported at keyPath.
func KeyPair(chain, key *corev3.DataSource, chainPath, keyPath string) (tls.Certificate, error) {
	if chain == nil {
		return tls.Certificate{}, fieldErr(chainPath, "required")
	}
	if key == nil {
		return tls.Certificate{}, fieldErr(keyPath, "required")
	}
	c, err := ReadDataSource(chain, chainPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	k, err := ReadDataSource(key, keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := checkChain(c); err != nil {
		return tls.Certificate{}, &FieldError{Path: chainPath, Err: err}
	}
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		// The chain parses, so the key is what is wrong.
		return tls.Certificate{}, &FieldError{Path: keyPath, Err: err}
	}
	return cert, nil
}

// checkChain reports whether pemBytes holds at least one certificate and
// every CERTIFICATE block in it parses.
func checkChain(pemBytes []byte) error {
	n := 0
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	return nil
}

// ErrUnsupported is the Err of a *FieldError naming a field hop does not
// implement; errors.Is(err, ErrUnsupported) finds it.
var ErrUnsupported = errors.New("unsupported field")

// FieldError is a configuration error. Path is the field path relative to
// the message the caller passed in ("common_tls_context.tls_certificates[0].private_key"),
// so that the caller can prefix where that message sits.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// prefixed puts prefix in front of the path of a *FieldError.
func prefixed(prefix string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Path: join(prefix, fe.Path), Err: fe.Err}
	}
	return &FieldError{Path: prefix, Err: err}
}
