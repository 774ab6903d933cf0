package hcm

import (
	"fmt"
	"math"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hopproxy/hop/pkg/h2wire"
	"github.com/hopproxy/hop/pkg/stats"
)

// h2Options are the HCM's http2_protocol_options as hop's HTTP/2 server
// (golang.org/x/net/http2) applies them to each connection. Comparable:
// SameServer compares it whole.
type h2Options struct {
	allowConnect         bool   // advertise RFC 8441 and accept :protocol
	streamErrorOnInvalid bool   // an invalid message resets its stream only (else the connection)
	maxConcurrentStreams uint32 // SETTINGS_MAX_CONCURRENT_STREAMS
	streamWindow         int32  // SETTINGS_INITIAL_WINDOW_SIZE (x/net MaxUploadBufferPerStream)
	connWindow           int32  // connection window (x/net MaxUploadBufferPerConnection)
	hpackTableSize       uint32 // SETTINGS_HEADER_TABLE_SIZE (x/net MaxDecoderHeaderTableSize)
}

// Envoy's HTTP/2 defaults (api/envoy/config/core/v3/protocol.proto).
const (
	defaultH2MaxStreams = math.MaxInt32
	defaultH2Window     = 256 << 20
	defaultHpackTable   = 4096
)

// The Http2ProtocolOptions fields hop honours; any other field that is
// set is refused by name.
var h2Supported = map[protoreflect.Name]bool{
	"hpack_table_size":                              true,
	"max_concurrent_streams":                        true,
	"initial_stream_window_size":                    true,
	"initial_connection_window_size":                true,
	"allow_connect":                                 true,
	"stream_error_on_invalid_http_messaging":        true,
	"override_stream_error_on_invalid_http_message": true,
}

// compileH2 reads codec_type and http2_protocol_options into c.
//
// Whether an invalid HTTP message is a stream error follows Envoy's
// Http2::Utility::initializeAndValidateOptions: the option's
// override_stream_error_on_invalid_http_message when set, else the HCM's
// stream_error_on_invalid_http_message when set, else the deprecated
// stream_error_on_invalid_http_messaging.
func compileH2(c *Config, p *hcmv3.HttpConnectionManager) error {
	switch c.codec {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1,
		hcmv3.HttpConnectionManager_HTTP2, hcmv3.HttpConnectionManager_HTTP3:
	default:
		return fmt.Errorf("hcm: codec_type: %s is not supported", c.codec)
	}
	o := h2Options{
		maxConcurrentStreams: defaultH2MaxStreams,
		streamWindow:         defaultH2Window,
		connWindow:           defaultH2Window,
		hpackTableSize:       defaultHpackTable,
	}
	h2 := p.GetHttp2ProtocolOptions()
	var err error
	if h2 != nil {
		h2.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			if !h2Supported[fd.Name()] {
				err = fmt.Errorf("hcm: http2_protocol_options.%s: unsupported field", fd.Name())
				return false
			}
			return true
		})
	}
	if err != nil {
		return err
	}
	if v := h2.GetHpackTableSize(); v != nil {
		if v.GetValue() == 0 {
			// x/net cannot advertise a table of size 0 (it takes 0 for
			// "default").
			return fmt.Errorf("hcm: http2_protocol_options.hpack_table_size: 0 (no dynamic table) is not supported")
		}
		o.hpackTableSize = v.GetValue()
	}
	if v := h2.GetMaxConcurrentStreams(); v != nil {
		o.maxConcurrentStreams = v.GetValue() // validated 1..2^31-1
	}
	if v := h2.GetInitialStreamWindowSize(); v != nil {
		o.streamWindow = int32(v.GetValue()) // validated 65535..2^31-1
	}
	if v := h2.GetInitialConnectionWindowSize(); v != nil {
		o.connWindow = int32(v.GetValue())
	}
	o.allowConnect = h2.GetAllowConnect()
	o.streamErrorOnInvalid = streamErrorOnInvalid(h2, p)
	c.h2 = o
	return nil
}

func streamErrorOnInvalid(h2 *corev3.Http2ProtocolOptions, p *hcmv3.HttpConnectionManager) bool {
	if v := h2.GetOverrideStreamErrorOnInvalidHttpMessage(); v != nil {
		return v.GetValue()
	}
	if v := p.GetStreamErrorOnInvalidHttpMessage(); v != nil {
		return v.GetValue()
	}
	return h2.GetStreamErrorOnInvalidHttpMessaging()
}

// codecStats are the stats of hop's HTTP/2 codec: Envoy's root-scope
// http2.* codec stats hop can observe honestly, and the connection
// manager's downstream_cx_protocol_error.
type codecStats struct {
	wire             h2wire.Counters // rx_reset, tx_reset, goaway_sent, stream_refused_errors
	rxMessagingError *stats.Counter  // an invalid HTTP message (a :protocol not allowed, a malformed request x/net refused)
	streamsActive    *stats.Gauge    // HTTP/2 streams being served
	cxProtocolError  *stats.Counter  // http.<prefix>.downstream_cx_protocol_error
}

func newCodecStats(st *stats.Store, prefix string) *codecStats {
	h2 := st.Root().Sub("http2")
	return &codecStats{
		wire: h2wire.Counters{
			RxReset:       h2.Counter("rx_reset"),
			TxReset:       h2.Counter("tx_reset"),
			GoAwaySent:    h2.Counter("goaway_sent"),
			StreamRefused: h2.Counter("stream_refused_errors"),
		},
		rxMessagingError: h2.Counter("rx_messaging_error"),
		streamsActive:    h2.Gauge("streams_active"),
		cxProtocolError:  st.Tagged("http", prefix, "envoy_http_conn_manager_prefix").Counter("downstream_cx_protocol_error"),
	}
}
