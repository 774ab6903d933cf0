package watch

import (
	"maps"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// entry is one accepted version of a resource.
type entry[T proto.Message] struct {
	msg     T
	version string // version_info of the response that brought it
	updated time.Time
	deps    deps // what it refers to (routes of a listener, endpoints of a cluster)
}

// errState is the last rejected version of a resource, for the config
// dump's error_state.
type errState struct {
	failed  *anypb.Any
	when    time.Time
	details string
}

// table holds one type's resources by name. Listeners and clusters go
// through warming: an accepted version waits in warming until its
// dependencies are there, while active keeps serving the previous one.
// Routes and endpoints have no warming: accepted means active.
type table[T proto.Message] struct {
	typeURL string
	active  map[string]*entry[T]
	warming map[string]*entry[T]
	errs    map[string]*errState
	version string // version_info of the last accepted response

	// Named types (routes, endpoints): what is subscribed, and which
	// names' initial_fetch_timeout passed without the resource arriving.
	wanted   map[string]bool
	timedOut map[string]bool
	lastSeen time.Time // last accepted response, for the dump's last_updated
}

func newTable[T proto.Message](typeURL string) *table[T] {
	return &table[T]{
		typeURL:  typeURL,
		active:   map[string]*entry[T]{},
		warming:  map[string]*entry[T]{},
		errs:     map[string]*errState{},
		wanted:   map[string]bool{},
		timedOut: map[string]bool{},
	}
}

// clone is a shallow copy: entries are immutable, maps are not shared.
func (t *table[T]) clone() *table[T] {
	c := *t
	c.active = maps.Clone(t.active)
	c.warming = maps.Clone(t.warming)
	c.errs = maps.Clone(t.errs)
	c.wanted = maps.Clone(t.wanted)
	c.timedOut = maps.Clone(t.timedOut)
	return &c
}

// latest is the newest accepted version of name: warming, else active.
func (t *table[T]) latest(name string) *entry[T] {
	if e := t.warming[name]; e != nil {
		return e
	}
	return t.active[name]
}

// names lists every name with an accepted version.
func (t *table[T]) names() map[string]bool {
	out := map[string]bool{}
	for n := range t.active {
		out[n] = true
	}
	for n := range t.warming {
		out[n] = true
	}
	return out
}

func (t *table[T]) remove(name string) bool {
	_, a := t.active[name]
	_, w := t.warming[name]
	delete(t.active, name)
	delete(t.warming, name)
	delete(t.errs, name)
	return a || w
}

func (t *table[T]) setError(name string, m proto.Message, err error, now time.Time) {
	es := &errState{when: now, details: err.Error()}
	if m != nil {
		es.failed, _ = anypb.New(m)
	}
	t.errs[name] = es
}
