// Package filesource implements Envoy's ConfigSource.path_config_source (and
// the deprecated ConfigSource.path): the resources of one type come from a
// file rather than from a control plane, and are re-read when the file is
// replaced.
//
// The file holds one envoy.service.discovery.v3.DiscoveryResponse. Its
// version_info becomes the update's version and its resources, each an Any
// (possibly wrapped in envoy.service.discovery.v3.Resource), are decoded into
// the same client.Update a control plane's response becomes, so the same
// Handler consumes both. A file is always the complete set of its type's
// resources, routes and endpoints included: Update.FullState is true.
//
// Envoy reloads when the file is moved into place (inotify IN_MOVED_TO), or,
// with watched_directory, when anything is moved into that directory. Run
// notices the same events by polling; see Options.Interval. A file that
// cannot be read or decoded, or that the Handler rejects, is reported and the
// last good configuration stays in force until the file changes again.
package filesource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hopproxy/hop/xds/client"
)

// DefaultInterval is the polling interval used when Options.Interval is zero.
const DefaultInterval = 250 * time.Millisecond

// ErrRejected marks an error passed to Options.OnError because the Handler
// rejected a decoded update (Envoy's update_rejected); any other error there
// is a read or decode failure (update_failure).
var ErrRejected = errors.New("update rejected")

// Options configure Run.
type Options struct {
	// Path is the file: PathConfigSource.path, or the deprecated
	// ConfigSource.path.
	Path string
	// WatchedDirectory is PathConfigSource.watched_directory.path. When set,
	// a change to the directory (something moved into it, as when a
	// Kubernetes ConfigMap volume swaps its ..data link) also reloads Path.
	WatchedDirectory string
	// TypeURL is the resource type this subscription is for.
	TypeURL string
	// Handler receives each successfully decoded file. It has the same
	// contract as for the gRPC client: a non-nil error rejects the update.
	Handler client.Handler
	// Interval is how often the file (and the watched directory) is
	// checked; zero means DefaultInterval (250ms).
	//
	// Polling os.Stat is used rather than inotify on purpose. It needs no
	// extra module and no platform code beyond reading the inode; it sees a
	// replacement however it was made (rename over the file, a swapped
	// symlink anywhere in the path, an edit on a network or overlay
	// filesystem where inotify events are missing), and it never has to
	// re-arm a watch after the watched file is renamed away. One stat or two
	// every 250ms costs nothing measurable, and a quarter second is well
	// within what anyone expects from a file-driven reload.
	Interval time.Duration
	// Log receives progress and problems; nil means slog.Default().
	Log *slog.Logger
	// OnError, when set, is called with every read, decode or rejection
	// failure (rejections wrap ErrRejected), on Run's goroutine.
	OnError func(err error)
}

// Run loads the file once, then watches it until ctx ends, and returns nil
// then. It returns an error at once only when o is unusable.
//
// Each successful (re)load calls o.Handler.OnUpdate, one call at a time on
// Run's goroutine. A file that cannot be read (a missing file at start
// included) or decoded, or an update the Handler rejects, is logged and
// passed to OnError; the last good configuration stays, and the file is tried
// again on its next change, never in a loop.
//
// A change is a new identity (device and inode, so a rename over the file),
// size, modification or status-change time of the file, or of the watched
// directory. A file replaced by a rename is read at once. Any other change
// (an edit in place, a new file, a directory event) is read once it has stayed
// the same for one interval, so that a file still being written is not
// taken. A file that changes while it is read is read again. A reload whose
// bytes equal those of the last accepted update is skipped.
func Run(ctx context.Context, o Options) error {
	if o.Path == "" {
		return errors.New("filesource: no path")
	}
	if o.TypeURL == "" {
		return fmt.Errorf("filesource: %s: no type URL", o.Path)
	}
	if o.Handler == nil {
		return fmt.Errorf("filesource: %s: no handler", o.Path)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	w := &watcher{o: o, log: o.Log.With("path", o.Path, "type", o.TypeURL)}
	w.poll()
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.poll()
		}
	}
}

// watcher is the state of one Run. It is owned by Run's goroutine.
type watcher struct {
	o   Options
	log *slog.Logger

	started bool
	// seen is the state at the last load attempt.
	seen state
	// pending is a change waiting to stay put for one interval.
	pending    state
	hasPending bool
	// lastData is the content given to the Handler last; lastOK says
	// whether the Handler accepted it.
	lastData []byte
	lastOK   bool
}

// state is what polling compares: the file and the watched directory.
type state struct {
	file, dir fileID
}

// fileID identifies a version of a file by its metadata. It is comparable.
type fileID struct {
	exists    bool
	statErr   string // a stat error other than "does not exist"
	dev, ino  uint64
	size      int64
	mtimeNano int64
	ctimeNano int64
}

func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fileID{}
		}
		return fileID{statErr: err.Error()}
	}
	id := fileID{exists: true, size: fi.Size(), mtimeNano: fi.ModTime().UnixNano()}
	id.dev, id.ino, id.ctimeNano = sysID(fi)
	return id
}

func (w *watcher) stat() state {
	s := state{file: statID(w.o.Path)}
	if w.o.WatchedDirectory != "" {
		s.dir = statID(w.o.WatchedDirectory)
	}
	return s
}

// replaced reports whether the file went from one existing inode to another.
func replaced(old, cur fileID) bool {
	return old.exists && cur.exists && (old.dev != cur.dev || old.ino != cur.ino)
}

// poll checks for a change and loads the file when one has settled.
func (w *watcher) poll() {
	cur := w.stat()
	if w.started {
		if cur == w.seen {
			w.hasPending = false
			return
		}
		if !replaced(w.seen.file, cur.file) && (!w.hasPending || w.pending != cur) {
			w.pending, w.hasPending = cur, true
			return
		}
	}
	w.started, w.seen, w.hasPending = true, cur, false
	w.load(cur)
}

// load reads, decodes and delivers the file whose metadata was cur.
func (w *watcher) load(cur state) {
	data, err := os.ReadFile(w.o.Path)
	if err != nil {
		w.fail(fmt.Errorf("filesource: %w", err))
		return
	}
	if after := statID(w.o.Path); after != cur.file {
		// Written to while read: seen holds the metadata from before the
		// read, so the next poll sees the change and reads the file again.
		w.log.Debug("file changed while being read; will read again")
		return
	}
	if w.lastOK && bytes.Equal(data, w.lastData) {
		w.log.Debug("file content unchanged")
		return
	}
	u, warning, err := decodeFile(w.o.Path, data, w.o.TypeURL)
	if err != nil {
		w.fail(err)
		return
	}
	if warning != nil {
		w.log.Warn("config has unknown fields; they are ignored", "error", warning)
	}
	err = w.o.Handler.OnUpdate(u)
	w.lastData, w.lastOK = data, err == nil
	if err != nil {
		w.fail(fmt.Errorf("filesource: %s: %w: %w", w.o.Path, ErrRejected, err))
		return
	}
	w.log.Info("config loaded", "version", u.Version, "resources", len(u.Resources))
}

func (w *watcher) fail(err error) {
	w.log.Warn("config not loaded; keeping the last good one", "error", err)
	if w.o.OnError != nil {
		w.o.OnError(err)
	}
}
