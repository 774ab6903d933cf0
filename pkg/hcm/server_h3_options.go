package hcm

import (
	"fmt"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/quic-go/quic-go"
)

// QUICOptions are a QUIC listener's udp_listener_config compiled into the
// transport settings of its connections. Immutable.
type QUICOptions struct {
	conf quic.Config // template; Config hands out copies
}

// Envoy's defaults and bounds (listener/v3/quic_config.proto,
// core/v3/protocol.proto QuicProtocolOptions).
const (
	defaultQUICIdle       = 300 * time.Second
	minQUICIdle           = time.Millisecond
	defaultQUICHandshake  = 20 * time.Second
	minQUICHandshake      = 5 * time.Second
	defaultQUICMaxStreams = 100
	minQUICFlowWindow     = 16 * 1024
)

// CompileQUIC compiles the udp_listener_config of a listener whose
// socket_address.protocol is UDP. Only QUIC listeners (quic_options set)
// are supported. Fields hop can honour are mapped onto quic-go; fields
// that only tune Envoy's event loop are accepted and have no effect
// (packets_to_read_to_connection_count_ratio, max_sessions_per_event_loop,
// num_timeouts_to_trigger_port_migration, which Envoy documents as without
// effect on servers); every other field is refused by name. Errors name
// the field relative to the listener.
func CompileQUIC(u *listenerv3.UdpListenerConfig) (*QUICOptions, error) {
	const p = "udp_listener_config"
	if u == nil || u.GetQuicOptions() == nil {
		return nil, fmt.Errorf("quic: %s.quic_options: a UDP listener without quic_options (raw UDP, udp_proxy) is not supported", p)
	}
	if err := u.ValidateAll(); err != nil {
		return nil, fmt.Errorf("quic: %s: %w", p, err)
	}
	// downstream_socket_config (max_rx_datagram_size, prefer_gro) is
	// accepted: quic-go sizes its receive buffers itself and uses GRO
	// where the kernel offers it.
	if u.GetUdpPacketPacketWriterConfig() != nil {
		return nil, fmt.Errorf("quic: %s.udp_packet_packet_writer_config: unsupported field", p)
	}
	q := u.GetQuicOptions()
	qp := p + ".quic_options"
	for _, f := range []struct {
		set  bool
		name string
	}{
		{q.GetCryptoStreamConfig() != nil, "crypto_stream_config"},
		{q.GetProofSourceConfig() != nil, "proof_source_config"},
		{q.GetConnectionIdGeneratorConfig() != nil, "connection_id_generator_config"},
		{q.GetServerPreferredAddressConfig() != nil, "server_preferred_address_config"},
		{q.GetSendDisableActiveMigration().GetValue(), "send_disable_active_migration"},
		{q.GetConnectionDebugVisitorConfig() != nil, "connection_debug_visitor_config"},
		{len(q.GetSaveCmsgConfig()) > 0, "save_cmsg_config"},
		{q.GetRejectNewConnections(), "reject_new_connections"},
		{q.GetEnabled() != nil && !q.GetEnabled().GetDefaultValue().GetValue(), "enabled"},
	} {
		if f.set {
			return nil, fmt.Errorf("quic: %s.%s: unsupported field", qp, f.name)
		}
	}
	o := &QUICOptions{conf: quic.Config{
		// Envoy serves QUIC version 1 (RFC 9000) to HTTP/3 clients.
		Versions:           []quic.Version{quic.Version1},
		MaxIdleTimeout:     max(durationOr(q.GetIdleTimeout(), defaultQUICIdle), minQUICIdle),
		MaxIncomingStreams: defaultQUICMaxStreams,
	}}
	// quic-go aborts a handshake after twice HandshakeIdleTimeout, Envoy
	// after crypto_handshake_timeout.
	o.conf.HandshakeIdleTimeout = max(durationOr(q.GetCryptoHandshakeTimeout(), defaultQUICHandshake), minQUICHandshake) / 2
	if err := o.applyProtocol(q, qp+".quic_protocol_options"); err != nil {
		return nil, err
	}
	return o, nil
}

