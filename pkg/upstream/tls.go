package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/hopproxy/hop/pkg/tlsconfig"
)

// ALPN protocol IDs.
const (
	alpnH2    = "h2"
	alpnHTTP1 = "http/1.1"
)

// compileTransportSocket accepts raw_buffer (plain TCP) and
// envoy.transport_sockets.tls with an UpstreamTlsContext, compiled by
// pkg/tlsconfig. ALPN follows Envoy's HttpConnPoolImplBase: the context's
// alpn_protocols when configured, else the pool's protocols as fallback
// ("http/1.1", "h2", or both for auto_config).
func compileTransportSocket(ts *corev3.TransportSocket, s *settings) error {
	if ts == nil {
		return nil
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		switch ts.GetName() {
		case "envoy.transport_sockets.raw_buffer", "raw_buffer":
			return nil
		}
		return fmt.Errorf("transport_socket.name: %w: transport socket %q", ErrUnsupported, ts.GetName())
	}
	switch tc.GetTypeUrl() {
	case tlsconfig.RawBufferType, tlsconfig.UpstreamTLSType:
	default:
		return fmt.Errorf("transport_socket.typed_config: %w: transport socket %q", ErrUnsupported, tc.GetTypeUrl())
	}
	conf, err := tlsconfig.UpstreamSocket(ts)
	if err != nil {
		return &socketError{err: err}
	}
	if conf == nil {
		return nil
	}
	if verify := conf.VerifyConnection; verify != nil {
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				return &verifyError{err: err}
			}
			return nil
		}
	}
	s.tls = conf
	withALPN := func(fallback ...string) *tls.Config {
		c := conf.Clone()
		if len(c.NextProtos) == 0 {
			c.NextProtos = fallback
		}
		return c
	}
	s.tlsH1 = withALPN(alpnHTTP1)
	s.tlsH2 = withALPN(alpnH2)
	s.tlsAuto = withALPN(alpnH2, alpnHTTP1)
	s.tlsDial = conf.Clone()
	s.tlsDial.NextProtos = []string{alpnHTTP1} // an upgrade speaks HTTP/1.1 on it
	return nil
}

// socketError is a pkg/tlsconfig error under "transport_socket.". It also
// matches ErrUnsupported when tlsconfig reports an unsupported field.
type socketError struct{ err error }

func (e *socketError) Error() string { return "transport_socket." + e.err.Error() }

func (e *socketError) Unwrap() []error {
	if errors.Is(e.err, tlsconfig.ErrUnsupported) {
		return []error{e.err, ErrUnsupported}
	}
	return []error{e.err}
}

// verifyError marks a failure of the peer certificate's validation, as
// opposed to other handshake failures.
type verifyError struct{ err error }

func (e *verifyError) Error() string { return e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// handshake runs the TLS client handshake on sock within ctx, counting
// ssl.handshake or ssl.connection_error (and ssl.fail_verify_error).
func (c *Cluster) handshake(ctx context.Context, sock net.Conn, conf *tls.Config) (*tls.Conn, error) {
	conn := tls.Client(sock, conf)
	if err := conn.HandshakeContext(ctx); err != nil {
		c.st.sslConnectionError.Inc()
		var ve *verifyError
		if errors.As(err, &ve) {
			c.st.sslFailVerifyError.Inc()
		}
		return nil, err
	}
	c.st.sslHandshake.Inc()
	return conn, nil
}

// tlsFailureReason renders a handshake error as Envoy's transport failure
// reason, which carries BoringSSL's error queue: certificate validation
// failures and a peer that does not speak TLS get BoringSSL's own codes;
// anything else keeps Go's text in the same envelope.
func tlsFailureReason(err error) string {
	var ve *verifyError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &ve):
		return "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
	case errors.As(err, &rhe):
		return "TLS_error:|268435703:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"
	}
	return "TLS_error:|" + err.Error() + ":TLS_error_end"
}
