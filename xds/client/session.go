package client

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// wildcardName is the explicit wildcard subscription.
const wildcardName = "*"

// codeInternal is google.rpc.Code INTERNAL, the error_detail code Envoy
// puts in a NACK (grpc_mux_impl.cc).
const codeInternal = 13

// loop keeps one stream (ADS, or the stream of type only) open across
// reconnects. Its fields are owned by the runLoop goroutine; limiter and
// nacks are used by the sender of the current stream, nackLog by its
// receiver. Streams of one loop never overlap, so there is one user at a
// time.
type loop struct {
	c       *Client
	only    string // "" for ADS
	method  string
	limiter *bucket // Envoy's rate_limit_settings bucket; nil when unset
	nacks   map[string]*nackGate
	nackLog map[string]*nackLog
}

// ackEvent is a processed response, passed from the receiver to the sender:
// the sender answers it with an ACK (err == "") or a NACK.
type ackEvent struct {
	url   string
	nonce string
	err   string
}

// streamType is the state of one type on one stream. Owned by the sender.
type streamType struct {
	sent       bool   // a request for the type went out on this stream
	nonce      string // latest response nonce received for the type
	ackPending bool   // the response with nonce awaits an ACK or NACK
	ackErr     string // NACK text for the pending answer; "" = ACK
	// What the server was last told the subscription is.
	sentWildcard bool
	sentNames    []string // sorted
}

// commit returns the function that records a request for v as sent: it
// answered the pending response, and told the server v's subscription.
func (pt *streamType) commit(v view) func() {
	return func() {
		pt.sent = true
		pt.ackPending, pt.ackErr = false, ""
		pt.sentWildcard, pt.sentNames = v.wildcard, v.names
	}
}

// view is a copy of a typeState taken under Client.mu for building requests.
type view struct {
	url      string
	wildcard bool
	names    []string // sorted; shared with typeState, never modified
	version  string
	resVers  map[string]string // delta only
}

// runStream opens a stream, runs it until it fails or ctx ends, and reports
// whether any response was received on it.
func (l *loop) runStream(ctx context.Context) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := l.c.o.Transport.NewStream(sctx, l.method)
	if err != nil {
		return false, errorf("opening %s: %w", l.method, err)
	}
	l.c.streamOpened()
	defer l.c.streamClosed()
	l.c.log.Info("xds stream opened", "method", l.method)

	s := &sender{l: l, st: st, per: map[string]*streamType{}}
	r := &receiver{l: l, st: st}
	events := make(chan ackEvent)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { recvErr <- r.run(sctx, events) })

	err = s.run(sctx, events, recvErr)
	cancel()
	wg.Wait()
	s.setPending(0)
	return r.received.Load(), err
}

// sender is the goroutine that writes every request of one stream.
type sender struct {
	l        *loop
	st       Stream
	per      map[string]*streamType
	nodeSent bool
	pending  int // requests held back by rate limits, as counted in the gauge
}

// receiver is the goroutine that reads responses of one stream and calls
// the handlers.
type receiver struct {
	l        *loop
	st       Stream
	received atomic.Bool // a response was received
}

// run sends what the subscriptions and received responses call for until
// the stream fails.
func (s *sender) run(ctx context.Context, events <-chan ackEvent, recvErr <-chan error) error {
	wake := s.l.c.adsWake
	if s.l.only != "" {
		s.l.c.mu.Lock()
		wake = s.l.c.types[s.l.only].wake
		s.l.c.mu.Unlock()
	}
	// Since Go 1.23 a stopped timer never delivers a stale tick, so Stop
	// then Reset needs no draining.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		retry, err := s.flush(time.Now())
		if err != nil {
			return err
		}
		timer.Stop()
		if retry > 0 {
			timer.Reset(retry)
		}
		select {
		case <-ctx.Done():
			_ = s.st.CloseSend() // polite half-close; the stream is cancelled next
			return ctx.Err()
		case err := <-recvErr:
			return err
		case ev := <-events:
			pt := s.typeOn(ev.url)
			pt.nonce, pt.ackPending, pt.ackErr = ev.nonce, true, ev.err
		case <-wake:
		case <-timer.C:
		}
	}
}

func (s *sender) typeOn(url string) *streamType {
	pt, ok := s.per[url]
	if !ok {
		pt = &streamType{}
		s.per[url] = pt
	}
	return pt
}

