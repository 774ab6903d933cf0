package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// marshalPretty writes m as Envoy's pretty-printed proto JSON: proto field
// names, a one-space indent, "key": value. protojson's own multiline output
// varies its whitespace from build to build on purpose, so the compact form
// is re-indented by encoding/json, which gives the same bytes every time.
// withDefaults prints default-valued scalars too, as Envoy does for
// /server_info.
func marshalPretty(m proto.Message, withDefaults bool) ([]byte, error) {
	compact, err := protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: withDefaults}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, compact, "", " "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// writeProtoJSON replies with m in Envoy's pretty JSON.
func (s *Server) writeProtoJSON(w http.ResponseWriter, m proto.Message, withDefaults bool) {
	b, err := marshalPretty(m, withDefaults)
	if err != nil {
		s.internalError(w, fmt.Errorf("admin: marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// wantJSON reports ?format=json; Envoy ignores an empty format.
func wantJSON(r *http.Request) bool { return r.URL.Query().Get("format") == "json" }

func (s *Server) handleListeners(w http.ResponseWriter, r *http.Request) {
	var ls []ListenerStatus
	if s.opts.Listeners != nil {
		ls = s.opts.Listeners()
	}
	if wantJSON(r) {
		s.writeProtoJSON(w, listenersProto(ls), false)
		return
	}
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s::%s\n", l.Name, l.Address)
		for _, a := range l.AdditionalAddresses {
			fmt.Fprintf(&b, "%s::%s\n", l.Name, a)
		}
	}
	_, _ = w.Write([]byte(b.String()))
}

func listenersProto(ls []ListenerStatus) *adminv3.Listeners {
	out := &adminv3.Listeners{}
	for _, l := range ls {
		st := &adminv3.ListenerStatus{Name: l.Name, LocalAddress: addressProto(l.Address)}
		for _, a := range l.AdditionalAddresses {
			st.AdditionalLocalAddresses = append(st.AdditionalLocalAddresses, addressProto(a))
		}
		out.ListenerStatuses = append(out.ListenerStatuses, st)
	}
	return out
}

// addressProto turns "ip:port" into a SocketAddress and anything else (a
// pipe path) into a Pipe, as Envoy's addressToProtobufAddress does.
func addressProto(a string) *corev3.Address {
	host, port, err := net.SplitHostPort(a)
	if err == nil {
		if p, perr := strconv.ParseUint(port, 10, 32); perr == nil {
			return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       host,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
			}}}
		}
	}
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: a}}}
}

// Envoy's circuit-breaker defaults.
var defaultThresholds = Thresholds{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}

func thresholdsOr(t *Thresholds) Thresholds {
	if t == nil {
		return defaultThresholds
	}
	return *t
}

func (h *HostStatus) healthFlags() string {
	switch {
	case h.HealthFlags != "":
		return h.HealthFlags
	case h.Healthy:
		return "healthy"
	default:
		return "/failed_active_hc"
	}
}

func (h *HostStatus) weight() uint32 {
	if h.Weight == 0 {
		return 1
	}
	return h.Weight
}

// hostStat is one of Envoy's per-host stats.
type hostStat struct {
	name    string
	value   int64
	counter bool
}

// stats lists the host's stats in Envoy's order: counters, then gauges.
func (h *HostStatus) stats() []hostStat {
	return []hostStat{
		{"cx_connect_fail", h.CxConnectFail, true},
		{"cx_total", h.CxTotal, true},
		{"rq_error", h.RqError, true},
		{"rq_success", h.RqSuccess, true},
		{"rq_timeout", h.RqTimeout, true},
		{"rq_total", h.RqTotal, true},
		{"cx_active", h.CxActive, false},
		{"rq_active", h.RqActive, false},
	}
}

