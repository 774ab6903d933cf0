// Package xdstest runs an in-process go-control-plane management server on
// loopback for tests and local tools: SotW and delta ADS plus the per-type
// LDS, CDS, RDS and EDS services, backed by a snapshot cache. It records
// every request the server receives and every response it sends, so tests
// can assert on ACKs, NACKs, versions and nonces, and it can stop and
// restart on the same address to exercise reconnects.
//
// go-control-plane's pkg/server/v3 is not used: it imports the
// go-control-plane/ratelimit module, which hop does not require. The sotw
// and delta servers are registered here directly instead.
package xdstest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
)

// Options configures a Server.
type Options struct {
	// ADS makes the snapshot cache ADS-strict, as Start does: a request
	// that names resources is answered only when it names every resource of
	// its type in the snapshot (go-control-plane "ADS mode"). Set it false
	// to let a client subscribe to a subset of names.
	ADS bool
	// TLS, when set, serves TLS with this configuration.
	TLS *tls.Config
}

// Server is a go-control-plane management server on loopback.
type Server struct {
	// Cache holds the snapshots served. It survives Stop and Restart.
	Cache cachev3.SnapshotCache

	// Immutable after Start.
	ctx  context.Context // the lifetime given to Start
	opts Options
	addr string

	mu       sync.Mutex // guards everything below
	gs       *grpc.Server
	cancel   context.CancelFunc // ends the current serving period
	served   chan struct{}      // closed when the current Serve returns
	nextID   int64
	streams  map[int64]*recorder
	requests []Request
	resps    []Response
	changed  chan struct{} // closed and replaced when a request is recorded
	hook     func(proto.Message)
}

// Request is one request the server received, as the client sent it.
type Request struct {
	Stream int64  // per-server stream number, starting at 1
	Method string // gRPC method of the stream
	Delta  bool
	// TypeURL, Version (SotW version_info), Nonce (response_nonce) and
	// Error (error_detail.message; "" for an ACK or a subscription).
	TypeURL, Version, Nonce, Error string
	ErrorCode                      int32
	// Names are resource_names (SotW) or resource_names_subscribe (delta).
	Names []string
	// Unsubscribe and InitialVersions are the delta fields.
	Unsubscribe     []string
	InitialVersions map[string]string
	// Node is the node as sent; nil when the request carried none.
	Node *corev3.Node
	// Metadata is the stream's request metadata (":authority" included),
	// shared by the requests of one stream: do not modify.
	Metadata map[string][]string
}

// Response is one response the server sent.
type Response struct {
	Stream                  int64
	Delta                   bool
	TypeURL, Version, Nonce string
	// Names are the names of the resources sent (SotW: as the Any type URL
	// says nothing of the name, only delta responses fill this).
	Names   []string
	Removed []string
}

// Start serves on addr ("127.0.0.1:0") with an ADS-strict cache until ctx
// ends or Stop.
func Start(ctx context.Context, addr string) (*Server, error) {
	return StartWithOptions(ctx, addr, Options{ADS: true})
}

// StartWithOptions serves on addr with the given options until ctx ends or
// Stop.
func StartWithOptions(ctx context.Context, addr string, o Options) (*Server, error) {
	s := &Server{
		Cache:   cachev3.NewSnapshotCache(o.ADS, cachev3.IDHash{}, nil),
		ctx:     ctx,
		opts:    o,
		streams: map[int64]*recorder{},
		changed: make(chan struct{}),
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("xdstest: %w", err)
	}
	s.addr = lis.Addr().String()
	s.mu.Lock()
	s.serveLocked(lis)
	s.mu.Unlock()
	context.AfterFunc(ctx, s.Stop)
	return s, nil
}

// Addr is the address served, "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Stop stops serving: open streams end and connections close. The cache
// and the recorded requests are kept. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	gs, cancel, served := s.gs, s.cancel, s.served
	s.gs = nil
	s.mu.Unlock()
	if gs == nil {
		return
	}
	cancel()
	gs.Stop()
	<-served
}

// Restart serves again on the same address with the same cache.
func (s *Server) Restart() error {
	if s.ctx.Err() != nil {
		return errors.New("xdstest: restart after the server's context ended")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gs != nil {
		return errors.New("xdstest: restart of a running server")
	}
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("xdstest: %w", err)
	}
	s.serveLocked(lis)
	return nil
}

func (s *Server) serveLocked(lis net.Listener) {
	ctx, cancel := context.WithCancel(s.ctx)
	var opts []grpc.ServerOption
	if s.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.opts.TLS)))
	}
	gs := grpc.NewServer(opts...)
	register(gs, &handlers{
		s:     s,
		sotw:  sotwv3.NewServer(ctx, s.Cache, nil),
		delta: deltav3.NewServer(ctx, s.Cache, nil),
	})
	served := make(chan struct{})
	s.gs, s.cancel, s.served = gs, cancel, served
	go func() {
		defer close(served)
		_ = gs.Serve(lis) // returns when Stop is called
	}()
}

// Set builds a snapshot with version for every type of res (keyed by type
// URL) and makes it the snapshot of nodeID.
func (s *Server) Set(nodeID, version string, res map[string][]types.Resource) error {
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return fmt.Errorf("xdstest: %w", err)
	}
	if err := s.Cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		return fmt.Errorf("xdstest: %w", err)
	}
	return nil
}

// SetResponseHook installs f, called with a copy of every response
// (*DiscoveryResponse or *DeltaDiscoveryResponse) before it is sent; f may
// modify it. nil removes the hook. For tests of what go-control-plane
// cannot produce (duplicate names, foreign type URLs).
func (s *Server) SetResponseHook(f func(proto.Message)) {
	s.mu.Lock()
	s.hook = f
	s.mu.Unlock()
}

// Inject sends resp (*DiscoveryResponse or *DeltaDiscoveryResponse) on
// every open stream of that kind, as if the server had sent it. It returns
// the number of streams it was sent on.
func (s *Server) Inject(resp proto.Message) (int, error) {
	s.mu.Lock()
	var rs []*recorder
	for _, r := range s.streams {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	n := 0
	for _, r := range rs {
		ok, err := r.inject(resp)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// Requests returns every request recorded so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Responses returns every response sent so far, in order.
func (s *Server) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.resps...)
}

// WaitFor blocks until a recorded request, past or future, matches pred,
// and returns the first one that does.
func (s *Server) WaitFor(ctx context.Context, pred func(Request) bool) (Request, error) {
	seen := 0
	for {
		s.mu.Lock()
		reqs := s.requests[seen:]
		ch := s.changed
		s.mu.Unlock()
		for _, r := range reqs {
			if pred(r) {
				return r, nil
			}
		}
		seen += len(reqs)
		select {
		case <-ctx.Done():
			return Request{}, fmt.Errorf("xdstest: waiting for a request: %w", ctx.Err())
		case <-ch:
		}
	}
}
