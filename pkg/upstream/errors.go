package upstream

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"

	"golang.org/x/net/http2"
)

// ErrNoHealthyUpstream reports that the cluster had no host to choose. The
// caller replies 503 "no healthy upstream", as Envoy does.
var ErrNoHealthyUpstream = errors.New("upstream: no healthy upstream")

// ErrUnsupported is wrapped by every error about a configuration field that
// hop does not implement.
var ErrUnsupported = errors.New("unsupported field")

// Envoy's stream reset reasons (Http::Utility::resetReasonToString) used in
// local replies.
const (
	ResetRemoteConnectionFailure = "remote connection failure"
	ResetLocalConnectionFailure  = "local connection failure"
	ResetConnectionTimeout       = "connection timeout"
	ResetConnectionTermination   = "connection termination"
	ResetProtocolError           = "protocol error"
	ResetRemoteReset             = "remote reset"
	ResetRemoteRefusedStream     = "remote refused stream reset"
)

// ConnectError reports that no connection to the chosen host could be
// established. The caller replies 503 with LocalReplyBody and response flag UF.
type ConnectError struct {
	// ResetReason is Envoy's reset reason: ResetRemoteConnectionFailure
	// (refused, unreachable…), ResetConnectionTimeout (connect_timeout
	// elapsed) or ResetLocalConnectionFailure (the cluster was closed).
	ResetReason string
	// Reason is Envoy's transport failure reason, e.g.
	// "delayed connect error: Connection refused"; empty for timeouts.
	Reason string
	// Host is the "ip:port" that was dialled.
	Host string
	// Err is the underlying error.
	Err error
}

// Error implements error.
func (e *ConnectError) Error() string {
	s := "upstream: connect to " + e.Host + ": " + e.ResetReason
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap returns the underlying error.
func (e *ConnectError) Unwrap() error { return e.Err }

// Timeout reports whether connect_timeout elapsed.
func (e *ConnectError) Timeout() bool { return e.ResetReason == ResetConnectionTimeout }

// StatusCode is the status of Envoy's local reply: 503.
func (e *ConnectError) StatusCode() int { return http.StatusServiceUnavailable }

// LocalReplyBody is the body of Envoy's local reply for this failure, e.g.
// "upstream connect error or disconnect/reset before headers. reset reason:
// remote connection failure, transport failure reason: delayed connect error:
// Connection refused".
func (e *ConnectError) LocalReplyBody() string {
	return localReplyBody(e.ResetReason, e.Reason)
}

// ResetError reports that a request failed after its connection was
// established and before the response headers arrived: the upstream closed
// or reset the connection (or, over HTTP/2, reset the stream), or sent
// something that is not valid HTTP. The caller replies StatusCode with
// LocalReplyBody and response flag UC.
type ResetError struct {
	// ResetReason is ResetConnectionTermination or ResetProtocolError, and
	// over HTTP/2 also ResetRemoteReset or ResetRemoteRefusedStream.
	ResetReason string
	// Err is the error net/http or x/net reported.
	Err error
}

// Error implements error.
func (e *ResetError) Error() string {
	return "upstream: reset before response headers: " + e.ResetReason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ResetError) Unwrap() error { return e.Err }

// StatusCode is the status of Envoy's local reply: 502 for a protocol
// error, 503 otherwise (router.cc, Filter::onUpstreamReset).
func (e *ResetError) StatusCode() int {
	if e.ResetReason == ResetProtocolError {
		return http.StatusBadGateway
	}
	return http.StatusServiceUnavailable
}

// LocalReplyBody is the body of Envoy's local reply for this failure.
func (e *ResetError) LocalReplyBody() string { return localReplyBody(e.ResetReason, "") }

func localReplyBody(reset, transport string) string {
	s := "upstream connect error or disconnect/reset before headers. reset reason: " + reset
	if transport != "" {
		s += ", transport failure reason: " + transport
	}
	return s
}

// transportFailureReason renders a connect error the way Envoy's
// ConnectionImpl does: "delayed connect error: " and strerror(errno).
func transportFailureReason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "delayed connect error: " + strerror(errno)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}

