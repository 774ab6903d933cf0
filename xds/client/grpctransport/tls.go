package grpctransport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/hopproxy/hop/pkg/tlsconfig"
)

// upstreamTLS builds the client tls.Config of the xDS cluster's transport
// socket (at path, relative to the cluster) with pkg/tlsconfig, so the xDS
// connection verifies its server exactly as a data-plane cluster does: no
// verification without a validation context, otherwise the chain and the
// subject-alt-name matchers, never the host name. nil means plaintext
// (no socket, or raw_buffer). ALPN is always h2, for gRPC.
func upstreamTLS(ts *corev3.TransportSocket, path string) (*tls.Config, error) {
	conf, err := tlsconfig.UpstreamSocket(ts)
	if err != nil {
		return nil, fromTLSConfig(path, err)
	}
	if conf != nil {
		conf.NextProtos = []string{"h2"}
	}
	return conf, nil
}

// sslCredentials builds the tls.Config of google_grpc ssl_credentials:
// root_certs (system roots when unset) verify the server and its name, as
// gRPC does; cert_chain and private_key are the client certificate.
func sslCredentials(sc *corev3.GrpcService_GoogleGrpc_SslCredentials, p string) (*tls.Config, error) {
	conf := &tls.Config{}
	if sc.GetRootCerts() != nil {
		pem, err := tlsconfig.ReadDataSource(sc.GetRootCerts(), p+".root_certs")
		if err != nil {
			return nil, fromTLSConfig("", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fieldErr(p+".root_certs", "no PEM certificate found")
		}
	}
	if sc.GetCertChain() != nil || sc.GetPrivateKey() != nil {
		cert, err := tlsconfig.KeyPair(sc.GetCertChain(), sc.GetPrivateKey(), p+".cert_chain", p+".private_key")
		if err != nil {
			return nil, fromTLSConfig("", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// fromTLSConfig turns a *tlsconfig.FieldError into this package's
// FieldError, its path under prefix.
func fromTLSConfig(prefix string, err error) error {
	var fe *tlsconfig.FieldError
	if !errors.As(err, &fe) {
		return &FieldError{Path: prefix, Err: err}
	}
	path := fe.Path
	switch {
	case prefix == "":
	case path == "":
		path = prefix
	default:
		path = prefix + "." + path
	}
	return &FieldError{Path: path, Err: fe.Err}
}
