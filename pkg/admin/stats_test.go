package admin

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/pkg/stats"
)

func TestStatsEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, target string
		code         int
		ct           string
		want         string // exact body, when set
		contains     []string
	}{
		{name: "text sorted", target: "/stats", code: 200, ct: ctText, want: "cluster_manager.cluster_added: 2\n" +
			"http.ingress.downstream_cx_active: 3\nhttp.ingress.downstream_rq_total: 7\nserver.live: 1\n"},
		{name: "filter", target: "/stats?filter=" + url.QueryEscape(`^http\..*_total$`), code: 200, ct: ctText,
			want: "http.ingress.downstream_rq_total: 7\n"},
		{name: "filter is a search", target: "/stats?filter=cx_", code: 200, ct: ctText,
			want: "http.ingress.downstream_cx_active: 3\n"},
		{name: "usedonly accepted", target: "/stats?usedonly&filter=live", code: 200, ct: ctText, want: "server.live: 1\n"},
		{name: "type gauges", target: "/stats?type=Gauges", code: 200, ct: ctText,
			want: "http.ingress.downstream_cx_active: 3\nserver.live: 1\n"},
		{name: "type histograms", target: "/stats?type=Histograms", code: 200, ct: ctText, want: ""},
		{name: "bad regex", target: "/stats?filter=" + url.QueryEscape("(["), code: 400, ct: ctText,
			contains: []string{"Invalid re2 regex: error parsing regexp"}},
		{name: "bad type", target: "/stats?type=x", code: 400, ct: ctText, want: "invalid &type= param"},
		{name: "bad format", target: "/stats?format=xml", code: 400, ct: ctText,
			contains: []string{"usage: /stats?format="}},
		{name: "json", target: "/stats?format=json&filter=server", code: 200, ct: ctJSON,
			want: `{"stats":[{"name":"server.live","value":1}]}`},
		{name: "prometheus via format", target: "/stats?format=prometheus&filter=live", code: 200, ct: promContentType,
			want: "# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"},
		{name: "prometheus", target: "/stats/prometheus", code: 200, ct: promContentType, contains: []string{
			"# TYPE envoy_cluster_manager_cluster_added counter\nenvoy_cluster_manager_cluster_added 2\n",
			"# TYPE envoy_http_downstream_rq_total counter\n" +
				`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress"} 7` + "\n",
			"# TYPE envoy_http_downstream_cx_active gauge\n",
		}},
		{name: "prometheus bad regex", target: "/stats/prometheus?filter=" + url.QueryEscape("(["), code: 400, ct: ctText,
			contains: []string{"Invalid re2 regex"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do("GET", tt.target)
			if r.code != tt.code || r.ct != tt.ct {
				t.Fatalf("%s = %d %q, want %d %q\n%s", tt.target, r.code, r.ct, tt.code, tt.ct, r.body)
			}
			if tt.contains == nil {
				mustEqual(t, r.body, tt.want)
			}
			mustContain(t, r.body, tt.contains...)
		})
	}
}

func TestStatsJSONShape(t *testing.T) {
	f := newFixture(t, nil)
	r := f.do("GET", "/stats?format=json&pretty")
	var got struct {
		Stats []struct {
			Name  string `json:"name"`
			Value int64  `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("%v\n%s", err, r.body)
	}
	if len(got.Stats) != 4 || got.Stats[0].Name != "cluster_manager.cluster_added" || got.Stats[0].Value != 2 {
		t.Fatalf("stats = %+v", got.Stats)
	}
	if !strings.Contains(r.body, "\n") {
		t.Fatal("pretty output is on one line")
	}
}

func TestServerStatsTicker(t *testing.T) {
	st := stats.New()
	start := time.Unix(1000, 0)
	now := start.Add(1500 * time.Millisecond)
	ready := false
	tick := make(chan time.Time) // unbuffered: a second send proves the first update finished
	stop := registerServerStats(st, start, func() bool { return ready }, tick, func() time.Time { return now })

	check := func(live, state, uptime int64) {
		t.Helper()
		for name, want := range map[string]int64{"server.live": live, "server.state": state, "server.uptime": uptime} {
			if got, ok := st.Get(name); !ok || got != want {
				t.Errorf("%s = %d (%v), want %d", name, got, ok, want)
			}
		}
	}
	check(0, statePreInitializing, 1) // set at registration

	// The goroutine is the only writer from here on; the test reads only
	// after the goroutine has come back for the next tick, or has exited.
	ready = true // read by the goroutine after the send below
	now = start.Add(42 * time.Second)
	tick <- now
	tick <- now
	check(1, stateLive, 42)

	stop()
	stop() // idempotent
}

func TestRegisterServerStats(t *testing.T) {
	st := stats.New()
	stop := RegisterServerStats(st, time.Now().Add(-3*time.Second), func() bool { return true })
	defer stop()
	if v, _ := st.Get("server.live"); v != 1 {
		t.Fatalf("server.live = %d", v)
	}
	if v, _ := st.Get("server.uptime"); v < 3 {
		t.Fatalf("server.uptime = %d", v)
	}
}
