package tlsconfig

import (
	"crypto/tls"
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// Type URLs of the transport sockets hop knows. The socket's name is not
// looked at: Envoy selects the extension by the typed_config type.
const (
	DownstreamTLSType  = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	UpstreamTLSType    = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	QUICDownstreamType = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
	RawBufferType      = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// DownstreamSocket compiles a listener's (filter chain's) transport socket.
// A nil socket or raw_buffer is plaintext: (nil, false, nil). A
// DownstreamTlsContext gives (conf, false); a QuicDownstreamTransport gives
// the config of its downstream_tls_context and quic true. Error paths are
// relative to the socket ("typed_config.common_tls_context...").
func DownstreamSocket(ts *corev3.TransportSocket) (conf *tls.Config, quic bool, err error) {
	if ts == nil {
		return nil, false, nil
	}
	switch url := ts.GetTypedConfig().GetTypeUrl(); url {
	case RawBufferType:
		return nil, false, nil
	case DownstreamTLSType:
		dtc := &tlsv3.DownstreamTlsContext{}
		if err := unmarshal(ts, dtc); err != nil {
			return nil, false, err
		}
		conf, err := Downstream(dtc)
		if err != nil {
			return nil, false, prefixed("typed_config", err)
		}
		return conf, false, nil
	case QUICDownstreamType:
		qdt := &quicv3.QuicDownstreamTransport{}
		if err := unmarshal(ts, qdt); err != nil {
			return nil, false, err
		}
		if err := checkFields(qdt.ProtoReflect(), quicDownstreamFields, "typed_config"); err != nil {
			return nil, false, err
		}
		if qdt.GetDownstreamTlsContext() == nil {
			return nil, false, fieldErr("typed_config.downstream_tls_context", "required")
		}
		if err := qdt.ValidateAll(); err != nil {
			return nil, false, &FieldError{Path: "typed_config", Err: err}
		}
		if qdt.GetEnableEarlyData().GetValue() {
			return nil, false, fieldErr("typed_config.enable_early_data", "0-RTT is not supported")
		}
		conf, err := Downstream(qdt.GetDownstreamTlsContext())
		if err != nil {
			return nil, false, prefixed("typed_config.downstream_tls_context", err)
		}
		return conf, true, nil
	default:
		return nil, false, unknownSocket(ts)
	}
}

// UpstreamSocket compiles a cluster's transport socket: nil or raw_buffer
// is plaintext (nil, nil), an UpstreamTlsContext its client config. Error
// paths are relative to the socket.
func UpstreamSocket(ts *corev3.TransportSocket) (*tls.Config, error) {
	if ts == nil {
		return nil, nil
	}
	switch ts.GetTypedConfig().GetTypeUrl() {
	case RawBufferType:
		return nil, nil
	case UpstreamTLSType:
		utc := &tlsv3.UpstreamTlsContext{}
		if err := unmarshal(ts, utc); err != nil {
			return nil, err
		}
		conf, err := Upstream(utc)
		if err != nil {
			return nil, prefixed("typed_config", err)
		}
		return conf, nil
	default:
		return nil, unknownSocket(ts)
	}
}

func unmarshal(ts *corev3.TransportSocket, m proto.Message) error {
	if err := ts.GetTypedConfig().UnmarshalTo(m); err != nil {
		return &FieldError{Path: "typed_config", Err: err}
	}
	return nil
}

func unknownSocket(ts *corev3.TransportSocket) error {
	if ts.GetTypedConfig() == nil {
		return &FieldError{Path: "typed_config", Err: errors.New("required")}
	}
	return fieldErr("typed_config", "unsupported transport socket %q", ts.GetTypedConfig().GetTypeUrl())
}
