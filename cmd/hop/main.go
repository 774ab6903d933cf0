// Command hop is a data-plane proxy that runs Envoy v3 configuration.
//
//	hop -c envoy.yaml [--config-yaml '...'] [--mode serve|validate] [--base-id N]
//	    [-l info] [--service-node ID] [--service-cluster NAME] [--drain-time-s 600]
//
// The flags are Envoy's. This file only parses them and wires the parts
// together; the behaviour lives in xds/ and pkg/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/admin"
	"github.com/hopproxy/hop/pkg/dataplane"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/xds/bootstrap"
	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/client/grpctransport"
	"github.com/hopproxy/hop/xds/watch"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

type options struct {
	configPath     string
	configYAML     string
	mode           string
	baseID         uint
	logLevel       string
	serviceNode    string
	serviceCluster string
	drainTime      uint
	showVersion    bool
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("hop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.configPath, "c", "", "path to an Envoy v3 bootstrap (YAML or JSON)")
	fs.StringVar(&o.configPath, "config-path", "", "same as -c")
	fs.StringVar(&o.configYAML, "config-yaml", "", "YAML bootstrap merged over -c, as Envoy merges it")
	fs.StringVar(&o.mode, "mode", "serve", "serve, or validate: check the configuration and exit")
	fs.UintVar(&o.baseID, "base-id", 0, "accepted for Envoy compatibility (hop has no shared-memory hot restart)")
	fs.StringVar(&o.logLevel, "l", "info", "log level: trace, debug, info, warning, error, critical, off")
	fs.StringVar(&o.logLevel, "log-level", "info", "same as -l")
	fs.StringVar(&o.serviceNode, "service-node", "", "node.id")
	fs.StringVar(&o.serviceCluster, "service-cluster", "", "node.cluster")
	fs.UintVar(&o.drainTime, "drain-time-s", 600, "seconds to let connections drain on shutdown")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch o.mode {
	case "serve", "validate":
	default:
		return nil, fmt.Errorf("--mode: unknown mode %q (serve or validate)", o.mode)
	}
	return o, nil
}

func logLevel(s string) (slog.Level, bool, error) {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug, true, nil
	case "info":
		return slog.LevelInfo, true, nil
	case "warn", "warning":
		return slog.LevelWarn, true, nil
	case "error", "critical":
		return slog.LevelError, true, nil
	case "off":
		return slog.LevelError, false, nil
	}
	return 0, false, fmt.Errorf("-l: unknown log level %q", s)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "hop:", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintf(stdout, "hop version %s\n", version)
		return 0
	}
	lvl, on, err := logLevel(o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "hop:", err)
		return 1
	}
	var out io.Writer = stderr
	if !on {
		out = io.Discard
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: lvl}))

	b, err := bootstrap.Load(bootstrap.Options{Path: o.configPath, ConfigYAML: o.configYAML, ServiceNode: o.serviceNode, ServiceCluster: o.serviceCluster})
	if err != nil {
		fmt.Fprintln(stderr, "hop:", err)
		return 1
	}
	if o.mode == "validate" {
		w, err := watch.New(watch.Options{Bootstrap: b, Dial: dialer(b), Applier: checker{}})
		if err != nil {
			fmt.Fprintln(stderr, "hop:", err)
			return 1
		}
		if err := dataplane.Compile(snapshot.Bundle(w.StaticBundle())); err != nil {
			fmt.Fprintln(stderr, "hop:", err)
			return 1
		}
		fmt.Fprintf(stdout, "configuration '%s' OK\n", o.configPath)
		return 0
	}
	return serve(o, b, log, stderr)
}

// applier lets the xDS watcher drive the data plane.
type applier struct{ dp *dataplane.DataPlane }

func (a applier) Check(m proto.Message) error { return a.dp.Check(m) }
func (a applier) Apply(b watch.Bundle) error  { return a.dp.Apply(snapshot.Bundle(b)) }

// checker is the Applier of --mode validate: it checks, never applies.
type checker struct{}

func (checker) Check(m proto.Message) error { return dataplane.CheckResource(m) }
func (checker) Apply(b watch.Bundle) error  { return nil }

// dialer opens gRPC config sources against the bootstrap's static
// clusters; errors carry the field path.
func dialer(b *bootstrapv3.Bootstrap) watch.DialFunc {
	return func(src *corev3.ApiConfigSource, path string) (client.Transport, error) {
		tr, err := grpctransport.FromConfigSource(src, b.GetStaticResources().GetClusters())
		if err != nil {
			return nil, fmt.Errorf("%s.%w", path, err)
		}
		return tr, nil
	}
}

func serve(o *options, b *bootstrapv3.Bootstrap, log *slog.Logger, stderr io.Writer) int {
	start := time.Now()
	st := stats.New()
	dp := dataplane.New(log, st, time.Duration(o.drainTime)*time.Second)
	w, err := watch.New(watch.Options{
		Bootstrap: b,
		Applier:   applier{dp},
		Dial:      dialer(b),
		Node:      watch.Node(b, version),
		Stats:     st,
		Log:       log,
	})
	if err != nil {
		fmt.Fprintln(stderr, "hop:", err)
		return 1
	}
	wctx, stopWatch := context.WithCancel(context.Background())
	started := make(chan error, 1)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		w.Run(wctx, func(err error) { started <- err })
	}()
	defer func() { stopWatch(); <-watchDone }()
	if err := <-started; err != nil {
		fmt.Fprintln(stderr, "hop:", err)
		dp.Shutdown(context.Background())
		return 1
	}
	ready := w.Initialized
	stopServerStats := admin.RegisterServerStats(st, start, ready)
	defer stopServerStats()

	quit := make(chan struct{})
	var quitOnce sync.Once
	requestQuit := func() { quitOnce.Do(func() { close(quit) }) }

	var adm *admin.Server
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(stderr, "hop: admin.address: %v\n", err)
			dp.Shutdown(context.Background())
			return 1
		}
		adm = admin.New(admin.Options{
			Version:    version,
			Node:       b.GetNode(),
			Start:      start,
			Stats:      st,
			ConfigDump: func() *adminv3.ConfigDump { return admin.ConfigDump(b, start, w.FillConfigDump) },
			Listeners:  dp.ListenerStatus,
			Clusters:   dp.ClusterStatus,
			Ready:      ready,
			Quit:       requestQuit,
			Log:        log,
		})
		go adm.Serve(ln)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case <-quit:
		log.Info("shutting down", "reason", "/quitquitquit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.drainTime)*time.Second)
	defer cancel()
	if adm != nil {
		adm.Shutdown(context.Background())
	}
	stopWatch()
	<-watchDone
	dp.Shutdown(ctx)
	return 0
}
