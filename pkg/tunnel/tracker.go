package tunnel

import (
	"context"
	"net"
	"sync"
)

// Tracker knows every live tunnel so that shutdown can wait for them or cut
// them. The zero value is ready to use.
type Tracker struct {
	mu      sync.Mutex // guards live
	live    map[*Tunnel]struct{}
	wg      sync.WaitGroup
	stopped bool
}

// Tunnel is one live spliced pair, as the tracker sees it.
type Tunnel struct {
	a, b  net.Conn
	group any
	cut   bool // CloseGroup cut it; guarded by Tracker.mu
}

// Go runs Splice(a, b, ...) on a new goroutine owned by the tracker and
// calls done with its result (done may be nil). group tags the tunnel for
// CloseGroup (the listener it was accepted on); nil is no group. If the
// tracker is already shut down, both connections are closed and done gets
// CauseAborted.
func (t *Tracker) Go(group any, a, b net.Conn, aPrelude, bPrelude []byte, opt Options, done func(Result)) {
	tun, ok := t.add(group, a, b)
	if !ok {
		if done != nil {
			done(Result{Cause: CauseAborted})
		}
		return
	}
	go func() {
		res := t.run(tun, aPrelude, bPrelude, opt)
		if done != nil {
			done(res)
		}
	}()
}

// Run is Go on the calling goroutine: it splices until the tunnel ends and
// returns the result. An HTTP/2 stream's handler uses it, because the
// stream lives only as long as its handler runs.
func (t *Tracker) Run(group any, a, b net.Conn, aPrelude, bPrelude []byte, opt Options) Result {
	tun, ok := t.add(group, a, b)
	if !ok {
		return Result{Cause: CauseAborted}
	}
	return t.run(tun, aPrelude, bPrelude, opt)
}

// add registers a tunnel, or aborts both ends when the tracker is shut down.
func (t *Tracker) add(group any, a, b net.Conn) (*Tunnel, bool) {
	tun := &Tunnel{a: a, b: b, group: group}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		Abort(a)
		Abort(b)
		return nil, false
	}
	if t.live == nil {
		t.live = map[*Tunnel]struct{}{}
	}
	t.live[tun] = struct{}{}
	t.wg.Add(1)
	return tun, true
}

func (t *Tracker) run(tun *Tunnel, aPrelude, bPrelude []byte, opt Options) Result {
	defer t.wg.Done()
	res := Splice(tun.a, tun.b, aPrelude, bPrelude, opt)
	t.mu.Lock()
	delete(t.live, tun)
	aborted := t.stopped || tun.cut
	t.mu.Unlock()
	if aborted && res.Cause == CauseError {
		res.Cause = CauseAborted
	}
	return res
}

// Len returns the number of live tunnels.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.live)
}

// CountGroup returns the number of live tunnels tagged group.
func (t *Tracker) CountGroup(group any) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for tun := range t.live {
		if tun.group == group {
			n++
		}
	}
	return n
}

// CloseGroup cuts every live tunnel tagged group (a drained listener's, at
// the end of its drain time) and returns how many it cut. Their done
// callbacks run as the splices end.
func (t *Tracker) CloseGroup(group any) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for tun := range t.live {
		if tun.group == group {
			tun.cut = true
			Abort(tun.a)
			Abort(tun.b)
			n++
		}
	}
	return n
}

// Shutdown stops new tunnels, waits until the live ones end by themselves or
// ctx ends, then closes whatever is left and waits for its goroutines.
func (t *Tracker) Shutdown(ctx context.Context) {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
	idle := make(chan struct{})
	go func() { t.wg.Wait(); close(idle) }()
	select {
	case <-idle:
		return
	case <-ctx.Done():
	}
	t.mu.Lock()
	for tun := range t.live {
		Abort(tun.a)
		Abort(tun.b)
	}
	t.mu.Unlock()
	<-idle
}