// applyProtocol maps quic_options.quic_protocol_options.
func (o *QUICOptions) applyProtocol(q *listenerv3.QuicProtocolOptions, p string) error {
	qp := q.GetQuicProtocolOptions()
	if qp == nil {
		return nil
	}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{qp.GetConnectionOptions() != "", "connection_options"},
		{qp.GetClientConnectionOptions() != "", "client_connection_options"},
		{qp.GetMaxPacketLength() != nil, "max_packet_length"},
		{qp.GetClientPacketWriter() != nil, "client_packet_writer"},
		{qp.GetConnectionMigration() != nil, "connection_migration"},
		{qp.GetMemoryReductionTimeout() != nil, "memory_reduction_timeout"},
		{qp.GetEnableScone().GetValue(), "enable_scone"},
	} {
		if f.set {
			return fmt.Errorf("quic: %s.%s: unsupported field", p, f.name)
		}
	}
	if v := qp.GetMaxConcurrentStreams(); v != nil {
		o.conf.MaxIncomingStreams = int64(v.GetValue())
	}
	// Envoy's windows are fixed; quic-go's grow up to a maximum, here the
	// configured size.
	if v := qp.GetInitialStreamWindowSize(); v != nil {
		w := max(uint64(v.GetValue()), minQUICFlowWindow)
		o.conf.InitialStreamReceiveWindow, o.conf.MaxStreamReceiveWindow = w, w
	}
	if v := qp.GetInitialConnectionWindowSize(); v != nil {
		w := max(uint64(v.GetValue()), minQUICFlowWindow)
		o.conf.InitialConnectionReceiveWindow, o.conf.MaxConnectionReceiveWindow = w, w
	}
	if d := qp.GetIdleNetworkTimeout(); d != nil {
		// Applied after quic_options.idle_timeout in Envoy, so it wins.
		o.conf.MaxIdleTimeout = max(d.AsDuration(), minQUICIdle)
	}
	if ka := qp.GetConnectionKeepalive(); ka != nil {
		// A server probes only with an initial_interval (Envoy); quic-go
		// probes at one fixed period, here max_interval.
		if ka.GetInitialInterval().AsDuration() > 0 && ka.GetMaxInterval().AsDuration() > 0 {
			o.conf.KeepAlivePeriod = ka.GetMaxInterval().AsDuration()
		}
	}
	return nil
}

// Config returns a copy of the QUIC settings for one connection.
func (o *QUICOptions) Config() *quic.Config { return o.conf.Clone() }

// compileH3 reads http3_protocol_options into c (allowExtendedConnect,
// h3OverrideStreamError). The option falls back to the HCM's
// stream_error_on_invalid_http_message, as Envoy's
// Http3::Utility::initializeAndValidateOptions does. quic_protocol_options
// is accepted and has no effect: Envoy reads it for upstream connections
// only (downstream ones take the listener's quic_options). Options hop's
// HTTP/3 server (quic-go) cannot honour are refused by name.
func compileH3(c *Config, p *hcmv3.HttpConnectionManager) error {
	h3 := p.GetHttp3ProtocolOptions()
	c.h3OverrideStreamError = p.GetStreamErrorOnInvalidHttpMessage().GetValue()
	if h3 == nil {
		return nil
	}
	const fp = "http3_protocol_options"
	for _, f := range []struct {
		set  bool
		name string
	}{
		{h3.GetAllowMetadata(), "allow_metadata"},
		{h3.GetDisableQpack(), "disable_qpack"},
		{h3.GetDisableConnectionFlowControlForStreams(), "disable_connection_flow_control_for_streams"},
		{h3.GetDisallowObsText() != nil && !h3.GetDisallowObsText().GetValue(), "disallow_obs_text"},
	} {
		if f.set {
			return fmt.Errorf("hcm: %s.%s: unsupported field", fp, f.name)
		}
	}
	c.allowExtendedConnect = h3.GetAllowExtendedConnect()
	if v := h3.GetOverrideStreamErrorOnInvalidHttpMessage(); v != nil {
		c.h3OverrideStreamError = v.GetValue()
	}
	return nil
}
