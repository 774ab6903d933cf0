// Package buffer is envoy.filters.http.buffer: it reads the whole request
// body before passing the request on, and answers 413 when the body is larger
// than max_request_bytes.
//
// Upgrades: an accepted upgrade whose request declares a Content-Length
// above max_request_bytes is refused with 413, as Envoy refuses it once that
// much payload has arrived. Otherwise the upgrade passes untouched: its
// payload is a byte stream that only starts after the upstream accepts, so
// waiting for it to end would stall the handshake forever, which is what
// Envoy does (see the README's differences from Envoy).
package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/filter"
)

// TypeURL is the typed_config type this filter implements.
const TypeURL = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"

// Builder builds the buffer filter.
type Builder struct{}

func (Builder) TypeURLs() []string { return []string{TypeURL} }
func (Builder) Terminal() bool     { return false }

func (Builder) Compile(m proto.Message) (filter.Factory, error) {
	cfg, ok := m.(*bufferv3.Buffer)
	if !ok {
		return nil, fmt.Errorf("buffer: unexpected config type %T", m)
	}
	if cfg.GetMaxRequestBytes() == nil {
		return nil, errors.New("buffer: max_request_bytes: value is required")
	}
	limit := int64(cfg.GetMaxRequestBytes().GetValue())
	return func(next filter.Handler) filter.Handler {
		return filter.HandlerFunc(func(s *filter.Stream) {
			if s.Req.ContentLength > limit {
				s.LocalReply(http.StatusRequestEntityTooLarge, "Payload Too Large", "request_payload_too_large")
				return
			}
			if s.UpgradeType != "" || s.Req.Body == nil || s.Req.Body == http.NoBody {
				next.Serve(s)
				return
			}
			body, err := io.ReadAll(io.LimitReader(s.Req.Body, limit+1))
			if err != nil {
				s.LocalReply(http.StatusBadRequest, "", "request_body_read_error")
				return
			}
			if int64(len(body)) > limit {
				s.LocalReply(http.StatusRequestEntityTooLarge, "Payload Too Large", "request_payload_too_large")
				return
			}
			s.Req.Body = io.NopCloser(bytes.NewReader(body))
			s.Req.ContentLength = int64(len(body))
			s.Req.TransferEncoding = nil
			next.Serve(s)
		})
	}, nil
}
