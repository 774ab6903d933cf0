package dataplane

import (
	"sort"

	"github.com/hopproxy/hop/pkg/admin"
)

// ListenerStatus reports the open listeners for admin's /listeners.
func (d *DataPlane) ListenerStatus() []admin.ListenerStatus {
	var out []admin.ListenerStatus
	for name, addr := range d.Listeners.Names() {
		out = append(out, admin.ListenerStatus{Name: name, Address: addr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ClusterStatus reports the clusters and their hosts for admin's /clusters.
func (d *DataPlane) ClusterStatus() []admin.ClusterStatus {
	var out []admin.ClusterStatus
	for _, c := range d.Clusters.Clusters() {
		cs := admin.ClusterStatus{Name: c.Name()}
		for _, h := range c.Hosts() {
			cs.Hosts = append(cs.Hosts, admin.HostStatus{
				Address:       h.Address,
				Hostname:      h.Hostname,
				Weight:        h.Weight,
				Healthy:       h.Healthy,
				Region:        h.Region,
				Zone:          h.Zone,
				SubZone:       h.SubZone,
				CxActive:      h.CxActive,
				CxTotal:       int64(h.CxTotal),
				CxConnectFail: int64(h.CxConnectFail),
				RqActive:      h.RqActive,
				RqTotal:       int64(h.RqTotal),
			})
		}
		out = append(out, cs)
	}
	return out
}
