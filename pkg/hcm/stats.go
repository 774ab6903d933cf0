package hcm

import "github.com/hopproxy/hop/pkg/stats"

// hcmStats are the http.<stat_prefix>.* stats Envoy keeps per connection
// manager. They are created when the config is compiled; a reload that keeps
// the stat_prefix finds the same counters again.
type hcmStats struct {
	cxTotal, cxHTTP1Total, cxDestroy              *stats.Counter
	cxHTTP2Total, cxHTTP3Total, cxSSLTotal        *stats.Counter
	cxActive, cxHTTP1Active                       *stats.Gauge
	cxHTTP2Active, cxHTTP3Active, cxSSLActive     *stats.Gauge
	rqTotal, rqHTTP1Total, rqCompleted            *stats.Counter
	rqHTTP2Total, rqHTTP3Total                    *stats.Counter
	rqActive                                      *stats.Gauge
	rq1xx, rq2xx, rq3xx, rq4xx, rq5xx             *stats.Counter
	upgradesTotal                                 *stats.Counter
	upgradesActive                                *stats.Gauge
	wsOnNonWSRoute                                *stats.Counter
	rqIdleTimeout, rqTimeout                      *stats.Counter
	noRoute, noCluster, rqDirectResponse, rqRedir *stats.Counter
}

func newHCMStats(st *stats.Store, prefix string) *hcmStats {
	sc := st.Tagged("http", prefix, "envoy_http_conn_manager_prefix")
	return &hcmStats{
		cxTotal:          sc.Counter("downstream_cx_total"),
		cxHTTP1Total:     sc.Counter("downstream_cx_http1_total"),
		cxDestroy:        sc.Counter("downstream_cx_destroy"),
		cxActive:         sc.Gauge("downstream_cx_active"),
		cxHTTP1Active:    sc.Gauge("downstream_cx_http1_active"),
		cxHTTP2Total:     sc.Counter("downstream_cx_http2_total"),
		cxHTTP3Total:     sc.Counter("downstream_cx_http3_total"),
		cxSSLTotal:       sc.Counter("downstream_cx_ssl_total"),
		cxHTTP2Active:    sc.Gauge("downstream_cx_http2_active"),
		cxHTTP3Active:    sc.Gauge("downstream_cx_http3_active"),
		cxSSLActive:      sc.Gauge("downstream_cx_ssl_active"),
		rqTotal:          sc.Counter("downstream_rq_total"),
		rqHTTP2Total:     sc.Counter("downstream_rq_http2_total"),
		rqHTTP3Total:     sc.Counter("downstream_rq_http3_total"),
		rqHTTP1Total:     sc.Counter("downstream_rq_http1_total"),
		rqCompleted:      sc.Counter("downstream_rq_completed"),
		rqActive:         sc.Gauge("downstream_rq_active"),
		rq1xx:            sc.Counter("downstream_rq_1xx"),
		rq2xx:            sc.Counter("downstream_rq_2xx"),
		rq3xx:            sc.Counter("downstream_rq_3xx"),
		rq4xx:            sc.Counter("downstream_rq_4xx"),
		rq5xx:            sc.Counter("downstream_rq_5xx"),
		upgradesTotal:    sc.Counter("downstream_cx_upgrades_total"),
		upgradesActive:   sc.Gauge("downstream_cx_upgrades_active"),
		wsOnNonWSRoute:   sc.Counter("downstream_rq_ws_on_non_ws_route"),
		rqIdleTimeout:    sc.Counter("downstream_rq_idle_timeout"),
		rqTimeout:        sc.Counter("downstream_rq_timeout"),
		noRoute:          sc.Counter("no_route"),
		noCluster:        sc.Counter("no_cluster"),
		rqDirectResponse: sc.Counter("rq_direct_response"),
		rqRedir:          sc.Counter("rq_redirect"),
	}
}

// countStatus adds one to the downstream_rq_<class>xx counter of status.
func (s *hcmStats) countStatus(status int) {
	switch status / 100 {
	case 1:
		s.rq1xx.Inc()
	case 2:
		s.rq2xx.Inc()
	case 3:
		s.rq3xx.Inc()
	case 4:
		s.rq4xx.Inc()
	case 5:
		s.rq5xx.Inc()
	}
}
