// Command echo is the demo upstream for `make run`: one TCP port that echoes
// WebSocket messages at any path and answers plain HTTP requests with a text
// description of what arrived, so a user can see what hop forwarded.
//
//	go run ./hack/echo -addr 127.0.0.1:9000
//
// The server itself lives in hack/echo/echoserver so tests and hack/bench can
// run it in-process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hopproxy/hop/hack/echo/echoserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "echo")
	if err := run(ctx, os.Args[1:], os.Stderr, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done, then shuts the server down gracefully.
func run(ctx context.Context, args []string, flagOut io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(flagOut)
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on (WebSocket echo and HTTP request description)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("echo: unexpected arguments %q", fs.Args())
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("echo: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           echoserver.New(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("listening", "addr", l.Addr().String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("echo: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("echo: shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("echo: serve: %w", err)
	}
	return nil
}
