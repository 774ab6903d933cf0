//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// terminatesConnect reports whether the first route of hcm terminates
// CONNECT: an upgrade_configs entry CONNECT with a connect_config.
func terminatesConnect(hcm *hcmv3.HttpConnectionManager) bool {
	for _, u := range hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetUpgradeConfigs() {
		if u.GetUpgradeType() == "CONNECT" && u.GetConnectConfig() != nil {
			return true
		}
	}
	return false
}

// serveTerminate answers a CONNECT with a TCP connection to the cluster's
// endpoint: 200, then bytes both ways, each EOF passed on as a half-close.
// On HTTP/1.1 the connection is hijacked; on HTTP/2 the stream's request
// body goes up and the endpoint's bytes come back as flushed DATA.
func (c *fakeCluster) serveTerminate(w http.ResponseWriter, r *http.Request) {
	up, err := c.dial(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer up.Close()
	upTCP := up.(*net.TCPConn)
	if r.ProtoMajor == 1 {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := brw.WriteString("HTTP/1.1 200 OK\r\n\r\n"); err != nil || brw.Flush() != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(upTCP, brw.Reader) // client → echo; brw holds any early bytes
			upTCP.CloseWrite()
		}()
		if _, err := io.Copy(conn, upTCP); err != nil { // echo → client
			return // the deferred closes end the other direction
		}
		conn.(*net.TCPConn).CloseWrite()
		<-done
		return
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(upTCP, r.Body) // END_STREAM half-closes
		upTCP.CloseWrite()
	}()
	if copyFlushing(w, rc, upTCP) != nil {
		return // returning closes r.Body, which ends the other direction
	}
	<-done
	// Returning ends the response stream: the half-close towards the client.
}

// copyFlushing copies src to w, flushing after every read, until EOF (nil)
// or an error either side.
func copyFlushing(w io.Writer, rc *http.ResponseController, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if ferr := rc.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// fakeTCPProxy is a tcp_proxy listener with tunneling_config: every
// connection becomes an HTTP/2 CONNECT stream for the hostname, on the
// cluster's HTTP/2 transport (one multiplexed connection), counted as
// tcp.<prefix>.downstream_cx_total.
type fakeTCPProxy struct {
	prefix, hostname string
	cluster          *fakeCluster
	stats            *fakeStats
}

func newFakeTCPProxy(cfg *anypb.Any, clusters map[string]*fakeCluster, st *fakeStats) (*fakeTCPProxy, error) {
	var tp tcpproxyv3.TcpProxy
	if err := cfg.UnmarshalTo(&tp); err != nil {
		return nil, err
	}
	c, ok := clusters[tp.GetCluster()]
	switch {
	case !ok:
		return nil, fmt.Errorf("tcp_proxy: unknown cluster %q", tp.GetCluster())
	case !c.h2:
		return nil, fmt.Errorf("tcp_proxy: cluster %q: the fake tunnels over HTTP/2 only", c.name)
	case tp.GetTunnelingConfig().GetHostname() == "":
		return nil, errors.New("tcp_proxy: the fake needs tunneling_config.hostname")
	}
	p := &fakeTCPProxy{prefix: tp.GetStatPrefix(), hostname: tp.GetTunnelingConfig().GetHostname(), cluster: c, stats: st}
	st.declare("tcp." + p.prefix + ".downstream_cx_total")
	return p, nil
}

func (p *fakeTCPProxy) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		p.stats.inc("tcp." + p.prefix + ".downstream_cx_total")
		go p.tunnel(c.(*net.TCPConn))
	}
}

// tunnel carries down over one CONNECT stream until both directions end.
func (p *fakeTCPProxy) tunnel(down *net.TCPConn) {
	defer down.Close()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "http://"+p.cluster.addr, pr)
	if err != nil {
		return
	}
	req.Host = p.hostname
	resp, err := p.cluster.h2t.RoundTrip(req)
	if err != nil {
		pw.Close()
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(pw, down) // EOF → END_STREAM
		pw.Close()
	}()
	if _, err := io.Copy(down, resp.Body); err != nil {
		return // closing down ends the other direction
	}
	down.CloseWrite()
	<-done
}
