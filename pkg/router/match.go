package router

import (
	"fmt"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
	pathConnect
)

// routeMatch is a compiled RouteMatch.
type routeMatch struct {
	kind    pathKind
	value   string // prefix, path or path_separated_prefix
	fold    bool   // case_sensitive: false
	re      *regexp.Regexp
	headers []headerMatcher
	queries []queryMatcher
}

func compileRouteMatch(m *routev3.RouteMatch, path string) (routeMatch, error) {
	rm := routeMatch{fold: m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = pathExact, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = pathSeparatedPrefix, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex, path+".safe_regex")
		if err != nil {
			return rm, err
		}
		rm.kind, rm.re = pathRegex, re
	case *routev3.RouteMatch_ConnectMatcher_:
		rm.kind = pathConnect
	default:
		return rm, fmt.Errorf("router: %s: no path specifier", path)
	}
	for i, hm := range m.GetHeaders() {
		h, err := compileHeaderMatcher(hm, fmt.Sprintf("%s.headers[%d]", path, i))
		if err != nil {
			return rm, err
		}
		rm.headers = append(rm.headers, h)
	}
	for i, qm := range m.GetQueryParameters() {
		q := queryMatcher{name: qm.GetName()}
		if sm, ok := qm.GetQueryParameterMatchSpecifier().(*routev3.QueryParameterMatcher_StringMatch); ok {
			s, err := compileStringMatcher(sm.StringMatch, fmt.Sprintf("%s.query_parameters[%d].string_match", path, i))
			if err != nil {
				return rm, err
			}
			q.str = &s
		}
		rm.queries = append(rm.queries, q)
	}
	return rm, nil
}

// matches reports whether req matches; path is req.Path without its query
// and fragment.
func (m *routeMatch) matches(req *Request, path string) bool {
	if m.kind == pathConnect {
		if !req.IsConnect {
			return false
		}
	} else if req.Path == "" || !m.matchPath(path) {
		// A request without a path only matches connect_matcher routes.
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(req) {
			return false
		}
	}
	if len(m.queries) > 0 {
		query := rawQuery(req.Path)
		for i := range m.queries {
			if !m.queries[i].matches(query) {
				return false
			}
		}
	}
	return true
}

func (m *routeMatch) matchPath(path string) bool {
	switch m.kind {
	case pathPrefix:
		return hasPrefix(path, m.value, m.fold)
	case pathExact:
		if m.fold {
			return equalFoldASCII(path, m.value)
		}
		return path == m.value
	case pathSeparatedPrefix:
		n := len(m.value)
		return hasPrefix(path, m.value, m.fold) && (len(path) == n || path[n] == '/')
	case pathRegex:
		return m.re.MatchString(path)
	}
	return false
}

// matchedPrefix returns the part of path that prefix_rewrite replaces, and
// false when path does not start with the route's matched text.
func (m *routeMatch) matchedPrefix(path string) (string, bool) {
	switch m.kind {
	case pathPrefix, pathExact, pathSeparatedPrefix:
		if !hasPrefix(path, m.value, m.fold) {
			return "", false
		}
		return path[:len(m.value)], true
	default:
		// safe_regex and connect_matcher: the whole path without query.
		return pathOnly(path), true
	}
}

// compileRegex compiles a RegexMatcher for a whole-string match, as RE2's
// FullMatch does in Envoy.
func compileRegex(rm *matcherv3.RegexMatcher, path string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + rm.GetRegex() + `)$`)
	if err != nil {
		return nil, fmt.Errorf("router: %s.regex: invalid regex %q: %w", path, rm.GetRegex(), err)
	}
	return re, nil
}

// headerSource says where a header matcher or %REQ()% reads its value.
type headerSource uint8

const (
	srcHeader headerSource = iota
	srcMethod
	srcAuthority
	srcPath
	srcScheme
)

// headerRef names a request header: a pseudo-header mapped to a Request
// field, or a key of Request.Header in canonical form.
type headerRef struct {
	src headerSource
	key string
}

func newHeaderRef(name string) headerRef {
	switch toLowerASCII(name) {
	case ":method":
		return headerRef{src: srcMethod}
	case ":authority":
		return headerRef{src: srcAuthority}
	case ":path":
		return headerRef{src: srcPath}
	case ":scheme":
		return headerRef{src: srcScheme}
	}
	return headerRef{src: srcHeader, key: textproto.CanonicalMIMEHeaderKey(name)}
}

// lookup returns the header's value and whether it is present. Several
// values of one header are joined with ",", like Envoy's
// getAllOfHeaderAsString.
func (h headerRef) lookup(req *Request) (string, bool) {
	switch h.src {
	case srcMethod:
		return req.Method, req.Method != ""
	case srcAuthority:
		return req.Authority, req.Authority != ""
	case srcPath:
		return req.Path, req.Path != ""
	case srcScheme:
		return req.Scheme, req.Scheme != ""
	}
	vs := req.Header[h.key]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

type headerKind uint8

const (
	hmExact headerKind = iota
	hmRegex
	hmRange
	hmPresent
	hmPrefix
	hmSuffix
	hmContains
	hmString
)

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	ref          headerRef
	kind         headerKind
	value        string
	re           *regexp.Regexp
	start, end   int64
	present      bool
	str          stringMatcher
	invert       bool
	treatMissing bool
}

