// Command localcp is a tiny xDS control plane for trying hop's hot reload by
// hand. It serves the Envoy resources in a directory over ADS (state of the
// world and delta, through xds/xdstest and go-control-plane) and pushes a new
// snapshot version (v1, v2, ...) whenever a file in the directory changes.
//
//	go run ./hack/localcp -dir testdata/localcp -addr 127.0.0.1:18000 [-node hop-demo]
//
// Each .yaml, .yml or .json file holds one resource or a list of resources,
// each naming its type with "@type", for example
//
//	"@type": type.googleapis.com/envoy.config.listener.v3.Listener
//	name: demo
//	...
//
// The directory is checked every -interval; a change is pushed once the
// files have stayed the same for one interval, so that a file an editor is
// still writing is not taken. A file that does not parse (or a name defined
// twice) is logged and the last snapshot stays. localcp logs every push and
// every request it receives, ACKs and NACKs with their error_detail included.
//
// Snapshots are keyed by node id: only a client whose node.id is -node gets
// them. With -node "" every node that connects is served the same snapshot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "localcp")
	if err := run(ctx, os.Args[1:], os.Stderr, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, flagOut io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("localcp", flag.ContinueOnError)
	fs.SetOutput(flagOut)
	var c config
	fs.StringVar(&c.dir, "dir", "testdata/localcp", "directory of Envoy resource files (.yaml, .yml, .json)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:18000", "address to serve ADS on")
	fs.StringVar(&c.node, "node", "hop-demo", `node id to serve; "" serves every node that connects`)
	fs.DurationVar(&c.interval, "interval", 250*time.Millisecond, "how often to check the directory for changes")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("localcp: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("localcp: unexpected arguments %q", fs.Args())
	}
	if c.dir == "" {
		return errors.New("localcp: -dir is empty")
	}
	if c.interval <= 0 {
		return errors.New("localcp: -interval must be positive")
	}
	cp, err := start(ctx, c, log)
	if err != nil {
		return err
	}
	cp.serve(ctx)
	return nil
}
