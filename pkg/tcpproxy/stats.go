package tcpproxy

import (
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/upstream"
)

// attemptsExceeded is cluster.<name>.upstream_cx_connect_attempts_exceeded
// of cl: pkg/upstream does not keep it, so it is looked up in the store on
// this failure path (the same name is the same counter).
func (c *Config) attemptsExceeded(cl *upstream.Cluster) *stats.Counter {
	name := cl.Proto().GetAltStatName()
	if name == "" {
		name = cl.Name()
	}
	return c.st.Tagged("cluster", name, "envoy_cluster_name").Counter("upstream_cx_connect_attempts_exceeded")
}
