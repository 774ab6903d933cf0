package xdstest

import (
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

type (
	sotwStream  = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	deltaStream = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
)

// handlers routes every discovery method of one serving period to
// go-control-plane's sotw and delta servers, through a recorder.
type handlers struct {
	s     *Server
	sotw  sotwv3.Server
	delta deltav3.Server
}

func (h *handlers) streamSotW(st sotwStream, typeURL string) error {
	r := h.s.open(&recorder{method: methodOf(st), md: metadataOf(st), sotw: st})
	defer h.s.close(r)
	return h.sotw.StreamHandler(&sotwRecorder{sotwStream: st, r: r}, typeURL)
}

func (h *handlers) streamDelta(st deltaStream, typeURL string) error {
	r := h.s.open(&recorder{method: methodOf(st), md: metadataOf(st), isDelta: true, delta: st})
	defer h.s.close(r)
	return h.delta.DeltaStreamHandler(&deltaRecorder{deltaStream: st, r: r}, typeURL)
}

func register(gs *grpc.Server, h *handlers) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, ads{h: h})
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, lds{h: h})
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, cds{h: h})
	routeservice.RegisterRouteDiscoveryServiceServer(gs, rds{h: h})
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, eds{h: h})
}

type ads struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	h *handlers
}

func (a ads) StreamAggregatedResources(st sotwStream) error {
	return a.h.streamSotW(st, resourcev3.AnyType)
}
func (a ads) DeltaAggregatedResources(st deltaStream) error {
	return a.h.streamDelta(st, resourcev3.AnyType)
}

type lds struct {
	listenerservice.UnimplementedListenerDiscoveryServiceServer
	h *handlers
}

func (x lds) StreamListeners(st sotwStream) error { return x.h.streamSotW(st, resourcev3.ListenerType) }
func (x lds) DeltaListeners(st deltaStream) error {
	return x.h.streamDelta(st, resourcev3.ListenerType)
}

type cds struct {
	clusterservice.UnimplementedClusterDiscoveryServiceServer
	h *handlers
}

func (x cds) StreamClusters(st sotwStream) error { return x.h.streamSotW(st, resourcev3.ClusterType) }
func (x cds) DeltaClusters(st deltaStream) error { return x.h.streamDelta(st, resourcev3.ClusterType) }

type rds struct {
	routeservice.UnimplementedRouteDiscoveryServiceServer
	h *handlers
}

func (x rds) StreamRoutes(st sotwStream) error { return x.h.streamSotW(st, resourcev3.RouteType) }
func (x rds) DeltaRoutes(st deltaStream) error { return x.h.streamDelta(st, resourcev3.RouteType) }

type eds struct {
	endpointservice.UnimplementedEndpointDiscoveryServiceServer
	h *handlers
}

func (x eds) StreamEndpoints(st sotwStream) error { return x.h.streamSotW(st, resourcev3.EndpointType) }
func (x eds) DeltaEndpoints(st deltaStream) error {
	return x.h.streamDelta(st, resourcev3.EndpointType)
}

// recorder is one open stream: it records what crosses it and serialises
// sends so that Inject can send alongside the server.
type recorder struct {
	md      map[string][]string // the stream's metadata
	s       *Server
	id      int64
	method  string
	isDelta bool
	sotw    sotwStream  // set for SotW streams
	delta   deltaStream // set for delta streams
	sendMu  sync.Mutex  // serialises Send on the stream
}

// open registers a stream; r's fields other than s and id are set by the
// caller and immutable from here on.
func (s *Server) open(r *recorder) *recorder {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	r.s, r.id = s, s.nextID
	s.streams[r.id] = r
	return r
}

func (s *Server) close(r *recorder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, r.id)
}

func (s *Server) recordRequest(q Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, q)
	close(s.changed)
	s.changed = make(chan struct{})
}

