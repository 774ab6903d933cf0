package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/xds/xdstest"
)

// config is the command line.
type config struct {
	dir, addr, node string
	interval        time.Duration
}

// controlPlane serves one directory.
type controlPlane struct {
	srv *xdstest.Server
	cfg config
	log *slog.Logger

	// Owned by the directory poller (serve's goroutine).
	seen       string // the directory's state at the last load
	pending    string // a change waiting to stay put for one interval
	hasPending bool

	mu      sync.Mutex // guards the fields below; the request logger reads them
	version int        // of the current snapshot; 0 before the first push
	current map[string][]types.Resource
	nodes   map[string]bool // node ids served
	warned  map[string]bool // node ids told they get nothing
}

// start serves cfg.addr and pushes the directory's resources as v1. A
// directory that cannot be read is an error; a file that does not parse is
// logged and nothing is served until it is fixed.
func start(ctx context.Context, cfg config, log *slog.Logger) (*controlPlane, error) {
	state, err := dirState(cfg.dir)
	if err != nil {
		return nil, fmt.Errorf("localcp: %w", err)
	}
	srv, err := xdstest.Start(ctx, cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("localcp: %w", err)
	}
	cp := &controlPlane{srv: srv, cfg: cfg, log: log, seen: state, nodes: map[string]bool{}, warned: map[string]bool{}}
	if cfg.node != "" {
		cp.nodes[cfg.node] = true
	}
	log.Info("serving ADS (SotW and delta)", "addr", srv.Addr(), "dir", cfg.dir, "node", cfg.node)
	cp.reload()
	return cp, nil
}

// serve watches the directory and logs requests until ctx ends, then stops
// the server.
func (cp *controlPlane) serve(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { cp.logRequests(ctx) })
	t := time.NewTicker(cp.cfg.interval)
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			cp.poll()
		}
	}
	wg.Wait()
	cp.srv.Stop()
}

// dirState summarises the resource files of dir (names, sizes and
// modification times) as a comparable string.
func dirState(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range entries {
		if e.IsDir() || !resourceFile(e.Name()) {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			fmt.Fprintf(&b, "%s:%v\n", e.Name(), err)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// poll reloads the directory once a change has stayed put for one interval.
func (cp *controlPlane) poll() {
	state, err := dirState(cp.cfg.dir)
	if err != nil {
		state = "error: " + err.Error()
	}
	switch {
	case state == cp.seen:
		cp.hasPending = false
	case !cp.hasPending || state != cp.pending:
		cp.pending, cp.hasPending = state, true
	default:
		cp.seen, cp.hasPending = state, false
		if err != nil {
			cp.log.Error("directory unreadable; keeping the last snapshot", "err", err)
			return
		}
		cp.reload()
	}
}

// reload reads the directory and pushes it as the next version, unless it
// does not parse or has not changed.
func (cp *controlPlane) reload() {
	res, err := loadDir(cp.cfg.dir)
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if err != nil {
		cp.log.Error("not pushed; keeping the last snapshot", "version", cp.versionText(), "err", err)
		return
	}
	if cp.version > 0 && sameResources(cp.current, res) {
		cp.log.Info("files changed but the resources did not; not pushed", "version", cp.versionText())
		return
	}
	if err := checkSnapshot(res); err != nil {
		cp.log.Warn("snapshot is not consistent; an ADS client may wait for resources it never gets", "err", err)
	}
	cp.version++
	cp.current = res
	for node := range cp.nodes {
		if err := cp.srv.Set(node, cp.versionText(), res); err != nil {
			cp.version--
			cp.log.Error("not pushed", "err", err)
			return
		}
	}
	cp.log.Info("pushed", "version", cp.versionText(), "resources", summary(res), "nodes", len(cp.nodes))
}

func (cp *controlPlane) versionText() string {
	if cp.version == 0 {
		return "none"
	}
	return "v" + strconv.Itoa(cp.version)
}

// sameResources reports whether a and b hold equal resources in the same
// order.
func sameResources(a, b map[string][]types.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for url, la := range a {
		lb, ok := b[url]
		if !ok || len(la) != len(lb) {
			return false
		}
		for i := range la {
			if !proto.Equal(la[i], lb[i]) {
				return false
			}
		}
	}
	return true
}

// nackRun counts the NACKs in a row with one error on one stream and type.
type nackRun struct {
	msg string
	n   int
}

// logRequests logs every request the server receives until ctx ends.
// go-control-plane answers a NACK by sending the same snapshot again, so a
// client NACKs it again and again until the files change; such a run is
// logged once, then every 10th time, and summed up when it ends.
func (cp *controlPlane) logRequests(ctx context.Context) {
	runs := map[string]*nackRun{} // by stream and type
	logged := 0
	for {
		n := 0
		newer := func(xdstest.Request) bool { n++; return n > logged }
		if _, err := cp.srv.WaitFor(ctx, newer); err != nil {
			return // ctx ended
		}
		reqs := cp.srv.Requests()
		for _, r := range reqs[logged:] {
			cp.logRequest(r, runs)
		}
		logged = len(reqs)
	}
}

func (cp *controlPlane) logRequest(r xdstest.Request, runs map[string]*nackRun) {
	if r.Node != nil {
		cp.noteNode(r.Node.GetId())
	}
	attrs := []any{"stream", r.Stream, "type", shortType(r.TypeURL), "nonce", r.Nonce}
	if r.Delta {
		attrs = append(attrs, "delta", true)
	}
	key := strconv.FormatInt(r.Stream, 10) + " " + r.TypeURL
	run := runs[key]
	if run != nil && r.Error != run.msg {
		delete(runs, key)
		if run.n > 1 {
			cp.log.Info("NACKed in a row", "stream", r.Stream, "type", shortType(r.TypeURL), "times", run.n)
		}
		run = nil
	}
	switch {
	case r.Error != "":
		if run == nil {
			run = &nackRun{msg: r.Error}
			runs[key] = run
		}
		run.n++
		if run.n%10 != 1 {
			return
		}
		attrs = append(attrs, "version", r.Version, "error_detail", r.Error)
		if run.n > 1 {
			attrs = append(attrs, "times", run.n)
		}
		cp.log.Warn("NACK", attrs...)
	case r.Nonce == "":
		if r.Node != nil {
			attrs = append(attrs, "node", r.Node.GetId())
		}
		attrs = append(attrs, "names", r.Names)
		if len(r.Unsubscribe) > 0 {
			attrs = append(attrs, "unsubscribe", r.Unsubscribe)
		}
		cp.log.Info("request", attrs...)
	default:
		if !r.Delta {
			attrs = append(attrs, "version", r.Version)
		}
		cp.log.Info("ACK", attrs...)
	}
}

// noteNode serves a newly seen node when every node is served, or tells
// the user why it gets nothing.
func (cp *controlPlane) noteNode(id string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.nodes[id] {
		return
	}
	if cp.cfg.node != "" {
		if !cp.warned[id] {
			cp.warned[id] = true
			cp.log.Warn("a node other than -node connected; it gets nothing (use -node \"\" to serve every node)", "node", id, "want", cp.cfg.node)
		}
		return
	}
	cp.nodes[id] = true
	if cp.version == 0 {
		return
	}
	if err := cp.srv.Set(id, cp.versionText(), cp.current); err != nil {
		cp.log.Error("serving a new node", "node", id, "err", err)
		return
	}
	cp.log.Info("serving a new node", "node", id, "version", cp.versionText())
}

// shortType is the last part of a type URL, "Listener" for listeners.
func shortType(url string) string {
	return url[strings.LastIndexByte(url, '.')+1:]
}
