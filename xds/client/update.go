package client

import (
	"google.golang.org/protobuf/proto"
)

// Type URLs of the resources hop subscribes to.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// Resource is one resource of a response, unwrapped from
// envoy.service.discovery.v3.Resource when the server wrapped it.
type Resource struct {
	// Name is the resource's name (Listener.name, Cluster.name,
	// RouteConfiguration.name, ClusterLoadAssignment.cluster_name), or the
	// delta Resource.name. Empty only when Err says why it could not be
	// decoded far enough to learn it.
	Name string
	// Version is the per-resource version (delta); empty in SotW.
	Version string
	// Message is the decoded resource; nil when Err is set.
	Message proto.Message
	// Err is a decode error (wrong type URL, bad bytes). The receiver
	// NACKs the response naming the resource.
	Err error
}

// Update is one response for one type, as a Handler sees it.
type Update struct {
	TypeURL string
	// Version is the response's version_info (SotW) or
	// system_version_info (delta).
	Version string
	// Resources are the resources of the response, in response order.
	Resources []Resource
	// Removed lists delta removed_resources. Always nil in SotW.
	Removed []string
	// FullState is true for a SotW response of a type whose responses carry
	// the complete set (listeners and clusters): a previously known name
	// that is absent has been deleted.
	FullState bool
}

// Handler consumes updates. OnUpdate is called on the stream's receive
// goroutine, one call at a time, and the next response is not read until
// it returns (flow control). A nil error ACKs the response; a non-nil
// error NACKs it with err.Error() as error_detail.message. A handler that
// applied part of a response and rejected the rest returns the error: the
// version stays at the last fully accepted one, as Envoy does.
type Handler interface {
	OnUpdate(u Update) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Update) error

// OnUpdate calls f(u).
func (f HandlerFunc) OnUpdate(u Update) error { return f(u) }

// StreamErrorHandler is an optional interface of a Handler. When a Handler
// implements it, OnStreamError is called once for the handler's type each
// time a stream that carries that type fails or cannot be opened (Envoy
// counts these as update_failure). It is not called when Run's context ends.
// It runs on the client's goroutine for that stream, never concurrently with
// OnUpdate of the same handler. The handler keeps its data: a stream failure
// deletes nothing.
type StreamErrorHandler interface {
	OnStreamError(err error)
}
