package router

import (
	"fmt"
	"sort"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// supportedFields lists, per message type, the fields Compile implements.
// checkSupported rejects any other populated field of these messages and
// descends into the listed message-typed fields. Messages not listed here
// (Duration, BoolValue, Any, Int64Range, ConnectConfig, ...) are taken as a
// whole.
var supportedFields = map[protoreflect.FullName]map[protoreflect.Name]bool{
	"envoy.config.route.v3.RouteConfiguration": set(
		"name", "virtual_hosts",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove",
		"most_specific_header_mutations_wins", "ignore_port_in_host_matching",
		"max_direct_response_body_size_bytes", "validate_clusters"),
	"envoy.config.route.v3.VirtualHost": set(
		"name", "domains", "routes",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove",
		"typed_per_filter_config"),
	"envoy.config.route.v3.Route": set(
		"name", "match", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove",
		"typed_per_filter_config"),
	"envoy.config.route.v3.RouteMatch": set(
		"prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher",
		"case_sensitive", "headers", "query_parameters"),
	"envoy.config.route.v3.HeaderMatcher": set(
		"name", "exact_match", "safe_regex_match", "range_match", "present_match",
		"prefix_match", "suffix_match", "contains_match", "string_match",
		"invert_match", "treat_missing_header_as_empty"),
	"envoy.config.route.v3.QueryParameterMatcher": set("name", "string_match", "present_match"),
	"envoy.type.matcher.v3.StringMatcher": set(
		"exact", "prefix", "suffix", "safe_regex", "contains", "ignore_case"),
	"envoy.type.matcher.v3.RegexMatcher": set("regex", "google_re2"),
	"envoy.config.route.v3.RouteAction": set(
		"cluster", "weighted_clusters", "cluster_not_found_response_code",
		"timeout", "idle_timeout", "prefix_rewrite", "host_rewrite_literal", "upgrade_configs"),
	"envoy.config.route.v3.WeightedCluster":               set("clusters", "total_weight"),
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": set("name", "weight"),
	"envoy.config.route.v3.RouteAction.UpgradeConfig":     set("upgrade_type", "enabled", "connect_config"),
	"envoy.config.route.v3.RedirectAction": set(
		"https_redirect", "scheme_redirect", "host_redirect", "port_redirect",
		"path_redirect", "prefix_rewrite", "response_code", "strip_query"),
	"envoy.config.route.v3.DirectResponseAction": set("status", "body"),
	"envoy.config.core.v3.DataSource":            set("inline_string", "inline_bytes"),
	"envoy.config.core.v3.HeaderValueOption":     set("header", "append", "append_action", "keep_empty_value"),
	"envoy.config.core.v3.HeaderValue":           set("key", "value"),
}

// fieldHints explains some rejections beyond "unsupported field".
var fieldHints = map[protoreflect.FullName]string{
	"envoy.config.core.v3.DataSource.filename": "reading a file is I/O; inline the body with inline_string or inline_bytes",
}

func set(names ...protoreflect.Name) map[protoreflect.Name]bool {
	m := make(map[protoreflect.Name]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// checkSupported returns an error naming a populated field of m, or of a
// message below it, that Compile does not implement. Each message's own
// fields are checked before its children, in declaration order, so the
// error is deterministic.
func checkSupported(m protoreflect.Message, path string) error {
	allowed, ok := supportedFields[m.Descriptor().FullName()]
	if !ok {
		return nil
	}
	if len(m.GetUnknown()) > 0 {
		where := path
		if where == "" {
			where = string(m.Descriptor().Name())
		}
		return fmt.Errorf("router: %s: unknown fields", where)
	}
	var bad protoreflect.FieldDescriptor
	var children []protoreflect.FieldDescriptor
	// Range visits only populated fields, which is much cheaper than Has on
	// every declared field.
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		switch {
		case !allowed[fd.Name()]:
			if bad == nil || fd.Index() < bad.Index() {
				bad = fd
			}
		case fd.Message() != nil && !fd.IsMap():
			children = append(children, fd)
		}
		return true
	})
	if bad != nil {
		fpath := joinPath(path, bad)
		if hint, ok := fieldHints[bad.FullName()]; ok {
			return fmt.Errorf("router: %s: unsupported field (%s)", fpath, hint)
		}
		return fmt.Errorf("router: %s: unsupported field", fpath)
	}
	sort.Slice(children, func(i, j int) bool { return children[i].Index() < children[j].Index() })
	for _, fd := range children {
		if _, ok := supportedFields[fd.Message().FullName()]; !ok {
			continue
		}
		fpath := joinPath(path, fd)
		if fd.IsList() {
			list := m.Get(fd).List()
			for j := 0; j < list.Len(); j++ {
				if err := checkSupported(list.Get(j).Message(), fmt.Sprintf("%s[%d]", fpath, j)); err != nil {
					return err
				}
			}
			continue
		}
		if err := checkSupported(m.Get(fd).Message(), fpath); err != nil {
			return err
		}
	}
	return nil
}

func joinPath(path string, fd protoreflect.FieldDescriptor) string {
	if path == "" {
		return string(fd.Name())
	}
	return path + "." + string(fd.Name())
}
