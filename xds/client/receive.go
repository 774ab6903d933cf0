package client

import (
	"context"
	"errors"
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

func errorf(format string, args ...any) error {
	return fmt.Errorf("xds: "+format, args...)
}

// run reads responses until the stream fails or ctx ends. Each response is
// decoded and handed to its type's handler, and the verdict goes to the
// sender. The next response is not read before the handler returned.
func (r *receiver) run(ctx context.Context, events chan<- ackEvent) error {
	for {
		var (
			ev  ackEvent
			ok  bool
			err error
		)
		if r.l.c.o.Delta {
			resp := &discoveryv3.DeltaDiscoveryResponse{}
			if err = r.st.Recv(resp); err == nil {
				r.received.Store(true)
				ev, ok = r.handleDelta(resp)
			}
		} else {
			resp := &discoveryv3.DiscoveryResponse{}
			if err = r.st.Recv(resp); err == nil {
				r.received.Store(true)
				ev, ok = r.handleSotW(resp)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errorf("receiving on %s: %w", r.l.method, err)
		}
		if !ok {
			continue
		}
		select {
		case events <- ev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// subscription is a copy of what a handler needs from its typeState.
type subscription struct {
	handler  Handler
	wildcard bool
	names    map[string]struct{} // never mutated: Watch replaces the map
}

// lookup returns a response's type (the stream's own when the response
// names none) and its subscription, or false when the type is not watched
// (X-ACK-9: such responses are neither ACKed nor NACKed).
func (r *receiver) lookup(url string) (string, subscription, bool) {
	if url == "" {
		url = r.l.only
	}
	if r.l.only != "" && url != r.l.only {
		r.l.c.log.Warn("ignoring response of another type", "type", url, "stream_type", r.l.only)
		return url, subscription{}, false
	}
	c := r.l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ok := c.types[url]
	if !ok || ts.handler == nil {
		c.log.Warn("ignoring response of an unwatched type", "type", url)
		return url, subscription{}, false
	}
	return url, subscription{handler: ts.handler, wildcard: ts.wildcard, names: ts.names}, true
}

// keep filters res in place down to the resources wanted.
func (s subscription) keep(res []Resource) []Resource {
	kept := res[:0]
	for _, x := range res {
		if s.wanted(x.Name) {
			kept = append(kept, x)
		}
	}
	return kept
}

// wanted reports whether a resource of the response is for this
// subscription: everything for wildcard, the subscribed names otherwise
// (X-SUB-4: resources that were not asked for are ignored). Resources
// whose name could not be decoded are kept so that their error NACKs.
func (s subscription) wanted(name string) bool {
	if s.wildcard || name == "" {
		return true
	}
	_, ok := s.names[name]
	return ok
}

func (r *receiver) handleSotW(resp *discoveryv3.DiscoveryResponse) (ackEvent, bool) {
	url, sub, ok := r.lookup(resp.GetTypeUrl())
	if !ok {
		return ackEvent{}, false
	}
	ev := ackEvent{url: url, nonce: resp.GetNonce()}
	res, heartbeats, err := decodeSotW(url, resp.GetResources())
	if err == nil {
		res = sub.keep(res)
		if heartbeats > 0 && len(res) == 0 {
			// Only TTL heartbeats: the resources are unchanged.
			r.accept(url, resp.GetVersionInfo(), nil, nil)
			return ev, true
		}
		u := Update{
			TypeURL:   url,
			Version:   resp.GetVersionInfo(),
			Resources: res,
			// A response that also carries heartbeats does not list the
			// resources they refresh, so it cannot be the full state.
			FullState: heartbeats == 0 && (url == ListenerType || url == ClusterType),
		}
		err = sub.handler.OnUpdate(u)
	}
	if err != nil {
		ev.err = err.Error()
		r.logNACK(url, resp.GetVersionInfo(), ev.err)
		return ev, true
	}
	r.accept(url, resp.GetVersionInfo(), nil, nil)
	return ev, true
}

func (r *receiver) handleDelta(resp *discoveryv3.DeltaDiscoveryResponse) (ackEvent, bool) {
	url, sub, ok := r.lookup(resp.GetTypeUrl())
	if !ok {
		return ackEvent{}, false
	}
	ev := ackEvent{url: url, nonce: resp.GetNonce()}
	res, err := decodeDelta(url, resp.GetResources(), resp.GetRemovedResources(), r.heldVersion(url))
	var removed []string
	if err == nil {
		res = sub.keep(res)
		for _, n := range resp.GetRemovedResources() {
			if sub.wanted(n) {
				removed = append(removed, n)
			}
		}
		if len(res) > 0 || len(removed) > 0 || len(resp.GetResources()) == 0 {
			err = sub.handler.OnUpdate(Update{
				TypeURL:   url,
				Version:   resp.GetSystemVersionInfo(),
				Resources: res,
				Removed:   removed,
			})
		}
	}
	if err != nil {
		ev.err = err.Error()
		r.logNACK(url, resp.GetSystemVersionInfo(), ev.err)
		return ev, true
	}
	r.accept(url, resp.GetSystemVersionInfo(), res, removed)
	return ev, true
}

// heldVersion returns a lookup of the accepted version of a resource of
// type url, used to recognise delta heartbeats.
func (r *receiver) heldVersion(url string) func(name string) (string, bool) {
	c := r.l.c
	return func(name string) (string, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		v, ok := c.types[url].resVers[name]
		return v, ok
	}
}

// accept records an accepted response: its version and, for delta, the
// versions of the resources it added or removed.
func (r *receiver) accept(url, version string, res []Resource, removed []string) {
	if log := r.l.nackLog[url]; log != nil {
		log.ack()
	}
	c := r.l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[url]
	ts.version = version
	for _, x := range res {
		if x.Err == nil && x.Name != "" {
			ts.resVers[x.Name] = x.Version
		}
	}
	for _, n := range removed {
		delete(ts.resVers, n)
	}
}

// logNACK logs a rejected response, once per run of identical errors and
// then every nackLogEvery-th time.
func (r *receiver) logNACK(url, version, msg string) {
	nl := r.l.nackLog[url]
	if nl == nil {
		nl = &nackLog{}
		r.l.nackLog[url] = nl
	}
	if show, n := nl.note(msg); show {
		if n == 1 {
			r.l.c.log.Warn("xds response rejected", "type", url, "version", version, "error", msg)
		} else {
			r.l.c.log.Warn("xds response rejected again", "type", url, "version", version, "error", msg, "repeated", n)
		}
	}
}

// errDuplicate marks a response that names one resource twice (X-ACK-6).
var errDuplicate = errors.New("xds: duplicate resource name")
