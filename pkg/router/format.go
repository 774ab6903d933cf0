package router

import (
	"net/http"

	subst "github.com/hopproxy/hop/pkg/format"
)

// routerCommands are the substitution commands header values may use in
// route configuration: those a Formatter and the request can answer.
var routerCommands = []string{
	"DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
	"DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
	"DOWNSTREAM_LOCAL_PORT", "PROTOCOL", "REQ",
}

// evalContext is what formatting reads for one Mutate call.
type evalContext struct {
	f       Formatter
	req     *Request    // nil unless the Formatter is a RequestFormatter
	headers http.Header // where %REQ(x)% looks up ordinary headers
}

// env is the pkg/format view of ctx. It holds only values the caller
// already had (interfaces, the request pointer, the header map), so it
// costs no allocation.
func (ctx *evalContext) env() subst.Env {
	e := subst.Env{Header: ctx.headers}
	if ctx.f != nil {
		e.Stream = ctx.f
	}
	if ctx.req != nil {
		e.Pseudo = (*pseudoHeaders)(ctx.req)
	}
	return e
}

// pseudoHeaders answers %REQ(:method)% and friends from a Request.
type pseudoHeaders Request

func (p *pseudoHeaders) PseudoHeader(name string) (string, bool) {
	return newHeaderRef(name).lookup((*Request)(p))
}
