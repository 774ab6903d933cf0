package router

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// redirectConfig is a compiled RedirectAction, shaped like Envoy's
// Http::Utility::RedirectConfig.
type redirectConfig struct {
	scheme        string // scheme_redirect, or "https" for https_redirect
	host          string
	port          string // ":N" or ""
	path          string // path_redirect
	pathHasQuery  bool
	prefixRewrite string
	stripQuery    bool
	status        int
}

func compileRedirect(ra *routev3.RedirectAction, path string) (*redirectConfig, error) {
	rc := &redirectConfig{
		host:       ra.GetHostRedirect(),
		stripQuery: ra.GetStripQuery(),
	}
	switch s := ra.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_SchemeRedirect:
		rc.scheme = s.SchemeRedirect
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			rc.scheme = "https"
		}
	}
	if p := ra.GetPortRedirect(); p != 0 {
		rc.port = ":" + strconv.FormatUint(uint64(p), 10)
	}
	switch p := ra.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		rc.path = p.PathRedirect
		rc.pathHasQuery = strings.Contains(p.PathRedirect, "?")
	case *routev3.RedirectAction_PrefixRewrite:
		rc.prefixRewrite = p.PrefixRewrite
	}
	switch ra.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		rc.status = http.StatusMovedPermanently
	case routev3.RedirectAction_FOUND:
		rc.status = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		rc.status = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		rc.status = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		rc.status = http.StatusPermanentRedirect
	default:
		return nil, fmt.Errorf("router: %s.response_code: unknown value %d", path, ra.GetResponseCode())
	}
	return rc, nil
}

// RewritePath applies the route's prefix_rewrite to path: the matched
// prefix (or exact path; the whole path for safe_regex and connect_matcher
// routes) is replaced and the query string is kept. path is returned
// unchanged when the route has no prefix_rewrite or path does not start
// with the matched text.
func (r *Route) RewritePath(path string) string {
	return r.rewriteWith(path, r.prefixRewrite)
}

func (r *Route) rewriteWith(path, rewrite string) string {
	if rewrite == "" {
		return path
	}
	matched, ok := r.match.matchedPrefix(path)
	if !ok {
		return path
	}
	return rewrite + path[len(matched):]
}

// Redirect computes the redirect for an ActionRedirect route, following
// Envoy's Http::Utility::newUri. scheme is the request's scheme (as in
// X-Forwarded-Proto: "http" or "https"). It returns the status code and
// the Location value, or (0, "") for a route that is not a redirect.
func (r *Route) Redirect(req *Request, scheme string) (status int, location string) {
	rc := r.redirect
	if rc == nil {
		return 0, ""
	}
	// The router rewrites the path header before building the URI.
	reqPath := r.rewriteWith(req.Path, rc.prefixRewrite)

	finalScheme := scheme
	if rc.scheme != "" {
		finalScheme = rc.scheme
	}
	finalHost := rc.host
	if finalHost == "" {
		finalHost = redirectHost(req.Authority, scheme, finalScheme, rc.port)
	}

	finalPath := reqPath
	if rc.path != "" {
		finalPath = rc.path
		if !rc.pathHasQuery {
			if i := strings.IndexByte(reqPath, '?'); i >= 0 {
				finalPath = rc.path + reqPath[i:]
			}
		}
	}
	if !strings.HasPrefix(finalPath, "/") {
		finalPath = "/" + finalPath
	}
	if !rc.pathHasQuery && rc.stripQuery {
		if i := strings.IndexByte(finalPath, '?'); i >= 0 {
			finalPath = finalPath[:i]
		}
	}
	return rc.status, finalScheme + "://" + finalHost + rc.port + finalPath
}

// redirectHost is Envoy's processRequestHost: the request's port is dropped
// when the redirect sets a port, or when the scheme changes and the port is
// the default one of the request's scheme.
func redirectHost(host, requestScheme, newScheme, newPort string) string {
	if host == "" {
		return host
	}
	var end int
	if host[0] == '[' {
		end = strings.LastIndex(host, "]:")
		if end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndexByte(host, ':')
	}
	if end < 0 {
		return host
	}
	port := host[end:]
	remove := newPort != ""
	if newScheme != requestScheme {
		remove = remove ||
			strings.EqualFold(requestScheme, "https") && port == ":443" ||
			strings.EqualFold(requestScheme, "http") && port == ":80"
	}
	if remove {
		return host[:end]
	}
	return host
}