func sortedClusters(cs []ClusterStatus) []ClusterStatus {
	out := append([]ClusterStatus(nil), cs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Server) handleClusters(w http.ResponseWriter, r *http.Request) {
	var cs []ClusterStatus
	if s.opts.Clusters != nil {
		cs = sortedClusters(s.opts.Clusters())
	}
	if wantJSON(r) {
		s.writeProtoJSON(w, clustersProto(cs), false)
		return
	}
	var b strings.Builder
	for i := range cs {
		writeClusterText(&b, &cs[i])
	}
	_, _ = w.Write([]byte(b.String()))
}

// writeClusterText writes a cluster in the line format of Envoy's /clusters.
func writeClusterText(b *strings.Builder, c *ClusterStatus) {
	obs := c.ObservabilityName
	if obs == "" {
		obs = c.Name
	}
	fmt.Fprintf(b, "%s::observability_name::%s\n", c.Name, obs)
	for _, p := range []struct {
		name string
		t    Thresholds
	}{{"default", thresholdsOr(c.Default)}, {"high", thresholdsOr(c.High)}} {
		fmt.Fprintf(b, "%s::%s_priority::max_connections::%d\n", c.Name, p.name, p.t.MaxConnections)
		fmt.Fprintf(b, "%s::%s_priority::max_pending_requests::%d\n", c.Name, p.name, p.t.MaxPendingRequests)
		fmt.Fprintf(b, "%s::%s_priority::max_requests::%d\n", c.Name, p.name, p.t.MaxRequests)
		fmt.Fprintf(b, "%s::%s_priority::max_retries::%d\n", c.Name, p.name, p.t.MaxRetries)
	}
	fmt.Fprintf(b, "%s::added_via_api::%t\n", c.Name, c.AddedViaAPI)
	if c.EDSServiceName != "" {
		fmt.Fprintf(b, "%s::eds_service_name::%s\n", c.Name, c.EDSServiceName)
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		st := h.stats()
		sort.Slice(st, func(i, j int) bool { return st[i].name < st[j].name })
		pre := c.Name + "::" + h.Address + "::"
		for _, x := range st {
			fmt.Fprintf(b, "%s%s::%d\n", pre, x.name, x.value)
		}
		fmt.Fprintf(b, "%shostname::%s\n", pre, h.Hostname)
		fmt.Fprintf(b, "%shealth_flags::%s\n", pre, h.healthFlags())
		fmt.Fprintf(b, "%sweight::%d\n", pre, h.weight())
		fmt.Fprintf(b, "%sregion::%s\n", pre, h.Region)
		fmt.Fprintf(b, "%szone::%s\n", pre, h.Zone)
		fmt.Fprintf(b, "%ssub_zone::%s\n", pre, h.SubZone)
		fmt.Fprintf(b, "%scanary::false\n", pre)
		fmt.Fprintf(b, "%spriority::%d\n", pre, h.Priority)
		fmt.Fprintf(b, "%ssuccess_rate::-1\n", pre)
		fmt.Fprintf(b, "%slocal_origin_success_rate::-1\n", pre)
	}
}

func clustersProto(cs []ClusterStatus) *adminv3.Clusters {
	out := &adminv3.Clusters{}
	for i := range cs {
		c := &cs[i]
		obs := c.ObservabilityName
		if obs == "" {
			obs = c.Name
		}
		st := &adminv3.ClusterStatus{
			Name:              c.Name,
			ObservabilityName: obs,
			EdsServiceName:    c.EDSServiceName,
			AddedViaApi:       c.AddedViaAPI,
			CircuitBreakers:   circuitBreakersProto(thresholdsOr(c.Default), thresholdsOr(c.High)),
		}
		for j := range c.Hosts {
			st.HostStatuses = append(st.HostStatuses, hostProto(&c.Hosts[j]))
		}
		out.ClusterStatuses = append(out.ClusterStatuses, st)
	}
	return out
}

func circuitBreakersProto(def, high Thresholds) *clusterv3.CircuitBreakers {
	mk := func(p corev3.RoutingPriority, t Thresholds) *clusterv3.CircuitBreakers_Thresholds {
		return &clusterv3.CircuitBreakers_Thresholds{
			Priority:           p,
			MaxConnections:     u32(t.MaxConnections),
			MaxPendingRequests: u32(t.MaxPendingRequests),
			MaxRequests:        u32(t.MaxRequests),
			MaxRetries:         u32(t.MaxRetries),
		}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		mk(corev3.RoutingPriority_DEFAULT, def), mk(corev3.RoutingPriority_HIGH, high),
	}}
}

// u32 wraps v, saturating at the proto field's range.
func u32(v uint64) *wrapperspb.UInt32Value {
	return wrapperspb.UInt32(uint32(min(v, math.MaxUint32)))
}

func hostProto(h *HostStatus) *adminv3.HostStatus {
	hs := &adminv3.HostStatus{
		Address:      addressProto(h.Address),
		HealthStatus: healthProto(h.healthFlags()),
		Weight:       h.weight(),
		Hostname:     h.Hostname,
		Priority:     h.Priority,
	}
	if h.Region != "" || h.Zone != "" || h.SubZone != "" {
		hs.Locality = &corev3.Locality{Region: h.Region, Zone: h.Zone, SubZone: h.SubZone}
	}
	for _, x := range h.stats() {
		m := &adminv3.SimpleMetric{Name: x.name, Value: uint64(max(x.value, 0)), Type: adminv3.SimpleMetric_GAUGE}
		if x.counter {
			m.Type = adminv3.SimpleMetric_COUNTER
		}
		hs.Stats = append(hs.Stats, m)
	}
	return hs
}

// healthProto turns Envoy's health flag string into a HostHealthStatus.
func healthProto(flags string) *adminv3.HostHealthStatus {
	hs := &adminv3.HostHealthStatus{EdsHealthStatus: corev3.HealthStatus_HEALTHY}
	for _, f := range strings.Split(flags, "/") {
		switch f {
		case "failed_active_hc":
			hs.FailedActiveHealthCheck = true
		case "failed_outlier_check":
			hs.FailedOutlierCheck = true
		case "failed_eds_health":
			hs.EdsHealthStatus = corev3.HealthStatus_UNHEALTHY
		case "degraded_eds_health":
			if hs.EdsHealthStatus != corev3.HealthStatus_UNHEALTHY {
				hs.EdsHealthStatus = corev3.HealthStatus_DEGRADED
			}
		case "degraded_active_hc":
			hs.FailedActiveDegradedCheck = true
		case "pending_dynamic_removal":
			hs.PendingDynamicRemoval = true
		case "pending_active_hc":
			hs.PendingActiveHc = true
		case "excluded_via_immediate_hc_fail":
			hs.ExcludedViaImmediateHcFail = true
		case "active_hc_timeout":
			hs.ActiveHcTimeout = true
		case "eds_status_draining":
			hs.EdsHealthStatus = corev3.HealthStatus_DRAINING
		}
	}
	return hs
}

func (s *Server) handleServerInfo(w http.ResponseWriter, _ *http.Request) {
	up := durationpb.New(time.Since(s.start).Truncate(time.Second))
	info := &adminv3.ServerInfo{
		Version:            s.opts.Version,
		State:              s.state(),
		HotRestartVersion:  "disabled",
		UptimeCurrentEpoch: up,
		UptimeAllEpochs:    up,
		CommandLineOptions: s.opts.CommandLine,
		Node:               s.opts.Node,
	}
	s.writeProtoJSON(w, info, true)
}
