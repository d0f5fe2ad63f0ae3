package policymanager

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/polar/observerd/policy"
)

// The watcher's reports to the policy-manager.
type (
	// changed: a policy file was created, written, renamed, removed or
	// had its mode changed.
	changed struct{ name string }
	// rescan: something may have changed many files at once (the ..data
	// link of a Kubernetes ConfigMap mount was swapped, or the kernel's
	// event queue overflowed): every file is read again.
	rescan struct{}
	// watchFailed: the watch ended; the policy-manager falls back to
	// polling the directory.
	watchFailed struct{ err error }
)

// newWatcher is fsnotify.NewWatcher; tests replace it to simulate the
// kernel's inotify limits.
var newWatcher = fsnotify.NewWatcher

// watcher forwards the events of the policy directories (not of their
// files, so that rename-saves and files created later are seen) as
// messages, naming files by path.
type watcher struct {
	w *fsnotify.Watcher
}

// watch starts watching dirs; send receives changed, rescan and
// watchFailed. After watchFailed nothing more is sent.
func watch(dirs []string, send func(any)) (*watcher, error) {
	w, err := newWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dirs[0], explainWatchError(err))
	}
	for _, dir := range dirs {
		if err := w.Add(dir); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("watch %s: %w", dir, explainWatchError(err))
		}
	}
	go func() {
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				path := filepath.Clean(ev.Name)
				name := filepath.Base(path)
				switch {
				case slices.Contains(dirs, path):
					send(&watchFailed{err: fmt.Errorf("watch %s: the directory was removed or renamed", path)})
					return
				case strings.HasPrefix(name, ".."):
					// Kubernetes swaps ..data to point at a new ..<timestamp>
					// directory; every name.yaml -> ..data/name.yaml may
					// have changed at once.
					send(&rescan{})
				case policy.IsPolicyFile(name):
					send(&changed{name: path})
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				if errors.Is(err, fsnotify.ErrEventOverflow) {
					send(&rescan{})
					continue
				}
				send(&watchFailed{err: fmt.Errorf("watch %s: %w", strings.Join(dirs, ", "), err)})
				return
			}
		}
	}()
	return &watcher{w: w}, nil
}

// close ends the watch; the goroutine ends with it.
func (w *watcher) close() {
	if w != nil {
		_ = w.w.Close()
	}
}

// explainWatchError names the kernel limit behind an inotify error, so that
// the operator knows which sysctl to raise.
func explainWatchError(err error) error {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return fmt.Errorf("%w (too many inotify instances: raise fs.inotify.max_user_instances)", err)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w (too many inotify watches: raise fs.inotify.max_user_watches)", err)
	}
	return err
}

// fileKey identifies a version of a file for the rescan: a file whose key
// did not change is not read again.
type fileKey struct {
	size  int64
	mtime time.Time
	ino   uint64
	dev   uint64
}

// keyOf is the key of a file, following symlinks (a swapped ConfigMap link
// points at another inode).
func keyOf(fi os.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino, k.dev = st.Ino, uint64(st.Dev)
	}
	return k
}

// scanned is the result of listing the directory: the key of every policy
// file in it, and the fingerprint of plugin_dir.
type scanned struct {
	keys    map[string]fileKey
	force   bool // read every file again, whatever its key
	plugins pluginPrint
	err     error
	errDir  string // the directory err is about
}

// pluginPrint is a fingerprint of plugin_dir's listing: a rejected policy
// file is read again at a rescan only when it changed.
type pluginPrint [sha256.Size]byte

// maxPluginEntries bounds the entries of plugin_dir a fingerprint covers.
// Beyond them, a module added, removed or renamed still changes the
// directory's own mtime; a module rewritten in place is seen when its
// policy file changes.
const maxPluginEntries = 4096

// fingerprint hashes the names, sizes and mtimes (following symlinks) of
// dir's entries, and dir's own mtime. An empty dir (no plugin_dir) has the
// zero fingerprint; one that cannot be read, that of its error.
func fingerprint(dir string) pluginPrint {
	if dir == "" {
		return pluginPrint{}
	}
	h := sha256.New()
	d, err := os.Open(dir)
	if err != nil {
		fmt.Fprintf(h, "error: %v", err)
		return pluginPrint(h.Sum(nil))
	}
	defer d.Close()
	if fi, err := d.Stat(); err == nil {
		fmt.Fprintf(h, "%d\n", fi.ModTime().UnixNano())
	}
	entries, err := d.ReadDir(maxPluginEntries)
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(h, "error: %v", err)
	}
	slices.SortFunc(entries, func(x, y os.DirEntry) int { return strings.Compare(x.Name(), y.Name()) })
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			fi, err = e.Info()
		}
		if err == nil {
			fmt.Fprintf(h, "%q %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return pluginPrint(h.Sum(nil))
}

// scan lists dirs off the mailbox; the first that cannot be listed fails
// the scan.
func scan(dirs []string, force bool) *scanned {
	out := &scanned{keys: map[string]fileKey{}, force: force}
	for _, dir := range dirs {
		if err := scanDir(dir, out.keys); err != nil {
			return &scanned{force: force, err: err, errDir: dir}
		}
	}
	return out
}

// scanDir adds the key of every policy file of dir to keys, by path.
func scanDir(dir string, keys map[string]fileKey) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("scan %s: %w", dir, err)
	}
	for _, e := range entries {
		if !policy.IsPolicyFile(e.Name()) {
			continue
		}
		// A file that vanished since ReadDir is left out, as removed; a
		// dangling symlink is kept (by the link's own key), so that its
		// parser reports it.
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			fi, err = os.Lstat(path)
		}
		if err == nil {
			keys[path] = keyOf(fi)
		}
	}
	return nil
}
