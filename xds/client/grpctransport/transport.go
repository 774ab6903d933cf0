// Package grpctransport implements client.Transport over gRPC. It is the
// only non-test package of hop that imports google.golang.org/grpc.
//
// One Transport is one lazily connected gRPC channel. Streams are generic
// bidirectional streams (no generated stubs), so one Transport serves every
// discovery method. FromConfigSource builds the Transport of a bootstrap
// ApiConfigSource the way Envoy reads it.
package grpctransport

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/xds/client"
)

// dialOptions are the knobs FromConfigSource sets beyond Dial's arguments.
type dialOptions struct {
	tls       *tls.Config
	authority string
	md        map[string]string
	maxRecv   int // bytes; 0 = unlimited, as Envoy's default
	// exactSNI sends tls.ServerName as SNI even when it is empty (no SNI,
	// as Envoy without UpstreamTlsContext.sni) instead of the authority.
	exactSNI bool
}

// Dial returns a Transport to target ("host:port", or any gRPC target such
// as "unix:///path"). tlsConf nil means plaintext; authority "" means the
// target's; md is sent as metadata on each stream (initial_metadata). The
// connection is made lazily: errors surface from NewStream and Recv.
func Dial(target string, tlsConf *tls.Config, authority string, md map[string]string) (client.Transport, error) {
	return dial(target, dialOptions{tls: tlsConf, authority: authority, md: md})
}

func dial(target string, o dialOptions) (client.Transport, error) {
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = sniCreds{TransportCredentials: credentials.NewTLS(o.tls), serverName: o.tls.ServerName,
			fixed: o.tls.ServerName != "" || o.exactSNI}
	}
	maxRecv := o.maxRecv
	if maxRecv <= 0 {
		maxRecv = math.MaxInt32
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// The channel's reconnect backoff bounds how soon a refused
		// connection is retried; the xDS client's own backoff decides when
		// streams are re-opened. Both follow Envoy's xDS retry, 500ms up
		// to 30s.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  500 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   30 * time.Second,
			},
			MinConnectTimeout: 20 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecv)),
	}
	if o.authority != "" {
		opts = append(opts, grpc.WithAuthority(o.authority))
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpctransport: target %q: %w", target, err)
	}
	var kv []string
	for k, v := range o.md {
		kv = append(kv, k, v)
	}
	return &transport{cc: cc, md: kv}, nil
}

// transport is a client.Transport over one ClientConn. Immutable.
type transport struct {
	cc *grpc.ClientConn
	md []string // key, value, key, value ...
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// NewStream opens a bidirectional stream of method. The stream ends when
// ctx is cancelled.
func (t *transport) NewStream(ctx context.Context, method string) (client.Stream, error) {
	if len(t.md) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, t.md...)
	}
	cs, err := t.cc.NewStream(ctx, streamDesc, method)
	if err != nil {
		return nil, fmt.Errorf("grpctransport: %w", err)
	}
	return stream{cs}, nil
}

// Close closes the channel and every stream on it.
func (t *transport) Close() error { return t.cc.Close() }

// stream adapts grpc.ClientStream to client.Stream.
type stream struct{ cs grpc.ClientStream }

func (s stream) Send(m proto.Message) error { return s.cs.SendMsg(m) }
func (s stream) Recv(m proto.Message) error { return s.cs.RecvMsg(m) }
func (s stream) CloseSend() error           { return s.cs.CloseSend() }

// sniCreds makes the TLS server name (SNI, Envoy's UpstreamTlsContext.sni)
// independent of the :authority (EnvoyGrpc.authority, by default the
// cluster name). gRPC takes the server name from the authority, and refuses
// a channel whose credentials report a ServerName other than its authority;
// so Info hides the name and ClientHandshake puts it back.
type sniCreds struct {
	credentials.TransportCredentials
	serverName string
	fixed      bool // use serverName (even "") rather than the authority
}

func (c sniCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.fixed {
		authority = c.serverName
	}
	return c.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

func (c sniCreds) Info() credentials.ProtocolInfo {
	i := c.TransportCredentials.Info()
	i.ServerName = "" // deprecated, but it is what gRPC compares
	return i
}

func (c sniCreds) Clone() credentials.TransportCredentials {
	return sniCreds{TransportCredentials: c.TransportCredentials.Clone(), serverName: c.serverName, fixed: c.fixed}
}