// flush sends every request that is due and allowed by the rate limits. It
// returns how long to wait before trying again for the held-back ones (0 if
// none).
func (s *sender) flush(now time.Time) (time.Duration, error) {
	views := s.views()
	var retry time.Duration
	held := 0
	hold := func(d time.Duration) {
		held++
		if retry == 0 || d < retry {
			retry = d
		}
	}
	for _, v := range views {
		pt := s.typeOn(v.url)
		var msg proto.Message
		var commit func()
		if s.l.c.o.Delta {
			msg, commit = s.buildDelta(pt, v)
		} else {
			msg, commit = s.buildSotW(pt, v)
		}
		if msg == nil {
			continue
		}
		nack := pt.ackPending && pt.ackErr != ""
		gate := s.l.nacks[v.url]
		if gate == nil {
			gate = &nackGate{}
			s.l.nacks[v.url] = gate
		}
		if nack {
			if d := gate.wait(pt.ackErr, now); d > 0 {
				hold(d)
				continue
			}
		}
		if s.l.limiter != nil {
			if d := s.l.limiter.wait(now); d > 0 {
				s.l.c.m.incRateLimited()
				hold(d)
				continue
			}
			s.l.limiter.take(now)
		}
		switch {
		case nack:
			gate.sentNACK(now)
		case pt.ackPending:
			gate.sentACK()
		}
		if err := s.st.Send(msg); err != nil {
			s.setPending(held)
			return 0, errorf("sending %s request: %w", v.url, err)
		}
		commit()
		s.nodeSent = true
	}
	s.setPending(held)
	return retry, nil
}

// setPending updates the pending_requests gauge with this stream's count.
func (s *sender) setPending(n int) {
	s.l.c.m.addPending(int64(n - s.pending))
	s.pending = n
}

// views copies the state of the types this stream carries, in the order
// they were first watched.
func (s *sender) views() []view {
	c := s.l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []view
	for _, u := range c.order {
		if s.l.only != "" && u != s.l.only {
			continue
		}
		ts := c.types[u]
		v := view{url: u, wildcard: ts.wildcard, names: ts.sorted, version: ts.version}
		if pt := s.per[u]; c.o.Delta && (pt == nil || !pt.sent) {
			// Only the first request of a stream needs them.
			v.resVers = maps.Clone(ts.resVers)
		}
		out = append(out, v)
	}
	return out
}

// node reports whether the next request carries the node: the first
// request of the stream always does, later ones unless
// SetNodeOnFirstMessageOnly.
func (s *sender) node() bool {
	return !s.nodeSent || !s.l.c.o.SetNodeOnFirstMessageOnly
}

func nackDetail(pt *streamType) *status.Status {
	if !pt.ackPending || pt.ackErr == "" {
		return nil
	}
	return &status.Status{Code: codeInternal, Message: pt.ackErr}
}

// buildSotW returns the DiscoveryRequest due for v, or nil, and a commit
// function to call once it was sent.
func (s *sender) buildSotW(pt *streamType, v view) (proto.Message, func()) {
	interest := v.wildcard || len(v.names) > 0
	if !pt.sent && !interest {
		// An empty first request would be a legacy wildcard subscription.
		// Nothing to ask for (and nothing to ACK that we asked for).
		pt.ackPending = false
		return nil, nil
	}
	changed := !pt.sent || pt.sentWildcard != v.wildcard || !slices.Equal(pt.sentNames, v.names)
	if !changed && !pt.ackPending {
		return nil, nil
	}
	var names []string
	if v.wildcard && (len(v.names) > 0 || s.l.c.o.ExplicitWildcard) {
		names = append(names, wildcardName)
	}
	names = append(names, v.names...)
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   v.version,
		ResourceNames: names,
		TypeUrl:       v.url,
		ResponseNonce: pt.nonce,
		ErrorDetail:   nackDetail(pt),
	}
	if s.node() {
		req.Node = s.l.c.o.Node
	}
	return req, pt.commit(v)
}

// buildDelta returns the DeltaDiscoveryRequest due for v, or nil, and a
// commit function to call once it was sent.
func (s *sender) buildDelta(pt *streamType, v view) (proto.Message, func()) {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: v.url}
	if !pt.sent {
		if !v.wildcard && len(v.names) == 0 {
			pt.ackPending = false
			return nil, nil
		}
		// The first request states the whole interest. A wildcard-only
		// subscription is Envoy's legacy form: an empty subscribe list.
		if v.wildcard && (len(v.names) > 0 || s.l.c.o.ExplicitWildcard) {
			req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, wildcardName)
		}
		req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, v.names...)
		if len(v.resVers) > 0 {
			req.InitialResourceVersions = v.resVers
		}
	} else {
		if v.wildcard && !pt.sentWildcard {
			req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, wildcardName)
		}
		if !v.wildcard && pt.sentWildcard {
			req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, wildcardName)
		}
		for _, n := range v.names {
			if _, found := slices.BinarySearch(pt.sentNames, n); !found {
				req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
			}
		}
		for _, n := range pt.sentNames {
			if _, found := slices.BinarySearch(v.names, n); !found {
				req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
			}
		}
		if len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 && !pt.ackPending {
			return nil, nil
		}
	}
	if pt.ackPending {
		// Only an ACK or NACK carries a nonce in delta.
		req.ResponseNonce = pt.nonce
		req.ErrorDetail = nackDetail(pt)
	}
	if s.node() {
		req.Node = s.l.c.o.Node
	}
	return req, pt.commit(v)
}
