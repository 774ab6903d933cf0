package filesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopproxy/hop/xds/client"
)

// lds returns a listener file of the given version with one listener per
// name.
func lds(version string, names ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version_info: %q\nresources:\n", version)
	for _, n := range names {
		fmt.Fprintf(&b, "- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: %s\n", n)
	}
	return b.String()
}

// replace writes data next to path and renames it over path, as Envoy
// expects a path_config_source file to be updated.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(tmp, data); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// recorder is a Handler and OnError for poll-driven tests.
type recorder struct {
	updates []client.Update
	errs    []error
	reject  error // returned by OnUpdate when set
}

func (r *recorder) OnUpdate(u client.Update) error {
	r.updates = append(r.updates, u)
	return r.reject
}

func (r *recorder) onError(err error) { r.errs = append(r.errs, err) }

func (r *recorder) versions() []string {
	var v []string
	for _, u := range r.updates {
		v = append(v, u.Version)
	}
	return v
}

// check compares the versions delivered and the number of errors so far.
func (r *recorder) check(t *testing.T, step string, versions []string, errs int) {
	t.Helper()
	if got := strings.Join(r.versions(), ","); got != strings.Join(versions, ",") {
		t.Fatalf("%s: delivered versions %q, want %q", step, got, versions)
	}
	if len(r.errs) != errs {
		t.Fatalf("%s: %d errors (%v), want %d", step, len(r.errs), r.errs, errs)
	}
}

func newWatcher(t *testing.T, path, dir string) (*watcher, *recorder) {
	r := &recorder{}
	o := Options{Path: path, WatchedDirectory: dir, TypeURL: client.ListenerType, Handler: r, OnError: r.onError, Log: testLog(t)}
	return &watcher{o: o, log: o.Log}, r
}

func TestPollReplace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lds.yaml")
	replace(t, p, lds("v1", "a", "b"))
	w, r := newWatcher(t, p, "")
	w.poll()
	r.check(t, "first poll", []string{"v1"}, 0)
	u := r.updates[0]
	if u.TypeURL != client.ListenerType || !u.FullState || len(u.Resources) != 2 || u.Resources[1].Name != "b" {
		t.Fatalf("update = %+v", u)
	}
	w.poll()
	r.check(t, "no change", []string{"v1"}, 0)
	replace(t, p, lds("v2", "a"))
	w.poll() // a rename is read at once
	r.check(t, "replaced", []string{"v1", "v2"}, 0)
	replace(t, p, lds("v2", "a"))
	w.poll()
	r.check(t, "same content", []string{"v1", "v2"}, 0)
}

func TestPollInPlaceWritesWaitOneInterval(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lds.yaml")
	replace(t, p, lds("v1", "a"))
	w, r := newWatcher(t, p, "")
	w.poll()
	// Sizes differ, so that the change shows even within one tick of the
	// kernel's file time clock.
	if err := os.WriteFile(p, []byte(lds("v22", "a")), 0o644); err != nil {
		t.Fatal(err)
	}
	w.poll()
	r.check(t, "just written", []string{"v1"}, 0)
	w.poll()
	r.check(t, "settled", []string{"v1", "v22"}, 0)
}

func TestPollInvalidKeepsLastGood(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lds.yaml")
	replace(t, p, lds("v1", "a"))
	w, r := newWatcher(t, p, "")
	w.poll()
	replace(t, p, "version_info: [")
	w.poll()
	r.check(t, "invalid", []string{"v1"}, 1)
	if err := r.errs[0]; errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error = %v", err)
	}
	w.poll()
	w.poll()
	r.check(t, "invalid, unchanged", []string{"v1"}, 1)
	replace(t, p, lds("v3", "a"))
	w.poll()
	r.check(t, "valid again", []string{"v1", "v3"}, 1)
}

func TestPollRejectedNotRetriedUntilChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lds.yaml")
	replace(t, p, lds("v1", "a"))
	w, r := newWatcher(t, p, "")
	r.reject = errors.New("listener a: bad")
	w.poll()
	r.check(t, "rejected", []string{"v1"}, 1)
	if err := r.errs[0]; !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), p+": update rejected: listener a: bad") {
		t.Fatalf("error = %v", err)
	}
	for range 5 {
		w.poll()
	}
	r.check(t, "no change", []string{"v1"}, 1)
	// The same content is delivered again on a change: the last attempt
	// failed, so the Handler's state may differ from the file's.
	r.reject = nil
	replace(t, p, lds("v1", "a"))
	w.poll()
	r.check(t, "replaced by the same content", []string{"v1", "v1"}, 1)
}

func TestPollMissingAtStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lds.yaml")
	w, r := newWatcher(t, p, "")
	w.poll()
	r.check(t, "missing", nil, 1)
	if !errors.Is(r.errs[0], os.ErrNotExist) || !strings.Contains(r.errs[0].Error(), p) {
		t.Fatalf("error = %v", r.errs[0])
	}
	w.poll()
	r.check(t, "still missing", nil, 1)
	replace(t, p, lds("v1", "a"))
	w.poll()
	w.poll()
	r.check(t, "created", []string{"v1"}, 1)
}

// Moving anything into the watched directory re-reads the file, as in Envoy.
func TestPollWatchedDirectory(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lds.yaml")
	replace(t, p, lds("v1", "a"))
	w, r := newWatcher(t, p, dir)
	plain, pr := newWatcher(t, p, "") // the same file without watched_directory
	r.reject, pr.reject = errors.New("not yet"), errors.New("not yet")
	w.poll()
	plain.poll()
	r.reject, pr.reject = nil, nil

	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, filepath.Join(dir, "other")); err != nil {
		t.Fatal(err)
	}
	if statID(dir) == w.seen.dir {
		// Still within the same tick of the kernel's file time clock.
		future := time.Now().Add(time.Hour)
		if err := os.Chtimes(dir, future, future); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		w.poll()
		plain.poll()
	}
	r.check(t, "directory event", []string{"v1", "v1"}, 1)
	pr.check(t, "without watched_directory", []string{"v1"}, 1)
}

func TestRunOptions(t *testing.T) {
	h := client.HandlerFunc(func(client.Update) error { return nil })
	for _, o := range []Options{
		{TypeURL: client.ListenerType, Handler: h},
		{Path: "x.yaml", Handler: h},
		{Path: "x.yaml", TypeURL: client.ListenerType},
	} {
		if err := Run(context.Background(), o); err == nil {
			t.Errorf("Run(%+v) = nil", o)
		}
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := filepath.Join(t.TempDir(), "lds.yaml")
	updates := make(chan client.Update, 16)
	errs := make(chan error, 16)
	o := Options{
		Path:    p,
		TypeURL: client.ListenerType,
		Handler: client.HandlerFunc(func(u client.Update) error {
			updates <- u
			return nil
		}),
		Interval: 2 * time.Millisecond,
		Log:      testLog(t),
		OnError:  func(err error) { errs <- err },
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	next := func(step string) (client.Update, error) {
		t.Helper()
		select {
		case u := <-updates:
			return u, nil
		case err := <-errs:
			return client.Update{}, err
		case <-ctx.Done():
			t.Fatalf("%s: timed out", step)
			return client.Update{}, nil
		}
	}

	// A missing file is reported, then read once it appears.
	if _, err := next("missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	replace(t, p, lds("v1", "a"))
	if u, err := next("v1"); err != nil || u.Version != "v1" {
		t.Fatalf("v1: %+v, %v", u, err)
	}
	replace(t, p, lds("v2", "a", "b"))
	if u, err := next("v2"); err != nil || u.Version != "v2" || len(u.Resources) != 2 {
		t.Fatalf("v2: %+v, %v", u, err)
	}
	replace(t, p, "resources: 5")
	if _, err := next("invalid"); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("invalid: %v", err)
	}
	replace(t, p, lds("v3", "a")+"- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: c\n")
	u, err := next("v3")
	if err != nil || u.Version != "v3" || len(u.Resources) != 2 {
		t.Fatalf("v3: %+v, %v", u, err)
	}
	if r := u.Resources[1]; r.Name != "c" || r.Err == nil || r.Message != nil {
		t.Fatalf("wrong type resource: %+v", r)
	}
}
