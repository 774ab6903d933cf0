package tcpproxy

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hopproxy/hop/pkg/format"
)

// Downstream is what the listener learned about a connection before
// handing it to Serve, beyond the net.Conn itself.
type Downstream struct {
	// ServerName is the SNI of the connection's TLS ClientHello (from the
	// TLS handshake or a tls_inspector); "" when there is none. Only
	// tunneling formats (%REQUESTED_SERVER_NAME%) read it: see
	// Config.UsesServerName.
	ServerName string
}

// session is one downstream connection of a tunneling tcp_proxy as the
// substitution formatters and (future) access logs see it: Envoy's
// downstream StreamInfo. The Serve goroutine writes it while it connects;
// mu guards the fields written later (the request id of a retry, response
// trailers) against readers formatting at the same time.
type session struct {
	// Immutable after newSession.
	down       net.Conn
	serverName string
	start      time.Time

	mu sync.Mutex
	// metadata is the connection's dynamic metadata under
	// envoy.filters.network.tcp_proxy (the tunnel request id).
	metadata map[string]string
	// respHeader is the tunnel response's header (also of a refused
	// tunnel) when propagate_response_headers is set; respTrailer its
	// trailer map, which the HTTP client fills in when the response ends,
	// when propagate_response_trailers is set. Envoy keeps them in filter
	// state for other filters and access logs; hop has neither yet.
	respHeader, respTrailer http.Header
}

func newSession(down net.Conn, info Downstream) *session {
	return &session{down: down, serverName: info.ServerName, start: time.Now()}
}

func (s *session) DownstreamRemoteAddress() string { return addrString(s.down.RemoteAddr()) }
func (s *session) DownstreamLocalAddress() string  { return addrString(s.down.LocalAddr()) }

// Protocol is absent: a tcp_proxy connection has no HTTP protocol.
func (s *session) Protocol() string            { return "" }
func (s *session) RequestedServerName() string { return s.serverName }
func (s *session) StartTime() time.Time        { return s.start }

// DynamicMetadata answers %DYNAMIC_METADATA(envoy.filters.network.tcp_proxy:key)%.
func (s *session) DynamicMetadata(namespace string, path []string) (string, bool) {
	if namespace != requestIDNamespace || len(path) != 1 {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.metadata[path[0]]
	return v, ok
}

func (s *session) setRequestID(key, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.metadata == nil {
		s.metadata = map[string]string{}
	}
	s.metadata[key] = id
}

// noteResponse keeps what propagate_response_headers/trailers ask for.
func (s *session) noteResponse(t *tunneling, res *http.Response) {
	if res == nil || !t.propagateHeaders && !t.propagateTrailers {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.propagateHeaders {
		s.respHeader = res.Header
	}
	if t.propagateTrailers {
		s.respTrailer = res.Trailer
	}
}

// addrString is a.String(), or "" for a missing address.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

var (
	_ format.Stream         = (*session)(nil)
	_ format.ServerNamer    = (*session)(nil)
	_ format.StartTimer     = (*session)(nil)
	_ format.MetadataSource = (*session)(nil)
)
