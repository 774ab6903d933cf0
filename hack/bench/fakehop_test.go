//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// fakeHopEnv turns the test binary into a stand-in for hop when the bench
// executes it: "proxy" serves the bootstrap with a reverse proxy, "fail"
// prints a message and exits 3.
const fakeHopEnv = "HOP_BENCH_FAKE_HOP"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(fakeHopEnv); mode {
	case "":
		os.Exit(m.Run())
	case "proxy":
		err := fakeHop(os.Args[1:])
		fmt.Fprintln(os.Stderr, "fake hop:", err)
		os.Exit(1)
	case "fail":
		fmt.Fprintln(os.Stderr, "fake hop: refusing to start")
		os.Exit(3)
	default:
		fmt.Fprintf(os.Stderr, "fake hop: unknown mode %q\n", mode)
		os.Exit(2)
	}
}

// loadBootstrap parses an Envoy bootstrap the way hop will: YAML to JSON,
// strict protojson (unknown fields and unknown Any types rejected), then the
// protos' own validation rules.
func loadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	y, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return &b, nil
}

// fakeHop accepts exactly the command line the bench uses, serves admin
// /ready, and reverse-proxies the listener to the first endpoint of the
// first cluster (httputil.ReverseProxy passes WebSocket upgrades through).
// It runs until killed.
func fakeHop(args []string) error {
	if len(args) != 4 || args[0] != "-c" || args[2] != "--base-id" || args[3] != "1" {
		return fmt.Errorf("want -c <file> --base-id 1, got %q", args)
	}
	b, err := loadBootstrap(args[1])
	if err != nil {
		return err
	}
	sockAddr := func(host string, port uint32) string {
		return net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	lis := b.GetStaticResources().GetListeners()
	cls := b.GetStaticResources().GetClusters()
	if admin == nil || len(lis) != 1 || len(cls) != 1 {
		return errors.New("want an admin address, one listener and one cluster")
	}
	listen := lis[0].GetAddress().GetSocketAddress()
	up := cls[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()

	al, err := net.Listen("tcp", sockAddr(admin.GetAddress(), admin.GetPortValue()))
	if err != nil {
		return err
	}
	go http.Serve(al, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "LIVE")
	}))

	target := &url.URL{Scheme: "http", Host: sockAddr(up.GetAddress(), up.GetPortValue())}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	l, err := net.Listen("tcp", sockAddr(listen.GetAddress(), listen.GetPortValue()))
	if err != nil {
		return err
	}
	return http.Serve(l, proxy)
}