func compileHeaderMatcher(hm *routev3.HeaderMatcher, path string) (headerMatcher, error) {
	m := headerMatcher{
		ref:          newHeaderRef(hm.GetName()),
		invert:       hm.GetInvertMatch(),
		treatMissing: hm.GetTreatMissingHeaderAsEmpty(),
	}
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		m.kind, m.value = hmExact, s.ExactMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegex(s.SafeRegexMatch, path+".safe_regex_match")
		if err != nil {
			return m, err
		}
		m.kind, m.re = hmRegex, re
	case *routev3.HeaderMatcher_RangeMatch:
		m.kind, m.start, m.end = hmRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		m.kind, m.present = hmPresent, s.PresentMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		m.kind, m.value = hmPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		m.kind, m.value = hmSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		m.kind, m.value = hmContains, s.ContainsMatch
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileStringMatcher(s.StringMatch, path+".string_match")
		if err != nil {
			return m, err
		}
		m.kind, m.str = hmString, sm
	default:
		// No specifier: Envoy matches on presence.
		m.kind, m.present = hmPresent, true
	}
	return m, nil
}

func (m *headerMatcher) matches(req *Request) bool {
	v, ok := m.ref.lookup(req)
	if m.kind == hmPresent {
		return (m.present == ok) != m.invert
	}
	if !ok && !m.treatMissing {
		// An absent header never matches, inverted or not.
		return false
	}
	var r bool
	switch m.kind {
	case hmExact:
		r = m.value == "" || v == m.value
	case hmRegex:
		r = m.re.MatchString(v)
	case hmRange:
		n, err := strconv.ParseInt(strings.Trim(v, " \t\n\v\f\r"), 10, 64)
		r = err == nil && n >= m.start && n < m.end
	case hmPrefix:
		r = strings.HasPrefix(v, m.value)
	case hmSuffix:
		r = strings.HasSuffix(v, m.value)
	case hmContains:
		r = strings.Contains(v, m.value)
	case hmString:
		r = m.str.match(v)
	}
	return r != m.invert
}

type stringKind uint8

const (
	smExact stringKind = iota
	smPrefix
	smSuffix
	smContains
	smRegex
)

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	kind  stringKind
	value string
	fold  bool
	re    *regexp.Regexp
}

func compileStringMatcher(sm *matcherv3.StringMatcher, path string) (stringMatcher, error) {
	m := stringMatcher{fold: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		m.kind, m.value = smExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		m.kind, m.value = smPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		m.kind, m.value = smSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		m.kind, m.value = smContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex, path+".safe_regex")
		if err != nil {
			return m, err
		}
		m.kind, m.re = smRegex, re
	default:
		return m, fmt.Errorf("router: %s: no match pattern", path)
	}
	return m, nil
}

func (m *stringMatcher) match(v string) bool {
	switch m.kind {
	case smExact:
		if m.fold {
			return equalFoldASCII(v, m.value)
		}
		return v == m.value
	case smPrefix:
		return hasPrefix(v, m.value, m.fold)
	case smSuffix:
		if len(v) < len(m.value) {
			return false
		}
		tail := v[len(v)-len(m.value):]
		if m.fold {
			return equalFoldASCII(tail, m.value)
		}
		return tail == m.value
	case smContains:
		if m.fold {
			return containsFoldASCII(v, m.value)
		}
		return strings.Contains(v, m.value)
	case smRegex:
		// ignore_case does not apply to regular expressions in Envoy.
		return m.re.MatchString(v)
	}
	return false
}

// queryMatcher is a compiled QueryParameterMatcher: present_match (or no
// specifier) checks presence, string_match the first value.
type queryMatcher struct {
	name string
	str  *stringMatcher
}

func (q *queryMatcher) matches(query string) bool {
	v, ok := queryValue(query, q.name)
	if !ok {
		return false
	}
	if q.str == nil {
		return true
	}
	return q.str.match(v)
}

// rawQuery returns the query string of p without '?' and fragment.
func rawQuery(p string) string {
	i := strings.IndexAny(p, "?#")
	if i < 0 || p[i] == '#' {
		return ""
	}
	q := p[i+1:]
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

// queryValue finds the first value of key in a raw query string. Like
// Envoy's parseQueryString it does not percent-decode, and a key without
// '=' has the empty value.
func queryValue(query, key string) (string, bool) {
	for query != "" {
		var part string
		part, query, _ = strings.Cut(query, "&")
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if k == key {
			return v, true
		}
	}
	return "", false
}

func hasPrefix(s, prefix string, fold bool) bool {
	if !fold {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && equalFoldASCII(s[:len(prefix)], prefix)
}

// equalFoldASCII compares ignoring ASCII case only, as absl's
// EqualsIgnoreCase does.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func containsFoldASCII(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFoldASCII(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// CompileStringMatchers compiles a list of envoy.type.matcher.v3.StringMatcher
// (for other packages, e.g. ignore_http_11_upgrade) into one predicate that
// is true when any matcher matches. path prefixes error messages. An empty
// list gives nil.
func CompileStringMatchers(ms []*matcherv3.StringMatcher, path string) (func(string) bool, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	compiled := make([]stringMatcher, 0, len(ms))
	for i, sm := range ms {
		m, err := compileStringMatcher(sm, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		compiled = append(compiled, m)
	}
	return func(s string) bool {
		for i := range compiled {
			if compiled[i].match(s) {
				return true
			}
		}
		return false
	}, nil
}
