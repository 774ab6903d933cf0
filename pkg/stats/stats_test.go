package stats

import (
	"regexp"
	"strings"
	"testing"
)

func TestTextAndPrometheus(t *testing.T) {
	st := New()
	h := st.Tagged("http", "ingress", "envoy_http_conn_manager_prefix")
	h.Counter("downstream_rq_total").Add(3)
	h.Gauge("downstream_cx_active").Inc()
	st.Tagged("http", "other", "envoy_http_conn_manager_prefix").Counter("downstream_rq_total").Inc()
	st.Root().Gauge("server.live").Set(1)
	if h.Counter("downstream_rq_total") != h.Counter("downstream_rq_total") {
		t.Fatal("the same name must give the same counter")
	}

	var b strings.Builder
	st.WriteText(&b, regexp.MustCompile(`^http\.ingress\.`))
	if want := "http.ingress.downstream_cx_active: 1\nhttp.ingress.downstream_rq_total: 3\n"; b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	st.WritePrometheus(&b, nil)
	for _, want := range []string{
		"# TYPE envoy_http_downstream_rq_total counter\n" +
			`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress"} 3` + "\n" +
			`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="other"} 1` + "\n",
		"# TYPE envoy_server_live gauge\nenvoy_server_live 1\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, b.String())
		}
	}
	if v, ok := st.Get("http.other.downstream_rq_total"); !ok || v != 1 {
		t.Errorf("Get = %d %v", v, ok)
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := New().Root().Counter("x")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Inc()
	}
}