// prepare applies the response hook to a copy of m and records the result.
func (s *Server) prepare(id int64, m proto.Message) proto.Message {
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		m = proto.Clone(m)
		hook(m)
	}
	rec := Response{Stream: id}
	switch v := m.(type) {
	case *discoveryv3.DiscoveryResponse:
		rec.TypeURL, rec.Version, rec.Nonce = v.GetTypeUrl(), v.GetVersionInfo(), v.GetNonce()
	case *discoveryv3.DeltaDiscoveryResponse:
		rec.Delta = true
		rec.TypeURL, rec.Version, rec.Nonce = v.GetTypeUrl(), v.GetSystemVersionInfo(), v.GetNonce()
		for _, r := range v.GetResources() {
			rec.Names = append(rec.Names, r.GetName())
		}
		rec.Removed = v.GetRemovedResources()
	}
	s.mu.Lock()
	s.resps = append(s.resps, rec)
	s.mu.Unlock()
	return m
}

func (r *recorder) inject(m proto.Message) (bool, error) {
	switch v := m.(type) {
	case *discoveryv3.DiscoveryResponse:
		if r.isDelta {
			return false, nil
		}
		return true, r.sendSotW(v)
	case *discoveryv3.DeltaDiscoveryResponse:
		if !r.isDelta {
			return false, nil
		}
		return true, r.sendDelta(v)
	}
	return false, nil
}

func (r *recorder) sendSotW(m *discoveryv3.DiscoveryResponse) error {
	out := r.s.prepare(r.id, m).(*discoveryv3.DiscoveryResponse)
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.sotw.Send(out)
}

func (r *recorder) sendDelta(m *discoveryv3.DeltaDiscoveryResponse) error {
	out := r.s.prepare(r.id, m).(*discoveryv3.DeltaDiscoveryResponse)
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.delta.Send(out)
}

// sotwRecorder is the stream go-control-plane's SotW server sees.
type sotwRecorder struct {
	sotwStream
	r *recorder
}

func (w *sotwRecorder) Send(m *discoveryv3.DiscoveryResponse) error { return w.r.sendSotW(m) }

func (w *sotwRecorder) Recv() (*discoveryv3.DiscoveryRequest, error) {
	q, err := w.sotwStream.Recv()
	if err == nil {
		// Copied before the server fills in the node or the type URL.
		w.r.s.recordRequest(Request{
			Stream: w.r.id, Method: w.r.method,
			TypeURL: q.GetTypeUrl(), Version: q.GetVersionInfo(), Nonce: q.GetResponseNonce(),
			Error: q.GetErrorDetail().GetMessage(), ErrorCode: q.GetErrorDetail().GetCode(),
			Names: append([]string(nil), q.GetResourceNames()...),
			Node:  cloneNode(q), Metadata: w.r.md,
		})
	}
	return q, err
}

// deltaRecorder is the stream go-control-plane's delta server sees.
type deltaRecorder struct {
	deltaStream
	r *recorder
}

func (w *deltaRecorder) Send(m *discoveryv3.DeltaDiscoveryResponse) error { return w.r.sendDelta(m) }

func (w *deltaRecorder) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	q, err := w.deltaStream.Recv()
	if err == nil {
		var iv map[string]string
		if len(q.GetInitialResourceVersions()) > 0 {
			iv = make(map[string]string, len(q.GetInitialResourceVersions()))
			for k, v := range q.GetInitialResourceVersions() {
				iv[k] = v
			}
		}
		w.r.s.recordRequest(Request{
			Stream: w.r.id, Method: w.r.method, Delta: true,
			TypeURL: q.GetTypeUrl(), Nonce: q.GetResponseNonce(),
			Error: q.GetErrorDetail().GetMessage(), ErrorCode: q.GetErrorDetail().GetCode(),
			Names:           append([]string(nil), q.GetResourceNamesSubscribe()...),
			Unsubscribe:     append([]string(nil), q.GetResourceNamesUnsubscribe()...),
			InitialVersions: iv,
			Node:            cloneNode(q),
			Metadata:        w.r.md,
		})
	}
	return q, err
}

func cloneNode(q interface{ GetNode() *corev3.Node }) *corev3.Node {
	if q.GetNode() == nil {
		return nil
	}
	return proto.Clone(q.GetNode()).(*corev3.Node)
}

func methodOf(st grpc.ServerStream) string {
	m, _ := grpc.Method(st.Context())
	return m
}

func metadataOf(st grpc.ServerStream) map[string][]string {
	md, _ := metadata.FromIncomingContext(st.Context())
	return md.Copy()
}