// strerror approximates glibc's strerror text: Go's errno strings are the
// same words, lower-cased at the start.
func strerror(errno syscall.Errno) string {
	s := errno.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// classifyRoundTripError maps an error from http.Transport to the error
// RoundTrip returns. Connect errors come from our dialer already typed;
// cancellation of the request's context and errors about the request itself
// (an invalid header or method: the caller's bug, nothing was sent) are
// returned as they are. Everything else happened on an established
// connection before the response headers were complete.
func classifyRoundTripError(req *http.Request, err error) error {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return ce
	}
	if req.Context().Err() != nil {
		return err
	}
	msg := err.Error()
	if hasAny(msg, localRequestErrors) {
		return err
	}
	// net/http has no typed errors for a malformed response; these are the
	// messages of its response parser (response.go, transfer.go).
	if hasAny(msg, protocolErrors) {
		return &ResetError{ResetReason: ResetProtocolError, Err: err}
	}
	return &ResetError{ResetReason: ResetConnectionTermination, Err: err}
}

var (
	localRequestErrors = []string{
		"net/http: invalid header", "net/http: invalid trailer", "net/http: invalid method",
		"unsupported protocol scheme", "http: nil Request", "http: no Host in request URL",
		"http: Request.ContentLength=", "http: ContentLength=",
	}
	protocolErrors = []string{
		"malformed HTTP", "response headers exceeded", "Content-Length", "unknown status code",
		"bad trailer key", "suspiciously long trailer", "malformed chunked encoding",
	}
)

func hasAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// x/net/http2 reports these conditions with unexported errors; they are
// recognised by their text, which TestXNetErrorTexts pins.
const (
	// The server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1.
	xnetExtendedConnectText = "net/http: extended connect not supported by peer"
	// The connection could not take the stream after all (it closed or
	// received GOAWAY between our reservation and RoundTrip).
	xnetConnUnusableText = "http2: client conn not usable"
	// The stream was above the server's GOAWAY last-stream-id: unprocessed.
	xnetGotGoAwayText = "http2: Transport received Server's graceful shutdown GOAWAY"
	// StreamError.Cause of a RST_STREAM the server sent.
	xnetFromPeerText = "received from peer"
)

// streamNeverOpened reports an HTTP/2 error after which the server has
// certainly not processed the request, so it may be sent again.
func streamNeverOpened(err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) {
		return se.Code == http2.ErrCodeRefusedStream
	}
	msg := err.Error()
	return msg == xnetConnUnusableText || msg == xnetGotGoAwayText
}

// classifyH2Error maps an error from x/net's ClientConn.RoundTrip to the
// error RoundTrip returns, with Envoy's reset reasons: a RST_STREAM from
// the server is a remote reset (REFUSED_STREAM: remote refused stream
// reset), a frame or header block x/net rejects is a protocol error, and
// the connection going away is a connection termination.
func classifyH2Error(req *http.Request, err error) error {
	if req.Context().Err() != nil {
		return err
	}
	msg := err.Error()
	if msg == xnetExtendedConnectText {
		return &extConnectError{reason: "the server did not enable SETTINGS_ENABLE_CONNECT_PROTOCOL", err: err}
	}
	if hasAny(msg, h2LocalRequestErrors) {
		return err
	}
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se) && se.Cause != nil && se.Cause.Error() == xnetFromPeerText:
		if se.Code == http2.ErrCodeRefusedStream {
			return &ResetError{ResetReason: ResetRemoteRefusedStream, Err: err}
		}
		return &ResetError{ResetReason: ResetRemoteReset, Err: err}
	case errors.As(err, &se), errors.As(err, &ce):
		return &ResetError{ResetReason: ResetProtocolError, Err: err}
	}
	return &ResetError{ResetReason: ResetConnectionTermination, Err: err}
}

// h2LocalRequestErrors are x/net's messages about the request itself (the
// caller's bug; nothing was sent).
var h2LocalRequestErrors = []string{
	"http2: invalid", "invalid :protocol header", "http2: Request.URL is nil",
	"request header list larger than peer's advertised limit", "http2: request body larger than specified content length",
}
